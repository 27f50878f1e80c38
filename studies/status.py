"""Where a study stands, from its manifest and its run folders (never typed by hand).

A study's manifest (``studies/<study>/study.yaml``) names its title, its pages (each with the
command that writes it) and, for a study that trains, its planned runs::

    title: Model selection on BCCD val
    pages:
      - page: docs/results/selection/RESULTS_selection.md
        command: REPORT=1 bash studies/selection/model_selection.sh
    runs: output/select_bccd_bf16      # the default run folder (the driver's OUT)
    test_dataset: bccd_val              # a run is done when its metrics on it exist
    seeds: [0, 1, 2]                    # planned for every config ...
    configs:
      - d2_retinanet_R_18_FPN_cpu
      - {name: retinanet_R_18_PAN_PAA_cpu, seeds: [0, 1, 2, 3, 4]}   # ... unless it says

A run lives in ``<runs root>/runs/<config>/seed<S>/`` (:mod:`studies.ablation.runs`). It is
*done* when ``inference/<test_dataset>/coco_metrics.json`` exists, *failed* when its
``run.json`` says so, *started* when its folder exists otherwise (training, or interrupted), and
*queued* when there is no folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Mapping, Sequence, Tuple

import yaml

STATES = ("done", "failed", "started", "queued")
MANIFEST = "study.yaml"


def load_manifest(path: str | Path) -> Dict[str, object]:
    """The manifest at ``path`` (a ``study.yaml``), with ``path`` recorded under ``manifest``."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict) or "title" not in data:
        raise ValueError(f"{path}: a study manifest is a mapping with at least a title")
    return {**data, "manifest": str(path)}


def planned_runs(manifest: Mapping[str, object]) -> List[Tuple[str, List[int]]]:
    """(config name, planned seeds) per config of the manifest, in its order."""
    default = [int(s) for s in manifest.get("seeds") or []]
    out = []
    for entry in manifest.get("configs") or []:
        if isinstance(entry, str):
            out.append((entry, default))
        else:
            out.append((str(entry["name"]), [int(s) for s in entry.get("seeds", default)]))
    return out


def run_state(run_dir: Path, test_dataset: str | None = None) -> str:
    """One of :data:`STATES` for the run folder ``run_dir`` (see the module docstring)."""
    if test_dataset:
        done = (run_dir / "inference" / test_dataset / "coco_metrics.json").is_file()
    else:
        done = any(run_dir.glob("inference/*/coco_metrics.json"))
    if done:
        return "done"
    if not run_dir.is_dir():
        return "queued"
    run_json = run_dir / "run.json"
    if run_json.is_file() and json.loads(run_json.read_text()).get("status") == "failed":
        return "failed"
    return "started"


def _seeds(seeds: Sequence[int]) -> str:
    return ", ".join(str(s) for s in seeds)


def _config_line(name: str, states: Mapping[int, str], extra: Sequence[int]) -> str:
    done = [s for s, st in states.items() if st == "done"]
    line = f"- `{name}`: {len(done)} of {len(states)} planned seeds done"
    line += f" ({_seeds(done)})" if done else ""
    for state in STATES[1:]:
        seeds = [s for s, st in states.items() if st == state]
        if seeds:
            line += f"; {state}: {_seeds(seeds)}"
    if extra:
        line += f"; also done: {_seeds(extra)}"
    return line


def study_status(manifest: Mapping[str, object] | str | Path, runs_root: str | Path) -> str:
    """Markdown status of the study: one summary sentence, then one line per planned config
    ("n of m planned seeds done (...); failed / started / queued: ..."), from ``manifest`` (a
    loaded manifest or the path of one) and the run folders below ``runs_root``."""
    if not isinstance(manifest, Mapping):
        manifest = load_manifest(manifest)
    root = Path(runs_root)
    test = manifest.get("test_dataset")
    lines, counts = [], dict.fromkeys(STATES, 0)
    for name, seeds in planned_runs(manifest):
        folder = root / "runs" / name
        states = {s: run_state(folder / f"seed{s}", test) for s in seeds}
        for st in states.values():
            counts[st] += 1
        found = sorted(int(p.name[4:]) for p in folder.glob("seed*") if p.name[4:].isdigit())
        extra = [
            s for s in found if s not in states and run_state(folder / f"seed{s}", test) == "done"
        ]
        lines.append(_config_line(name, states, extra))
    source = f"`{manifest.get('manifest', MANIFEST)}` and the run folders in `{root}`"
    if not lines:
        return f"Generated from {source}: this study plans no training runs.\n"
    total = sum(counts.values())
    rest = ", ".join(f"{counts[st]} {st}" for st in STATES[1:] if counts[st])
    head = f"Generated from {source}: {counts['done']} of {total} planned runs done"
    return head + (f" ({rest})" if rest else "") + ".\n\n" + "\n".join(lines) + "\n"
