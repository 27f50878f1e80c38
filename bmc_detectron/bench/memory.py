"""One memory meter: the peak memory of a block of code, of the process or of live tensors."""

from __future__ import annotations

import threading
from typing import Dict

import psutil
import torch


class PeakMemory:
    """Peak memory while the ``with`` block runs; ``as_dict()`` says how it was measured.

    ``mode="process"``: on CPU a thread samples the process RSS every ``interval`` seconds
    (``peak_mb`` is the largest sample, ``delta_mb`` its excess over the RSS at entry, a lower
    bound of what the block allocated since allocators keep caches); on CUDA
    ``torch.cuda.max_memory_allocated`` after resetting the peak at entry.
    ``mode="tensors"``: the largest amount of tensor memory alive at once above the level at
    entry (``peak_mb == delta_mb``). On CPU it is replayed from ``torch.profiler`` memory events
    (allocations and frees in time order, the running sum's maximum): tracemalloc does not see
    torch's allocator and RSS hides freed-and-reused blocks. On CUDA it is the max allocated
    minus the allocated memory at entry.
    """

    MODES = ("process", "tensors")

    def __init__(self, device: torch.device | str, mode: str = "process", interval: float = 0.01):
        if mode not in self.MODES:
            raise ValueError(f"PeakMemory mode {mode!r}: use one of {self.MODES}")
        self.device, self.mode, self.interval = torch.device(device), mode, interval
        self.start_mb = self.peak_mb = self.delta_mb = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._profiler = None
        self._proc = psutil.Process()

    @property
    def method(self) -> str:
        """How the peak is measured."""
        if self.device.type == "cuda":
            return "cuda_max_allocated" + ("_above_entry" if self.mode == "tensors" else "")
        return "rss" if self.mode == "process" else "torch_profiler_live_tensors"

    def _rss_mb(self) -> float:
        return self._proc.memory_info().rss / 2**20

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, self._rss_mb())
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start_mb = torch.cuda.memory_allocated(self.device) / 2**20
        elif self.mode == "tensors":
            from torch.profiler import ProfilerActivity, profile

            self._profiler = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
            self._profiler.__enter__()
        else:
            self.start_mb = self.peak_mb = self._rss_mb()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_mb = torch.cuda.max_memory_allocated(self.device) / 2**20
        elif self._profiler is not None:
            self._profiler.__exit__(*exc)
            self.peak_mb = self.start_mb + _profiled_peak_bytes(self._profiler) / 2**20
        else:
            self._stop.set()
            if self._thread is not None:
                self._thread.join()
            self.peak_mb = max(self.peak_mb, self._rss_mb())
        self.delta_mb = max(0.0, self.peak_mb - self.start_mb)
        if self.mode == "tensors":
            self.peak_mb = self.delta_mb

    def as_dict(self) -> Dict[str, object]:
        """``{"method", "peak_mb", "delta_mb"}``."""
        return {"method": self.method, "peak_mb": self.peak_mb, "delta_mb": self.delta_mb}


def _profiled_peak_bytes(prof) -> int:
    """Maximum of the running sum of the CPU memory events of a finished profiler."""
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events = [e for e in events if "CPU" in str(e.device_type())]
    live = peak = 0
    for e in sorted(events, key=lambda e: e.start_ns()):
        live += e.nbytes()
        peak = max(peak, live)
    return peak
