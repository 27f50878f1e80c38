"""Timings: the summary of a list of call times (one p90), the one interleaving loop of
latency comparisons, and a training run's time read back from its detectron2 log."""

from __future__ import annotations

import math
import re
import statistics
import time
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Sequence, TypeVar

Item = TypeVar("Item")


def summarize_ms(seconds: Sequence[float]) -> Dict[str, float]:
    """Median, 90th percentile, mean and min in milliseconds, and the count ``n`` (NaNs and
    ``n`` 0 for no calls).

    The 90th percentile is the nearest-rank one: the smallest call time that at least 90 % of
    the calls do not exceed (the ``ceil(0.9 n)``-th smallest). It is always a time that a call
    really took, and it does not depend on an interpolation rule (numpy's default, linear
    interpolation, gives 9.1 ms instead of 9 ms for the calls 1, 2, ..., 10 ms). Pages made
    before the merge with the interpolated p90 (the ONNX Runtime benchmark) keep their numbers.
    """
    ms = sorted(s * 1000.0 for s in seconds)
    if not ms:
        nan = float("nan")
        return {"median_ms": nan, "p90_ms": nan, "mean_ms": nan, "min_ms": nan, "n": 0}
    return {
        "median_ms": statistics.median(ms),
        "p90_ms": ms[max(0, math.ceil(0.9 * len(ms)) - 1)],
        "mean_ms": statistics.fmean(ms),
        "min_ms": ms[0],
        "n": len(ms),
    }


def round_order(items: Sequence, round_index: int) -> List:
    """``items`` rotated left by ``round_index`` (round r starts with item r mod n; with two
    items, the order alternates)."""
    shift = round_index % len(items) if items else 0
    return list(items[shift:]) + list(items[:shift])


def wall_seconds(fn: Callable[[], object]) -> float:
    """Wall-clock seconds taken by ``fn()``."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved_latency(
    subjects: Mapping[str, Callable[[Item], object]],
    items: Sequence[Item],
    rounds: int,
    warmup: int = 0,
    timer: Callable[[Callable[[], object]], float] = wall_seconds,
) -> Dict[str, List[float]]:
    """Seconds of every call of every subject: ``rounds`` x ``len(items)`` calls each.

    In every round each item goes through every subject in turn, the subjects' order rotating
    from round to round (:func:`round_order`), so that the load of a shared machine falls on
    all subjects alike, and the i-th calls of two subjects (same round, same item) are close in
    time (their ratio is a paired comparison). ``warmup`` rounds run first and are not recorded
    (they count in the rotation). ``timer(fn)`` returns the seconds of ``fn()``: the wall clock,
    or one that waits for a device's queued work (CUDA) before and after.
    """
    names = list(subjects)
    times: Dict[str, List[float]] = {name: [] for name in names}
    for index in range(warmup + rounds):
        for item in items:
            for name in round_order(names, index):
                seconds = timer(lambda call=subjects[name], item=item: call(item))
                if index >= warmup:
                    times[name].append(seconds)
    return times


_SPEED = re.compile(r"Overall training speed: (\d+) iterations in ([\d:]+) \(([\d.]+) s / it\)")


def training_sessions(log: str | Path) -> List[Dict[str, float]]:
    """Each training session's ``iterations``, ``seconds`` and ``s_per_iter`` from detectron2's
    end-of-training lines in ``log`` (a run resumed from a checkpoint has one line per session
    that ended; a killed session writes none). Empty when the file or the lines are missing."""
    log = Path(log)
    found = _SPEED.findall(log.read_text(errors="replace")) if log.is_file() else []
    out = []
    for iters, clock, per_iter in found:
        h, m, s = (int(x) for x in clock.split(":"))
        seconds = h * 3600 + m * 60 + s
        out.append({"iterations": int(iters), "seconds": seconds, "s_per_iter": float(per_iter)})
    return out
