"""The Ray engine: a pool of Ray actors, local (started here) or on a cluster (``address``).

Each actor builds its counter once (in its constructor) and counts one case per call, one case
in flight per actor. Ray's own fault tolerance reruns a case whose actor process died: the actor
is restarted (``max_restarts``), its counter built again, and the call retried
(``max_task_retries``); the case resumes from its report folder, field by field. Only this module
imports ``ray``, and only when a batch runs on it.
"""

from __future__ import annotations

import os
from collections import deque
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence, Tuple

import torch

from bmc_detectron.batch.jobs import (
    BatchCase,
    BatchError,
    CaseOptions,
    CaseResult,
    CaseWorker,
    CounterFactory,
)

RAY_MISSING = "Ray is not installed: pip install .[batch] (or pip install ray)"


def import_ray() -> Any:
    """The ``ray`` module; :class:`BatchError` naming the extra when it is not installed."""
    try:
        import ray
    except ImportError:
        raise BatchError(RAY_MISSING) from None
    return ray


class CaseActor:
    """The actor: one :class:`CaseWorker` in its own process."""

    def __init__(self, factory: CounterFactory, options: CaseOptions, threads: int) -> None:
        torch.set_num_threads(threads)
        self.worker = CaseWorker(factory, options, worker=os.getpid())

    def count(self, case: BatchCase) -> CaseResult:
        return self.worker.count(case)

    def pid(self) -> int:
        return os.getpid()


def start_ray(address: Optional[str], workers: int) -> bool:
    """Connect to Ray: to ``address``'s cluster, else a local Ray of ``workers`` CPUs (the one
    already running in this process, if any). Returns whether it was started here."""
    ray = import_ray()
    if ray.is_initialized():
        return False
    kwargs: Dict[str, Any] = dict(include_dashboard=False, configure_logging=False)
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(num_cpus=workers, **kwargs)
    return True


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
    case's result goes to ``on_result`` as it comes."""
    ray = import_ray()
    started = start_ray(address, workers)
    remote = ray.remote(num_cpus=1, max_restarts=max_tries, max_task_retries=max_tries)
    actor_class = remote(CaseActor)

    def new_actor() -> Any:
        return actor_class.remote(factory, options, threads)

    actors = [new_actor() for _ in range(workers)]
    idle, queue = list(actors), deque(cases)
    running: Dict[Any, Tuple[Any, BatchCase]] = {}
    try:
        while queue or running:
            _submit(queue, idle, running)
            [ready], _ = ray.wait(list(running), num_returns=1)
            actor, case = running.pop(ready)
            try:
                result = ray.get(ready)
            except ray.exceptions.RayActorError as e:  # died more than max_tries times
                error = f"its Ray worker died too often: {' '.join(str(e).split())[:200]}"
                result = CaseResult(case.name, str(case.output), "failed", error=error)
                actor = new_actor()
                actors.append(actor)
            idle.append(actor)
            on_result(result)
    finally:
        for actor in actors:
            ray.kill(actor)
        if started:
            ray.shutdown()


def _submit(
    queue: Deque[BatchCase], idle: List[Any], running: Dict[Any, Tuple[Any, BatchCase]]
) -> None:
    while queue and idle:
        actor, case = idle.pop(), queue.popleft()
        running[actor.count.remote(case)] = (actor, case)
