"""A bounded load test of the served app, on 127.0.0.1 only.

``python -m bmc_detectron.tools.serve`` runs in a subprocess (PyTorch backend, the tiny random
detector of ``tests.serve.helpers``, no classifier); 8 client threads send 200 analyze requests
of small synthetic smears. No request may fail; p50 / p95 latency and the server's peak RSS are
printed and written to ``load.json`` in the test's folder; the server's RSS after the run must be
within 10 % of its RSS after the first 20 requests (no leak).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List

import psutil
import pytest

from tests.serve.helpers import DET_CONFIG, DET_OPTS, encode, free_port, save_tiny_detector, smear

httpx = pytest.importorskip("httpx", reason="pip install -e '.[serve]'")
pytest.importorskip("uvicorn", reason="pip install -e '.[serve]'")

REPO = Path(__file__).resolve().parents[2]
REQUESTS, CLIENTS, WARMUP = 200, 8, 20


def peak_rss(pid: int) -> int:
    """The process's peak resident set (VmHWM) in bytes; its current RSS where not on Linux."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return psutil.Process(pid).memory_info().rss


@pytest.fixture
def server(tmp_path):
    weights = save_tiny_detector(tmp_path / "det.pth")
    port = free_port()
    cmd = [sys.executable, "-m", "bmc_detectron.tools.serve", "--backend", "torch"]
    cmd += ["--detector-config", DET_CONFIG, "--detector-weights", str(weights), "--no-classifier"]
    cmd += ["--detector-opts", *DET_OPTS, "--device", "cpu", "--threads", "1"]
    cmd += ["--port", str(port), "--max-waiting", "16", "--log-level", "warning", "--no-cases"]
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError((tmp_path / "server.log").read_text()[-3000:])
        time.sleep(0.3)
    yield url, proc
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


def run_clients(url: str, images: List[bytes], count: int, start: int) -> List[Dict]:
    """``count`` analyze requests from CLIENTS threads; one record per request."""
    records: List[Dict] = []
    lock = threading.Lock()
    todo = iter(range(start, start + count))

    def client() -> None:
        with httpx.Client(timeout=60) as http:
            while True:
                with lock:
                    i = next(todo, None)
                if i is None:
                    return
                files = {"files": (f"field-{i}.png", images[i % len(images)], "image/png")}
                t0 = time.perf_counter()
                try:
                    response = http.post(f"{url}/api/v1/analyze", files=files)
                    status = response.status_code
                    cells = len(response.json()["fields"][0]["cells"]) if status == 200 else -1
                except httpx.HTTPError as e:
                    status, cells = repr(e), -1
                with lock:
                    records.append(
                        {"status": status, "s": time.perf_counter() - t0, "cells": cells}
                    )

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return records


def percentile(values: List[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


@pytest.mark.slow
def test_200_requests_from_8_clients(server, tmp_path):
    url, proc = server
    images = [encode(smear(96, 128, seed=40 + i)) for i in range(4)]
    server_proc = psutil.Process(proc.pid)
    start = time.perf_counter()
    records = run_clients(url, images, WARMUP, 0)
    rss_warm = server_proc.memory_info().rss
    records += run_clients(url, images, REQUESTS - WARMUP, WARMUP)
    wall = time.perf_counter() - start
    rss_end = server_proc.memory_info().rss
    latencies = [r["s"] for r in records]
    failed = [r for r in records if r["status"] != 200]
    report = {
        "requests": len(records),
        "clients": CLIENTS,
        "failed": len(failed),
        "wall_s": round(wall, 2),
        "requests_per_s": round(len(records) / wall, 2),
        "latency_p50_s": round(percentile(latencies, 50), 4),
        "latency_p95_s": round(percentile(latencies, 95), 4),
        "latency_max_s": round(max(latencies), 4),
        "cells_per_field_mean": round(sum(r["cells"] for r in records) / len(records), 1),
        "rss_after_warmup_mb": round(rss_warm / 2**20, 1),
        "rss_end_mb": round(rss_end / 2**20, 1),
        "rss_peak_mb": round(peak_rss(proc.pid) / 2**20, 1),
        "cpu_count": os.cpu_count(),
    }
    (tmp_path / "load.json").write_text(json.dumps(report, indent=1))
    print("\nload test:", json.dumps(report))
    assert len(records) == REQUESTS and not failed, failed[:5]
    assert report["cells_per_field_mean"] > 0
    assert rss_end <= 1.10 * rss_warm, report
    assert httpx.get(f"{url}/healthz").json()["admitted"] == 0
