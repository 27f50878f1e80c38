"""The Ray engine: a pool of Ray actors, local (started here) or on a cluster (``address``).

Each actor builds its counter once (in its constructor) and counts one case per call, one case
in flight per actor; an actor is given cases once it has started (one still waiting for a free
CPU on the cluster holds none). When an actor dies (its process killed, its node lost), its case
is queued again, behind the others, for the next free actor, and a new actor is started in its
place, wherever the cluster has a free CPU; the case resumes from its report folder, field by
field. A case whose actor died ``max_tries`` times is ``failed``. Every result names the Ray node
that counted it (``CaseResult.node``, in ``batch.json``).

On a cluster, every node must see the case folders, the models and the output folder at the
same paths and run the same version of the package (checked as each actor starts: a one-line
error otherwise). An actor works in the driver's working directory when its node has that
folder, so relative paths mean there what they mean here. Only this module imports ``ray``, and
only when a batch runs on it.
"""

from __future__ import annotations

import logging
import os
import socket
from collections import Counter, deque
from contextlib import contextmanager
from typing import Any, Callable, Deque, Dict, Iterator, List, Optional, Sequence, Tuple

import torch

from bmc_detectron.batch.jobs import (
    BatchCase,
    BatchError,
    CaseOptions,
    CaseResult,
    CaseWorker,
    CounterFactory,
)

logger = logging.getLogger(__name__)

RAY_MISSING = "Ray is not installed: pip install .[batch] (or pip install ray)"
ADDRESS_FORMS = "HOST:PORT (the head's address, as `ray start --head` prints it), ray://HOST:PORT"
TOKEN_HINT = (
    "if its head runs with token authentication, as `ray start --head` does when "
    "~/.ray/auth_token exists, set RAY_AUTH_MODE=token here and on every node"
)
#: seconds to wait for a cluster's head to answer before calling its address unreachable
CONNECT_TIMEOUT_S = 5.0


def import_ray() -> Any:
    """The ``ray`` module; :class:`BatchError` naming the extra when it is not installed."""
    try:
        import ray
    except ImportError:
        raise BatchError(RAY_MISSING) from None
    return ray


def package_version() -> str:
    """The version of the package this process runs."""
    from bmc_detectron import __version__

    return __version__


class CaseActor:
    """The actor: one :class:`CaseWorker` in its own process, in ``cwd`` if its node has it."""

    def __init__(
        self, factory: CounterFactory, options: CaseOptions, threads: int, cwd: str
    ) -> None:
        if os.path.isdir(cwd):
            os.chdir(cwd)
        torch.set_num_threads(threads)
        self.node = import_ray().get_runtime_context().get_node_id()
        self.worker = CaseWorker(factory, options, worker=os.getpid(), node=self.node)

    def where(self) -> Dict[str, Any]:
        """Its node (Ray node id and host), its pid and the package version it runs."""
        host = socket.gethostname()
        return dict(node=self.node, host=host, pid=os.getpid(), version=package_version())

    def count(self, case: BatchCase) -> CaseResult:
        return self.worker.count(case)


def check_address(address: str) -> None:
    """:class:`BatchError` (one line, naming ``address``) for an address of no Ray form, or one
    where nothing answers within :data:`CONNECT_TIMEOUT_S` (Ray itself would wait for minutes).
    ``auto`` (the cluster started on this machine) is left to Ray."""
    if address == "auto":
        return
    hostport = address[len("ray://") :] if address.startswith("ray://") else address
    host, colon, port = hostport.rpartition(":")
    if not colon or not host or not port.isdigit():
        raise BatchError(f"bad Ray address {address!r}: {ADDRESS_FORMS} or auto")
    try:
        socket.create_connection((host.strip("[]"), int(port)), CONNECT_TIMEOUT_S).close()
    except OSError as e:
        reason = e.strerror or str(e) or type(e).__name__
        raise BatchError(f"no Ray cluster answers at {address}: {reason}") from None


def start_ray(address: Optional[str], workers: int) -> bool:
    """Connect to Ray: to ``address``'s cluster, else a new local Ray of ``workers`` CPUs (or
    the one already running in this process, if any; never another process's cluster).
    Returns whether it was started here. Raises :class:`BatchError` naming the address when
    there is no cluster to connect to."""
    ray = import_ray()
    if ray.is_initialized():
        return False
    kwargs: Dict[str, Any] = dict(include_dashboard=False, configure_logging=False)
    if not address:  # "local": a new Ray, even where a cluster runs on this machine
        ray.init(address="local", num_cpus=workers, **kwargs)
        return True
    check_address(address)
    try:
        ray.init(address=address, **kwargs)
    except (ConnectionError, ValueError, RuntimeError) as e:
        reason = " ".join(str(e).split()) or type(e).__name__
        if os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
            reason += f" ({TOKEN_HINT})"
        raise BatchError(f"cannot connect to the Ray cluster at {address}: {reason}") from None
    return True


@contextmanager
def ray_session(address: Optional[str], workers: int) -> Iterator[Any]:
    """Ray connected (:func:`start_ray`) for the ``with`` block, then disconnected if it was
    connected here; yields the ``ray`` module."""
    started = start_ray(address, workers)
    try:
        yield import_ray()
    finally:
        if started:
            import_ray().shutdown()


def run_ray(
    cases: Sequence[BatchCase],
    factory: CounterFactory,
    options: CaseOptions,
    on_result: Callable[[CaseResult], None],
    *,
    workers: int = 2,
    threads: int = 1,
    address: Optional[str] = None,
    max_tries: int = 3,
) -> None:
    """Count ``cases`` on ``workers`` Ray actors of ``threads`` torch threads each; every
    case's result goes to ``on_result`` as it comes (Ray connected as :func:`start_ray`
    does, unless it is already)."""
    with ray_session(address, workers) as ray:
        actor_class = ray.remote(num_cpus=1, max_restarts=0)(CaseActor)
        cwd = os.getcwd()
        pool = ActorPool(ray, lambda: actor_class.remote(factory, options, threads, cwd))
        try:
            pool.run(cases, on_result, workers, max_tries)
        finally:
            pool.close()


class ActorPool:
    """The actors of a batch: starting (``starting``: their first call's ref), idle, counting a
    case (``running``: the call's ref -> the actor and its case)."""

    def __init__(self, ray: Any, new_actor: Callable[[], Any]) -> None:
        self.ray, self.new_actor = ray, new_actor
        self.actors: List[Any] = []
        self.starting: Dict[Any, Any] = {}
        self.idle: List[Any] = []
        self.running: Dict[Any, Tuple[Any, BatchCase]] = {}
        self.failed_starts = 0

    def start(self) -> None:
        actor = self.new_actor()
        self.actors.append(actor)
        self.starting[actor.where.remote()] = actor

    def run(
        self,
        cases: Sequence[BatchCase],
        on_result: Callable[[CaseResult], None],
        workers: int,
        max_tries: int,
    ) -> None:
        """Count ``cases`` on ``workers`` actors (see the module doc)."""
        queue: Deque[BatchCase] = deque(cases)
        deaths: Counter = Counter()
        for _ in range(workers):
            self.start()
        while queue or self.running:
            while queue and self.idle:
                actor, case = self.idle.pop(), queue.popleft()
                self.running[actor.count.remote(case)] = (actor, case)
            [ref], _ = self.ray.wait([*self.running, *self.starting], num_returns=1)
            if ref in self.starting:
                self._started(ref, max_tries)
                continue
            actor, case = self.running.pop(ref)
            try:
                result = self.ray.get(ref)
            except self.ray.exceptions.RayActorError as e:
                deaths[case.name] += 1
                self.start()  # in the dead one's place
                if deaths[case.name] < max_tries:
                    logger.warning("%s: its Ray worker died; counting it again", case.name)
                    queue.append(case)
                    continue
                error = f"its Ray worker died {deaths[case.name]} times: {_one_line(e)}"
                result = CaseResult(case.name, str(case.output), "failed", error=error)
            else:
                self.idle.append(actor)
            on_result(result)

    def _started(self, ref: Any, max_tries: int) -> None:
        """An actor's first call answered: it is idle, or its start failed (another is started
        in its place, up to ``max_tries`` failures), or it runs another version of the package
        (:class:`BatchError`)."""
        actor = self.starting.pop(ref)
        try:
            where = self.ray.get(ref)
        except self.ray.exceptions.RayActorError as e:
            self.failed_starts += 1
            if self.failed_starts >= max_tries:
                raise BatchError(f"the Ray workers cannot start: {_one_line(e)}") from None
            self.start()
            return
        if where["version"] != package_version():
            raise BatchError(
                f"the Ray node {where['host']} ({where['node'][:12]}) runs bmc-detectron "
                f"{where['version']}, this machine {package_version()}: install the same version "
                "on every node"
            )
        self.idle.append(actor)

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor)


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())[:300] or type(error).__name__
