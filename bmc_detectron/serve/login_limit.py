"""The login rate limit: after ``max_failures`` failed logins for one user name, or from one
client address, within ``window_s`` seconds, further logins of that name or from that address
are refused (429 with Retry-After) until the window has passed, even with the right password.

Kept in the memory of one server process: a restart forgets it, and several worker processes
would each count on their own (``bmc serve`` runs one). The address is the client's as the
server sees it (behind a proxy: the proxy's, so every user shares one address's budget).
"""

from __future__ import annotations

import math
import threading
from collections import deque
from typing import Callable, Deque, Dict, Optional, Tuple

Key = Tuple[str, str]


class LoginLimiter:
    """Counts failed logins per user name and per client address in a sliding window."""

    def __init__(
        self,
        max_failures: int,
        window_s: float,
        clock: Callable[[], float],
        max_keys: int = 100_000,
    ) -> None:
        if max_failures < 1 or window_s <= 0:
            raise ValueError(f"login limit: {max_failures} failures in {window_s} s")
        self.max_failures = int(max_failures)
        self.window_s = float(window_s)
        self.clock = clock
        self.max_keys = int(max_keys)
        self._failures: Dict[Key, Deque[float]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _keys(name: str, address: str) -> Tuple[Key, Key]:
        return ("name", name), ("address", address)

    def _recent(self, key: Key, now: float) -> Deque[float]:
        times = self._failures.get(key, deque())
        while times and times[0] <= now - self.window_s:
            times.popleft()
        if not times:
            self._failures.pop(key, None)
        return times

    def retry_after(self, name: str, address: str) -> Optional[int]:
        """Seconds (whole, rounded up) until a login of ``name`` from ``address`` is allowed
        again; None when it is allowed now."""
        now = self.clock()
        waits = []
        with self._lock:
            for key in self._keys(name, address):
                times = self._recent(key, now)
                if len(times) >= self.max_failures:
                    waits.append(times[-self.max_failures] + self.window_s - now)
        return max(1, math.ceil(max(waits))) if waits else None

    def failed(self, name: str, address: str) -> None:
        """Count one failed login of ``name`` from ``address``."""
        now = self.clock()
        with self._lock:
            if len(self._failures) >= self.max_keys:
                self._sweep(now)
            for key in self._keys(name, address):
                self._failures.setdefault(key, deque()).append(now)

    def succeeded(self, name: str) -> None:
        """A right password: the name's failures are forgotten (the address's are kept)."""
        with self._lock:
            self._failures.pop(("name", name), None)

    def _sweep(self, now: float) -> None:
        for key in list(self._failures):
            self._recent(key, now)
        while len(self._failures) >= self.max_keys:  # still full: drop the oldest keys
            self._failures.pop(next(iter(self._failures)))
