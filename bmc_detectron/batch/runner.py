"""A batch run: the cases not yet finished counted on an engine, a progress bar over cases.

    cases = find_cases([Path("day/")], Path("reports/"))
    factory = SpecFactory(CounterSpec(detector_config=..., detector_weights=...))
    results = run_batch(cases, factory, engine="processes", workers=2)
    write_batch_report(Path("reports/"), results)

Engines: ``processes`` (:mod:`.processes`, no extra) and ``ray`` (:mod:`.ray_engine`, the
``[batch]`` extra; ``address`` for a cluster). A case already finished is not sent to a worker
(its result is read from its summary.json) unless the options overwrite.
"""

from __future__ import annotations

import os
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, ContextManager, Dict, List, Optional, Sequence

from tqdm import tqdm

from bmc_detectron.batch.jobs import (
    SETUP_FAILED,
    BatchCase,
    BatchError,
    CaseOptions,
    CaseResult,
    CounterFactory,
    finished_result,
    is_finished,
)
from bmc_detectron.utils.io import write_json_atomic

ENGINES = ("processes", "ray")
BATCH_FILE = "batch.json"


def default_threads(workers: int) -> int:
    """Torch threads per worker: the machine's cores shared out (at least one)."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def run_batch(
    cases: Sequence[BatchCase],
    factory: CounterFactory,
    options: CaseOptions = CaseOptions(),
    *,
    engine: str = "processes",
    workers: int = 2,
    threads: Optional[int] = None,
    address: Optional[str] = None,
    max_tries: int = 3,
    progress: bool = True,
) -> List[CaseResult]:
    """Count every case (see the module doc); the results in the cases' order.

    Raises :class:`BatchError` for an unknown engine, Ray missing, a Ray address with no cluster
    (before the progress bar), or a worker that cannot build its counter (the batch stops:
    every case would fail the same way).
    """
    if engine not in ENGINES:
        raise BatchError(f"unknown engine {engine!r}: one of {', '.join(ENGINES)}")
    if workers < 1:
        raise BatchError(f"workers must be at least 1, not {workers}")
    threads = threads or default_threads(workers)
    results: Dict[str, CaseResult] = {}
    todo = [c for c in cases if options.overwrite or not is_finished(c)]
    for case in cases:
        if case not in todo:
            results[case.name] = finished_result(case)
    session: ContextManager[Any] = nullcontext()
    if todo and engine == "ray":  # connected before the progress bar: a bad address is one line
        from bmc_detectron.batch.ray_engine import ray_session

        session = ray_session(address, workers)
    with session:
        bar = tqdm(total=len(cases), initial=len(results), unit="case", disable=not progress)

        def on_result(result: CaseResult) -> None:
            if result.error and result.error.startswith(SETUP_FAILED):
                raise BatchError(result.error)
            results[result.name] = result
            bar.update(1)
            bar.set_postfix_str(f"{result.name} {result.status}")

        try:
            if todo:
                _run_engine(
                    engine, todo, factory, options, on_result, workers, threads, address, max_tries
                )
        finally:
            bar.close()
    return [results[c.name] for c in cases if c.name in results]


def _run_engine(
    engine: str,
    todo: Sequence[BatchCase],
    factory: CounterFactory,
    options: CaseOptions,
    on_result: Callable[[CaseResult], None],
    workers: int,
    threads: int,
    address: Optional[str],
    max_tries: int,
) -> None:
    """The cases counted on the engine (imported when used: Ray only when asked for)."""
    if engine == "ray":
        from bmc_detectron.batch.ray_engine import run_ray

        run_ray(
            todo,
            factory,
            options,
            on_result,
            workers=workers,
            threads=threads,
            address=address,
            max_tries=max_tries,
        )
    else:
        from bmc_detectron.batch.processes import run_processes

        run_processes(
            todo, factory, options, on_result, workers=workers, threads=threads, max_tries=max_tries
        )


def write_batch_report(output: Path, results: Sequence[CaseResult], **facts: object) -> Path:
    """``<output>/batch.json``: every case's result (status, cells, seconds, worker) and the
    batch's ``facts`` (engine, workers, seconds)."""
    data = {
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        **facts,
        "cases": [r.to_json() for r in results],
    }
    path = Path(output) / BATCH_FILE
    write_json_atomic(data, path, indent=1)
    return path
