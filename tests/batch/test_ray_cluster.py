"""The batch on a Ray cluster of separate nodes, through the address ``bmc batch --ray-address``
passes on.

The cluster (``ray.cluster_utils.Cluster``, Ray's own tool for this) is a head node and one more
node, each its own raylet with 1 CPU; this process connects to it only through ``run_batch``'s
``address``, as the command does. Every case must end with the report ``run_count`` writes on
its own (summary.json with the facts of the run masked, cells.csv and counts.csv byte for byte),
the cases counted on both nodes (``CaseResult.node``, in ``batch.json``), and a node lost
mid-case (its raylet and its worker killed) must have its case counted again on the other node,
resuming, no case lost or counted twice. The workers build the stand-in counter
(``tests/batch/helpers.py``). The node-loss test runs last: it leaves the cluster one node.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
from collections import Counter
from pathlib import Path
from typing import List

import pytest

ray = pytest.importorskip("ray", reason="the [batch] extra is not installed")

from ray.cluster_utils import Cluster  # noqa: E402

import bmc_detectron  # noqa: E402
from bmc_detectron.batch.jobs import BatchCase, BatchError, comparable_summary, find_cases  # noqa: E402
from bmc_detectron.batch.runner import run_batch  # noqa: E402
from bmc_detectron.pipeline.run import run_count  # noqa: E402
from bmc_detectron.tools import batch as batch_tool  # noqa: E402
from bmc_detectron.utils.io import list_images  # noqa: E402
from tests.batch.helpers import StandInFactory, logged_calls, write_cases  # noqa: E402

N_CASES, N_FIELDS = 3, 3
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def day(tmp_path_factory) -> Path:
    """Three cases of three fields and their single-process reports (``reference/<case>``)."""
    root = tmp_path_factory.mktemp("cluster_day")
    write_cases(root / "cases", N_CASES, N_FIELDS)
    for case in find_cases([root / "cases"], root / "reference"):
        counter, setup = StandInFactory()()
        run_count(counter, list_images(case.folder), case.output, progress=False, scale=setup)
    return root


@pytest.fixture(scope="module")
def cluster():
    """A head node and one more, 1 CPU each; this process is not connected to it. Their
    workers import this checkout (the package and the tests' stand-ins), as a cluster's nodes
    must all have the package (Ray adds only the driver's working directory to their path).
    Ray's token authentication mode is pinned for the module: the nodes and the batch's
    connections must agree on it (``address="auto"`` would otherwise turn it on)."""
    assert not ray.is_initialized()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_AUTH_MODE", os.environ.get("RAY_AUTH_MODE", "disabled"))
        mp.setenv("PYTHONPATH", str(REPO), prepend=os.pathsep)
        cluster = Cluster(
            initialize_head=True, head_node_args=dict(num_cpus=1, include_dashboard=False)
        )
        cluster.add_node(num_cpus=1)
        yield cluster
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()


def _other_node(cluster: Cluster):
    [node] = cluster.worker_nodes
    return node


def _assert_equal_to_reference(day: Path, cases: List[BatchCase]) -> None:
    for case in cases:
        for name in ("cells.csv", "counts.csv"):
            reference = day / "reference" / case.name / name
            assert (case.output / name).read_bytes() == reference.read_bytes(), case.name
        summary, reference = [
            comparable_summary(json.loads((folder / "summary.json").read_text()))
            for folder in (case.output, day / "reference" / case.name)
        ]
        assert summary == reference, case.name


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_bad_or_unreachable_ray_address_is_a_one_line_error(day, tmp_path, capsys):
    cases = find_cases([day / "cases"], tmp_path / "reports")
    port = _closed_port()
    for address, words in [
        ("garbage", "bad Ray address 'garbage': HOST:PORT"),
        ("head:port", "bad Ray address 'head:port'"),
        (f"127.0.0.1:{port}", f"no Ray cluster answers at 127.0.0.1:{port}: "),
        (f"ray://127.0.0.1:{port}", f"no Ray cluster answers at ray://127.0.0.1:{port}: "),
    ]:
        start = time.monotonic()
        with pytest.raises(BatchError, match=re.escape(words)) as err:
            run_batch(cases, StandInFactory(), engine="ray", address=address, progress=False)
        assert "\n" not in str(err.value) and time.monotonic() - start < 30
    assert not ray.is_initialized() and not (tmp_path / "reports").exists()
    (tmp_path / "det.onnx").write_bytes(b"")
    argv = [str(day / "cases"), "--output", str(tmp_path / "out")]
    argv += ["--detector-onnx", str(tmp_path / "det.onnx"), "--ray-address", f"127.0.0.1:{port}"]
    assert batch_tool.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: no Ray cluster answers at 127.0.0.1:{port}: ")
    assert err.count("\n") == 1


@pytest.mark.slow
def test_a_batch_on_two_nodes_equals_the_single_process_count(day, cluster, tmp_path, monkeypatch):
    # a relative output folder, from another folder than the one the nodes were started in
    monkeypatch.chdir(tmp_path)
    cases = find_cases([day / "cases"], Path("reports"))
    log = tmp_path / "calls.log"
    factory = StandInFactory(log=str(log), meet=str(tmp_path / "meet"))
    results = run_batch(
        cases, factory, engine="ray", workers=2, address=cluster.address, progress=False
    )
    assert [r.status for r in results] == ["counted"] * N_CASES, [r.error for r in results]
    _assert_equal_to_reference(day, cases)
    assert len(logged_calls(log)) == N_CASES * N_FIELDS  # every field counted once
    nodes = {cluster.head_node.node_id, _other_node(cluster).node_id}
    assert {r.node for r in results} == nodes  # both nodes counted cases
    assert not ray.is_initialized()  # it connected for the batch, and only


@pytest.mark.slow
def test_a_node_of_another_package_version_is_refused(day, cluster, tmp_path, monkeypatch):
    monkeypatch.setattr(bmc_detectron, "__version__", "0.0.0-other")
    cases = find_cases([day / "cases"], tmp_path / "reports")
    with pytest.raises(BatchError) as err:  # auto: the cluster started on this machine
        run_batch(cases, StandInFactory(), engine="ray", address="auto", progress=False)
    text = str(err.value)
    assert re.match(r"the Ray node \S+ \([0-9a-f]{12}\) runs bmc-detectron 0\.1\.0, ", text)
    assert text.endswith("this machine 0.0.0-other: install the same version on every node")
    assert not (tmp_path / "reports").exists()  # no case was sent to it


@pytest.mark.slow
def test_a_local_ray_batch_does_not_join_the_cluster_running_here(day, cluster, tmp_path):
    # Ray's ray.init() without an address joins the cluster this machine runs (the cluster
    # wrote its address under /tmp/ray); --ray means a Ray of its own, of --workers CPUs
    cases = find_cases([day / "cases"], tmp_path / "reports")
    results = run_batch(cases, StandInFactory(), engine="ray", workers=1, progress=False)
    assert [r.status for r in results] == ["counted"] * N_CASES, [r.error for r in results]
    [node] = {r.node for r in results}
    assert node not in {cluster.head_node.node_id, _other_node(cluster).node_id}
    _assert_equal_to_reference(day, cases)


@pytest.mark.slow
def test_a_node_lost_mid_case_has_its_case_counted_again_on_the_other(day, cluster, tmp_path):
    other, held = _other_node(cluster), tmp_path / "held"
    cases, log = find_cases([day / "cases"], tmp_path / "reports"), tmp_path / "calls.log"
    factory = StandInFactory(
        log=str(log),
        die_marker=str(held),
        die_at=2,  # the other node's worker stops at its case's second field
        hold_node=other.node_id,
        meet=str(tmp_path / "meet"),
    )

    def remove_the_held_node() -> None:
        deadline = time.monotonic() + 60
        while not held.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        cluster.remove_node(other, allow_graceful=False)  # raylet and workers killed

    remover = threading.Thread(target=remove_the_held_node)
    remover.start()
    try:
        results = run_batch(
            cases, factory, engine="ray", workers=2, address=cluster.address, progress=False
        )
    finally:
        remover.join()
    assert held.read_text() == other.node_id  # the lost node was counting a case
    assert [r.status for r in results] == ["counted"] * N_CASES, [r.error for r in results]
    _assert_equal_to_reference(day, cases)  # no case lost, none counted twice into its report
    assert {r.node for r in results} == {cluster.head_node.node_id}  # its case rerun there
    calls = Counter(s for _, s in logged_calls(log))
    assert len(calls) == N_CASES * N_FIELDS  # every field counted
    assert sum(calls.values()) == N_CASES * N_FIELDS + 1  # and only the held one twice
    summaries = [json.loads((c.output / "summary.json").read_text()) for c in cases]
    assert sum(s["timing"]["fields_reused"] for s in summaries) == 1  # its first field reused
