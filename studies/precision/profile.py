"""Where a training iteration's time goes: torch.profiler (CPU) with one region per stage.

:class:`StageRegions` opens a ``torch.profiler.record_function`` range around the stages of a
dense detector's training iteration: the ResNet (``model.backbone.bottom_up``), the whole
backbone (ResNet + neck), the head (forward hooks), label assignment (``model.label_anchors``)
and the losses (``model.losses``, both wrapped on the instance). :func:`profile_training`
adds the data loading, forward, backward and optimizer ranges and the whole iteration, and
:func:`stage_table` turns the ranges into exclusive stages whose times add up to the iteration:

- ``data``: waiting for the next batch of the train loader;
- ``resnet``, ``neck`` (backbone minus ResNet), ``head``, ``label assignment``, ``loss``;
- ``forward other``: the rest of the forward (pre-processing, anchors, reshaping);
- ``backward``; ``optimizer`` (zero_grad + step); ``other``: the rest of the iteration.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from typing import Callable, Dict, Iterator, List, Mapping, Sequence

from detectron2.utils.events import EventStorage
from torch import nn
from torch.profiler import ProfilerActivity, profile, record_function

from bmc_detectron.bench.measure import Subject, make_train_step
from bmc_detectron.reporting.tables import markdown_table
from bmc_detectron.reporting.timing import round_order

#: module attribute paths timed by forward hooks -> range name
MODULE_REGIONS = {"backbone.bottom_up": "resnet", "backbone": "backbone", "head": "head"}
#: model methods timed by wrapping -> range name
METHOD_REGIONS = {"label_anchors": "label assignment", "losses": "loss"}
#: step ranges of :func:`~.measure.make_train_step` and the iteration ranges
STEP_REGIONS = ("forward", "backward", "optimizer")
ITERATION, DATA = "iteration", "data"
REGIONS = (ITERATION, DATA, *STEP_REGIONS, *MODULE_REGIONS.values(), *METHOD_REGIONS.values())
STAGES = (
    "data",
    "resnet",
    "neck",
    "head",
    "label assignment",
    "loss",
    "forward other",
    "backward",
    "optimizer",
    "other",
)


def _submodule(model: nn.Module, path: str) -> nn.Module | None:
    module = model
    for part in path.split("."):
        module = getattr(module, part, None)
        if module is None:
            return None
    return module


class StageRegions:
    """While the ``with`` block runs, the model's stages are profiler ranges (see the module
    docstring); stages a model lacks are left out."""

    def __init__(self, model: nn.Module):
        self.model = model
        self._handles: List = []
        self._open: Dict[str, List[record_function]] = defaultdict(list)
        self._wrapped: List[str] = []

    def _enter(self, name: str) -> None:
        region = record_function(name)
        region.__enter__()
        self._open[name].append(region)

    def _exit(self, name: str) -> None:
        self._open[name].pop().__exit__(None, None, None)

    def _wrap(self, method: Callable, name: str) -> Callable:
        @functools.wraps(method)
        def run(*args, **kwargs):
            with record_function(name):
                return method(*args, **kwargs)

        return run

    def __enter__(self) -> StageRegions:
        for path, name in MODULE_REGIONS.items():
            module = _submodule(self.model, path)
            if module is None:
                continue
            pre = module.register_forward_pre_hook(lambda m, a, name=name: self._enter(name))
            post = module.register_forward_hook(lambda m, a, o, name=name: self._exit(name))
            self._handles += [pre, post]
        for method, name in METHOD_REGIONS.items():
            if callable(getattr(self.model, method, None)) and method not in vars(self.model):
                setattr(self.model, method, self._wrap(getattr(self.model, method), name))
                self._wrapped.append(method)
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        for method in self._wrapped:
            delattr(self.model, method)
        self._handles, self._wrapped = [], []
        for regions in self._open.values():
            while regions:
                regions.pop().__exit__(None, None, None)


def _accumulate(prof: profile, regions: Dict[str, float], ops: Dict[str, List[float]]) -> None:
    for event in prof.key_averages():
        if event.key in REGIONS:
            regions[event.key] += event.cpu_time_total / 1e3
        else:
            acc = ops.setdefault(event.key, [0.0, 0.0])
            acc[0] += event.self_cpu_time_total / 1e3
            acc[1] += event.count


def profile_training(
    subjects: Sequence[Subject],
    batches: Callable[..., Iterator[List[dict]]],
    iters: int = 3,
    warmup: int = 1,
    top: int = 10,
) -> Dict[str, Dict[str, object]]:
    """Profile ``iters`` training iterations (data + step) per subject, one profiled iteration
    per subject per round, the order rotating each round, after ``warmup`` unprofiled ones.

    ``batches(cfg)`` gives a subject's batch source. Returns per subject the per-iteration
    milliseconds of every range (``regions_ms``), the exclusive stages (:func:`stage_table`)
    and the ``top`` operators by self CPU time per iteration (``top_ops``).
    """
    streams = {s.name: batches(s.cfg) for s in subjects}
    regions = {s.name: dict.fromkeys(REGIONS, 0.0) for s in subjects}
    ops: Dict[str, Dict[str, List[float]]] = {s.name: {} for s in subjects}
    steps = {s.name: make_train_step(s.model, s.cfg, record_function) for s in subjects}

    def iteration(s: Subject) -> None:
        with record_function(ITERATION):
            with record_function(DATA):
                batch = next(streams[s.name])
            steps[s.name](batch)

    with EventStorage(0):
        for s in subjects:
            s.model.train()
            for _ in range(warmup):
                iteration(s)
        for r in range(iters):
            for s in round_order(subjects, r):
                s.model.train()
                with StageRegions(s.model), profile(activities=[ProfilerActivity.CPU]) as prof:
                    iteration(s)
                _accumulate(prof, regions[s.name], ops[s.name])
    out = {}
    for s in subjects:
        per_iter = {k: v / iters for k, v in regions[s.name].items()}
        ranked = sorted(ops[s.name].items(), key=lambda kv: -kv[1][0])[:top]
        top_ops = [
            {"op": k, "self_ms": v[0] / iters, "calls": v[1] / iters, "pct": 0.0} for k, v in ranked
        ]
        for op in top_ops:
            op["pct"] = 100.0 * op["self_ms"] / max(per_iter[ITERATION], 1e-9)
        out[s.name] = {"regions_ms": per_iter, "stages": stage_table(per_iter), "top_ops": top_ops}
    return out


def stage_table(regions_ms: Mapping[str, float]) -> Dict[str, Dict[str, float]]:
    """Exclusive stages (ms and % of the iteration) from the nested ranges' milliseconds."""
    r = regions_ms
    ms = {
        "data": r[DATA],
        "resnet": r["resnet"],
        "neck": r["backbone"] - r["resnet"],
        "head": r["head"],
        "label assignment": r["label assignment"],
        "loss": r["loss"],
        "forward other": r["forward"]
        - r["backbone"]
        - r["head"]
        - r["label assignment"]
        - r["loss"],
        "backward": r["backward"],
        "optimizer": r["optimizer"],
    }
    ms["other"] = r[ITERATION] - sum(ms.values())
    total = max(r[ITERATION], 1e-9)
    return {k: {"ms": v, "pct": 100.0 * v / total} for k, v in ms.items()}


def stages_markdown(profiles: Mapping[str, Mapping]) -> str:
    """One table: per stage, ms and % of the iteration for every variant."""
    names = list(profiles)
    headers = ("stage", *(f"`{n}` ms (%)" for n in names))
    rows = []
    for stage in (*STAGES, "iteration"):
        cells = []
        for n in names:
            if stage == "iteration":
                cells.append(f"**{profiles[n]['regions_ms'][ITERATION]:.1f}** (100)")
            else:
                st = profiles[n]["stages"][stage]
                cells.append(f"{st['ms']:.1f} ({st['pct']:.1f})")
        rows.append([stage, *cells])
    return markdown_table(headers, rows)


def top_ops_markdown(name: str, profile_rec: Mapping[str, object]) -> str:
    """The top operators of one variant by self CPU time per iteration."""
    headers = ("operator", "self CPU ms / iter", "% of iteration", "calls / iter")
    rows = [
        [f"`{op['op']}`", f"{op['self_ms']:.1f}", f"{op['pct']:.1f}", f"{op['calls']:.0f}"]
        for op in profile_rec["top_ops"]
    ]
    return f"`{name}`:\n\n" + markdown_table(headers, rows)
