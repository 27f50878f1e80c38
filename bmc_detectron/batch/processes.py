"""The no-extra engine: a pool of worker processes (``concurrent.futures``, spawned).

Each process builds its counter once (the pool's initializer) and counts one case per task. At
most one case per worker is in flight, so when a worker process dies (killed, out of memory) the
pool breaks with only those cases unfinished: they are queued again (behind the others) in a new
pool and resume from their report folders, field by field; a case whose worker died
``max_tries`` times is reported ``failed``.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections import Counter, deque
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Callable, Deque, Dict, List, Optional, Sequence, Set

import torch

from bmc_detectron.batch.jobs import BatchCase, CaseOptions, CaseResult, CaseWorker, CounterFactory

logger = logging.getLogger(__name__)

_WORKER: Optional[CaseWorker] = None


def _start_worker(factory: CounterFactory, options: CaseOptions, threads: int) -> None:
    global _WORKER
    torch.set_num_threads(threads)
    _WORKER = CaseWorker(factory, options, worker=os.getpid())


def _count_case(case: BatchCase) -> CaseResult:
    assert _WORKER is not None, "the worker process was not initialised"
    return _WORKER.count(case)


def run_processes(
    cases: Sequence[BatchCase],
    factory: CounterFactory,
    options: CaseOptions,
    on_result: Callable[[CaseResult], None],
    *,
    workers: int = 2,
    threads: int = 1,
    max_tries: int = 3,
) -> None:
    """Count ``cases`` on ``workers`` processes of ``threads`` torch threads each; every case's
    result goes to ``on_result`` as it comes."""
    queue: Deque[BatchCase] = deque(cases)
    deaths: Counter = Counter()
    context = multiprocessing.get_context("spawn")
    while queue:
        lost = _one_pool(queue, factory, options, on_result, workers, threads, context)
        for case in lost:
            deaths[case.name] += 1
            if deaths[case.name] >= max_tries:
                error = f"its worker process died {deaths[case.name]} times"
                on_result(CaseResult(case.name, str(case.output), "failed", error=error))
            else:
                logger.warning("%s: its worker process died; counting it again", case.name)
                queue.append(case)


def _settle(
    done: Set[Future], running: Dict[Future, BatchCase], on_result: Callable[[CaseResult], None]
) -> List[BatchCase]:
    """Report the finished futures' results (and forget them); returns the cases whose worker
    died."""
    lost = []
    for future in done:
        case = running.pop(future)
        try:
            result = future.result()
        except BrokenProcessPool:
            lost.append(case)
        else:
            on_result(result)
    return lost


def _one_pool(
    queue: Deque[BatchCase],
    factory: CounterFactory,
    options: CaseOptions,
    on_result: Callable[[CaseResult], None],
    workers: int,
    threads: int,
    context: multiprocessing.context.BaseContext,
) -> List[BatchCase]:
    """Run the queue on one pool until it is empty or the pool breaks; returns the cases that
    were in flight when it broke."""
    running: Dict[Future, BatchCase] = {}
    with ProcessPoolExecutor(
        workers, mp_context=context, initializer=_start_worker, initargs=(factory, options, threads)
    ) as pool:
        while queue or running:
            while queue and len(running) < workers:
                case = queue.popleft()
                running[pool.submit(_count_case, case)] = case
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            lost = _settle(done, running, on_result)
            if lost:  # the pool is broken: collect what it still held, then start a new one
                return lost + _settle(wait(running).done, running, on_result)
    return []
