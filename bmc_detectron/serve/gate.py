"""A bounded queue in front of the model: :class:`InferenceGate`.

Inference runs in worker threads (never on the event loop, which keeps serving pages, health
checks and refusals while the model works), at most ``workers`` at once. Requests are *admitted*
before their body is read; at most ``workers + max_waiting`` are admitted at any time, and one
more is refused at once with 503 and ``Retry-After``, so a burst of large uploads neither queues
without end nor fills the memory.
"""

from __future__ import annotations

import threading
import time
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable, Dict, Optional, Tuple, TypeVar

import anyio
import anyio.to_thread

from bmc_detectron.serve.errors import ApiError

T = TypeVar("T")


class InferenceGate:
    """Admission (bounded) and a worker-thread limiter for the analyses."""

    def __init__(self, workers: int, max_waiting: int) -> None:
        self.workers = int(workers)
        self.capacity = int(workers) + int(max_waiting)
        self.admitted = 0
        self.running = 0
        self.served = 0
        self.refused = 0
        self._limiter: Optional[anyio.CapacityLimiter] = None
        self._lock = threading.Lock()

    @asynccontextmanager
    async def admit(self) -> AsyncIterator[None]:
        """Hold a place for one request; 503 when every place is taken."""
        if self.admitted >= self.capacity:
            self.refused += 1
            raise ApiError(
                503,
                "busy",
                f"the analyser is busy ({self.admitted} requests in progress); try again shortly",
                headers={"Retry-After": "2"},
            )
        self.admitted += 1
        try:
            yield
        finally:
            self.admitted -= 1
            self.served += 1

    async def run(self, fn: Callable[..., T], *args: Any) -> Tuple[T, float]:
        """``fn(*args)`` in a worker thread, at most ``workers`` at once (the others wait);
        returns its result and the seconds it waited for a worker."""
        if self._limiter is None:  # created here: anyio needs a running event loop
            self._limiter = anyio.CapacityLimiter(self.workers)
        queued = time.perf_counter()

        def call() -> Tuple[T, float]:
            waited = time.perf_counter() - queued
            with self._lock:
                self.running += 1
            try:
                return fn(*args), waited
            finally:
                with self._lock:
                    self.running -= 1

        return await anyio.to_thread.run_sync(call, limiter=self._limiter)

    def status(self) -> Dict[str, int]:
        """Requests admitted, analyses running, and the limits (for ``/healthz``)."""
        return {
            "admitted": self.admitted,
            "running": self.running,
            "capacity": self.capacity,
            "workers": self.workers,
            "served": self.served,
            "refused_busy": self.refused,
        }
