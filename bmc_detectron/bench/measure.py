"""Measurements of detectors on this machine: latency, training step, throughput, COCO metrics
(size and cost: :mod:`bmc_detectron.bench.model_cost`).

Every clock read is preceded by ``torch.cuda.synchronize`` on CUDA, and every model runs in its
config's precision: fp16 autocast on CUDA with ``SOLVER.AMP.ENABLED`` (:func:`autocast_for`), and
``BMC.PRECISION`` (CPU bf16 backbone + head, channels-last), which
:func:`bmc_detectron.engine.precision.apply_precision` builds into the model.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ContextManager, Dict, Iterator, List, Mapping, Sequence, Tuple

import torch
from detectron2.config import CfgNode
from detectron2.data import DatasetMapper, build_detection_test_loader
from detectron2.data.transforms import Resize
from detectron2.utils.events import EventStorage
from torch import nn

from bmc_detectron.bench.inputs import latency_inputs
from bmc_detectron.data.datasets import prepare_dataset
from bmc_detectron.engine import BMCTrainer
from bmc_detectron.engine.loading import load_model
from bmc_detectron.engine.precision import cpu_bf16_enabled
from bmc_detectron.reporting.timing import interleaved_latency, summarize_ms

STAGES = ("backbone", "head")


def synchronize(device: torch.device | str) -> None:
    """Wait for queued CUDA work (no-op on CPU) so that wall-clock timings are complete."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], *devices: torch.device | str) -> Tuple[float, object]:
    """Seconds taken by ``fn()`` (every one of ``devices`` synchronized before and after) and
    its result."""
    for device in devices:
        synchronize(device)
    t0 = time.perf_counter()
    out = fn()
    for device in devices:
        synchronize(device)
    return time.perf_counter() - t0, out


@contextlib.contextmanager
def torch_threads(num: int | None) -> Iterator[None]:
    """Temporarily ``torch.set_num_threads(num)`` (None: leave as is)."""
    old = torch.get_num_threads()
    if num:
        torch.set_num_threads(num)
    try:
        yield
    finally:
        torch.set_num_threads(old)


class StageClock:
    """Forward hooks adding up the wall time spent in the model's ``backbone`` and its ``head``
    (``spent[stage]`` seconds since the last :meth:`reset`); a two-stage detector's "head" is its
    RPN and ROI heads together."""

    #: modules timed as each stage (those the model has)
    MODULES = {"backbone": ("backbone",), "head": ("head", "proposal_generator", "roi_heads")}

    def __init__(self, model: nn.Module):
        self.device = model.device
        self.spent = dict.fromkeys(STAGES, 0.0)
        self._start: Dict[str, float] = {}
        self._handles = []
        for stage in STAGES:
            for path in self.MODULES[stage]:
                module = getattr(model, path, None)
                if module is None:
                    continue
                self._handles.append(module.register_forward_pre_hook(self._pre_hook(path)))
                self._handles.append(module.register_forward_hook(self._post_hook(stage, path)))

    def _pre_hook(self, path: str) -> Callable:
        def hook(module, args):
            synchronize(self.device)
            self._start[path] = time.perf_counter()

        return hook

    def _post_hook(self, stage: str, path: str) -> Callable:
        def hook(module, args, output):
            synchronize(self.device)
            self.spent[stage] += time.perf_counter() - self._start.pop(path)

        return hook

    def reset(self) -> None:
        """Zero the accumulated times."""
        self.spent = dict.fromkeys(STAGES, 0.0)

    def remove(self) -> None:
        """Remove the hooks."""
        for handle in self._handles:
            handle.remove()


class MethodClock:
    """While the ``with`` block runs, ``obj.<method>`` is replaced by a wrapper that adds the
    (synchronized) wall time of every call to ``spent`` and counts them in ``calls``."""

    def __init__(self, obj: object, method: str, device: torch.device | str):
        self.obj, self.method, self.device = obj, method, device
        self.spent, self.calls = 0.0, 0
        self._own = method in vars(obj)
        self._original = getattr(obj, method)

    def _wrapper(self, *args, **kwargs):
        seconds, out = timed(lambda: self._original(*args, **kwargs), self.device)
        self.spent += seconds
        self.calls += 1
        return out

    def reset(self) -> None:
        """Zero the accumulated time and call count."""
        self.spent, self.calls = 0.0, 0

    def __enter__(self) -> MethodClock:
        setattr(self.obj, self.method, self._wrapper)
        return self

    def __exit__(self, *exc) -> None:
        if self._own:
            setattr(self.obj, self.method, self._original)
        else:
            delattr(self.obj, self.method)


@dataclass
class Subject:
    """A model under measurement with the config it was built from (which sets its precision)."""

    name: str
    model: nn.Module
    cfg: CfgNode
    description: str = ""

    def precision(self) -> ContextManager:
        """The autocast context of the config's precision (see :func:`autocast_for`)."""
        return autocast_for(self.cfg)


def autocast_for(cfg: CfgNode) -> ContextManager:
    """fp16 autocast on CUDA when ``SOLVER.AMP.ENABLED``, else a no-op (CPU bf16 is part of the
    model itself, :func:`bmc_detectron.engine.precision.apply_precision`)."""
    if cfg.MODEL.DEVICE.startswith("cuda") and cfg.SOLVER.AMP.ENABLED:
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def precision_name(cfg: CfgNode) -> str:
    """How ``cfg``'s model computes: ``"float16 autocast"`` (CUDA AMP), ``"bfloat16 backbone +
    head"`` (``BMC.PRECISION.CPU_BF16``) or ``"float32"``."""
    if cfg.MODEL.DEVICE.startswith("cuda") and cfg.SOLVER.AMP.ENABLED:
        return "float16 autocast"
    return "bfloat16 backbone + head" if cpu_bf16_enabled(cfg) else "float32"


def build_subject(cfg: CfgNode, name: str, description: str = "") -> Subject:
    """The config's model with its ``BMC.PRECISION`` applied and ``MODEL.WEIGHTS`` loaded."""
    model = load_model(cfg).train()  # in training mode, as built: it is timed training too
    return Subject(name, model, cfg, description)


def measure_latency(
    subjects: Sequence[Subject],
    inputs: Sequence[dict] | Mapping[str, Sequence[dict]],
    rounds: int = 1,
    warmup: int = 3,
    stages: bool = False,
) -> Dict[str, Dict[str, object]]:
    """Batch-1 eval-mode latency of ``model([input])`` per subject, in its config's precision.

    ``inputs`` is one list for all subjects, or a list per subject name (each model on the
    images at its own size; the lists are of one length, the i-th calls of two models are of
    the i-th image).

    After ``warmup`` untimed calls per model, ``rounds`` rounds of
    :func:`~bmc_detectron.reporting.timing.interleaved_latency`: in each, every input goes
    through every model, the order of the models rotating from round to round, so that drift of
    the machine falls on all models alike. With ``stages``, forward hooks split each call into
    ``backbone`` (backbone + neck), ``head`` and ``rest`` (pre-processing, anchors, decoding,
    NMS). Returns, per name, :func:`~bmc_detectron.reporting.timing.summarize_ms` of the calls,
    the per-call times (``calls_ms``) and, with ``stages``, the per-stage medians
    (``<stage>_ms``).
    """
    own = inputs if isinstance(inputs, Mapping) else {s.name: inputs for s in subjects}
    if len({len(own[s.name]) for s in subjects}) > 1:
        raise ValueError("measure_latency: the subjects' input lists differ in length")
    clocks = {s.name: StageClock(s.model) for s in subjects} if stages else {}
    calls = {s.name: {k: [] for k in STAGES} if stages else {} for s in subjects}
    devices = list(dict.fromkeys(s.model.device for s in subjects))
    try:
        with torch.no_grad():
            for s in subjects:
                s.model.eval()
                with s.precision():
                    for i in range(warmup):
                        s.model([own[s.name][i % len(own[s.name])]])
            call = {
                s.name: _latency_call(s, own[s.name], clocks.get(s.name), calls[s.name])
                for s in subjects
            }
            total = interleaved_latency(
                call,
                range(len(own[subjects[0].name])),
                rounds,
                timer=lambda fn: timed(fn, *devices)[0],
            )
    finally:
        for clock in clocks.values():
            clock.remove()
    return {name: _latency_summary({"total": total[name], **calls[name]}) for name in calls}


def _latency_call(
    subject: Subject,
    inputs: Sequence[dict],
    clock: StageClock | None,
    stage_calls: Dict[str, List[float]],
) -> Callable[[int], None]:
    """``subject``'s model on the input of an index, in its precision; with a ``clock``, the
    call's seconds per stage are appended to ``stage_calls``."""

    def call(index: int) -> None:
        if clock is not None:
            clock.reset()
        with subject.precision():
            subject.model([inputs[index]])
        for stage in STAGES if clock is not None else ():
            stage_calls[stage].append(clock.spent[stage])

    return call


def _latency_summary(calls: Mapping[str, List[float]]) -> Dict[str, object]:
    out: Dict[str, object] = dict(summarize_ms(calls["total"]))
    if "backbone" in calls:
        parts = zip(calls["total"], calls["backbone"], calls["head"])
        calls = {**calls, "rest": [t - b - h for t, b, h in parts]}
        for stage in (*STAGES, "rest"):
            out[f"{stage}_ms"] = statistics.median(calls[stage]) * 1000.0
    out["calls_ms"] = {k: [s * 1000.0 for s in v] for k, v in calls.items()}
    return out


def make_train_step(
    model: nn.Module, cfg: CfgNode, region: Callable[[str], ContextManager] | None = None
) -> Callable[[List[dict]], Dict[str, float]]:
    """One training step of ``model`` as a function of the batch: forward in the config's
    precision (losses summed in float32), backward and the config's optimizer
    (``BMCTrainer.build_optimizer``; CUDA fp16 with a gradient scaler). The step returns the
    loss values. ``region(name)``, when given, wraps the ``"forward"``, ``"backward"`` and
    ``"optimizer"`` parts (e.g. ``torch.profiler.record_function``). Call it inside an
    ``EventStorage``, the model in train mode.
    """
    region = region or (lambda name: contextlib.nullcontext())
    optimizer = BMCTrainer.build_optimizer(cfg, model)
    use_scaler = model.device.type == "cuda" and bool(cfg.SOLVER.AMP.ENABLED)
    scaler = torch.amp.GradScaler("cuda") if use_scaler else None

    def step(batch: List[dict]) -> Dict[str, float]:
        with region("forward"), autocast_for(cfg):
            losses = {k: v.float() for k, v in model(batch).items()}
            loss = sum(losses.values())
        with region("optimizer"):
            optimizer.zero_grad()
        with region("backward"):
            (loss if scaler is None else scaler.scale(loss)).backward()
        with region("optimizer"):
            if scaler is None:
                optimizer.step()
            else:
                scaler.step(optimizer)
                scaler.update()
        return {k: float(v.detach()) for k, v in losses.items()}

    return step


def measure_training(
    model: nn.Module,
    cfg: CfgNode,
    batch: List[dict],
    iters: int,
    clocks: Mapping[str, MethodClock] | None = None,
) -> Dict[str, object]:
    """Training steps (forward + backward + the config's optimizer step) on one batch.

    The first step is an untimed warm-up; the next ``iters`` are timed. The forward pass runs in
    the config's precision (losses summed in float32; CUDA fp16 with a gradient scaler). Every
    clock in ``clocks`` (e.g. a :class:`MethodClock` on ``model.label_anchors``, already entered)
    is reset before each step; its time per timed step is returned under ``clocks[name]``.
    """
    model.train()
    device, clocks = model.device, dict(clocks or {})
    step = make_train_step(model, cfg)
    seconds, spent = [], {k: [] for k in clocks}
    with EventStorage(0) as storage:
        for i in range(iters + 1):
            storage.iter = i
            for clock in clocks.values():
                clock.reset()
            t = timed(lambda: step(batch), device)[0]
            if i > 0:
                seconds.append(t)
                for k, clock in clocks.items():
                    spent[k].append(clock.spent)
    out: Dict[str, object] = dict(summarize_ms(seconds))
    out.update(seconds=seconds, clocks=spent, batch_size=len(batch))
    out["precision"] = precision_name(cfg)
    return out


def measure_throughput(
    subject: Subject, records: Sequence[dict], input_size: Tuple[int, int], batch_size: int
) -> Dict[str, object]:
    """Images/s of batched inference over ``records`` through a detectron2 test loader
    (decoding and resizing to ``input_size`` included; one untimed warm-up batch first)."""
    model, cfg = subject.model, subject.cfg
    mapper = DatasetMapper(cfg, False, augmentations=[Resize(tuple(input_size))])
    loader = build_detection_test_loader(
        list(records), mapper=mapper, batch_size=batch_size, num_workers=cfg.DATALOADER.NUM_WORKERS
    )
    warm = latency_inputs([], batch_size, input_size, cfg.INPUT.FORMAT)
    model.eval()
    with torch.no_grad(), subject.precision():
        model(warm)

        def run() -> int:
            count = 0
            for batch in loader:
                model(batch)
                count += len(batch)
            return count

        seconds, count = timed(run, model.device)
    return {
        "images_per_s": count / seconds,
        "images": count,
        "batch_size": batch_size,
        "seconds": seconds,
    }


def evaluate_coco(cfg: CfgNode, model: nn.Module, dataset: str, out_dir: Path) -> Dict[str, float]:
    """COCO metrics of ``model`` on ``dataset`` via ``BMCTrainer.test`` (which writes them to
    ``out_dir/inference/<dataset>/``)."""
    prepare_dataset(dataset)
    cfg = cfg.clone()
    cfg.defrost()
    cfg.DATASETS.TEST = (dataset,)
    cfg.OUTPUT_DIR = str(out_dir)
    cfg.freeze()
    results = BMCTrainer.test(cfg, model)
    return dict(results.get("bbox", results))
