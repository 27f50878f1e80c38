"""Does the active-learning loop pay? A resumable simulation on a fully annotated pool.

The pool's own labels play the expert: a random seed set of ``initial`` images is "labelled",
a detector is trained on it, the model scores the unlabelled rest, the ``budget`` best images
(per the strategy) are "labelled" next, and the model is retrained from scratch on the larger
set, for ``rounds`` rounds. Every training uses the same schedule (the config's, scaled to
``max_iter`` by :func:`~studies.ablation.runs.schedule_opts`) and the seed as SEED.

Layout of the output folder ``OUT``::

    OUT/simulation.json                the settings (a re-run with others is refused)
    OUT/seed{S}/r0/                    the random seed set and its model, shared by all strategies
    OUT/seed{S}/{strategy}/r{k}/       round k >= 1 of a strategy

A round folder holds ``labelled.json`` (the labelled image ids and the images acquired in this
round with their scores; written before training, so an interrupted round trains on the same
images again), ``train.json`` (the COCO subset trained on), detectron2's checkpoints (resumed
from the last one), ``acquisition_cache/`` (the pool analysed by this round's model, for the next
round) and, once trained and evaluated, ``round.json``. A round with ``round.json`` is skipped.
"""

from __future__ import annotations

import functools
import gc
import hashlib
import json
import logging
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from detectron2.utils.env import seed_all_rng

from bmc_detectron.active.ranking import RankSettings, rank_pool
from bmc_detectron.bench.measure import torch_threads
from bmc_detectron.config import build_cfg
from bmc_detectron.data.datasets import (
    dataset_registration,
    prepare_dataset,
    register_coco_dataset,
    unregister_dataset,
)
from bmc_detectron.engine import BMCTrainer
from bmc_detectron.utils.io import atomic_write_text, write_json_atomic
from studies.ablation.runs import TrainOnlyTrainer, schedule_opts

logger = logging.getLogger(__name__)

#: strategy name -> RankSettings fields (the budget and seed are set per round)
STRATEGY_SETTINGS: Dict[str, Dict[str, str]] = {
    "random": {"strategy": "random"},
    "entropy": {"strategy": "entropy", "aggregate": "max", "diversity": "none"},
    "entropy_kcenter": {"strategy": "entropy", "aggregate": "max", "diversity": "kcenter"},
}
#: the ``strategy`` of the shared round 0 records
INITIAL = "initial"
#: settings that decide what the round folders hold: a re-run must keep them
FIXED_KEYS = (
    *("config_file", "opts", "train_dataset", "test_dataset", "num_classes"),
    *("initial", "budget", "max_iter"),
)
#: the analysis the random strategy needs of an image: none
_EMPTY_ENTRY = {"scores": np.zeros(0), "class_scores": np.zeros((0, 1)), "feature": np.zeros(1)}


class SimulationError(ValueError):
    """Settings that cannot be simulated, or that differ from those of the output folder."""


@dataclass
class SimSettings:
    """What to simulate (see the module docstring)."""

    config_file: str
    train_dataset: str
    test_dataset: str
    num_classes: int
    output: str
    initial: int = 30
    budget: int = 25
    rounds: int = 3
    max_iter: Optional[int] = None
    seeds: List[int] = field(default_factory=lambda: [0])
    strategies: List[str] = field(default_factory=lambda: list(STRATEGY_SETTINGS))
    opts: List[str] = field(default_factory=list)
    threads: Optional[int] = None

    def fixed(self) -> Dict[str, object]:
        """The :data:`FIXED_KEYS` values; the config file by the SHA-256 of the config it builds
        (its _BASE_ files included), so the same config from another checkout or working
        directory matches and an edited one does not."""
        values = {k: getattr(self, k) for k in FIXED_KEYS}
        built = build_cfg(self.config_file, []).dump().encode()
        values["config_file"] = "sha256:" + hashlib.sha256(built).hexdigest()
        values["opts"] = [str(o) for o in self.opts]
        return values


def validate(settings: SimSettings, pool_size: int) -> None:
    """Raise :class:`SimulationError` for settings that cannot run on a pool of this size."""
    unknown = [s for s in settings.strategies if s not in STRATEGY_SETTINGS]
    if unknown:
        raise SimulationError(f"unknown strategy {unknown[0]!r}; known: {list(STRATEGY_SETTINGS)}")
    if not 1 <= settings.initial <= pool_size:
        raise SimulationError(
            f"--initial {settings.initial} must be between 1 and the pool size {pool_size} "
            f"({settings.train_dataset})"
        )
    limits = [("--budget", settings.budget, 1), ("--rounds", settings.rounds, 0)]
    for flag, value, low in limits + [("--max-iter", settings.max_iter or 1, 1)]:
        if value < low:
            raise SimulationError(f"{flag} must be at least {low}, not {value}")
    if not settings.seeds or not settings.strategies:
        raise SimulationError("give at least one seed and one strategy")
    if len(settings.opts) % 2:
        raise SimulationError(f"config overrides must be KEY VALUE pairs: {settings.opts}")


# ------------------------------------------------------------------------------------ the pool


@dataclass
class Pool:
    """The fully annotated pool: its COCO json, image folder and registration metadata."""

    name: str
    coco: Dict
    image_root: Path
    metadata: Dict

    @classmethod
    def load(cls, name: str) -> Pool:
        """The registered dataset ``name`` (DatasetError if unknown or missing)."""
        json_file = prepare_dataset(name)
        reg = dataset_registration(name)
        coco = json.loads(Path(json_file).read_text())
        return cls(name, coco, Path(reg["image_root"]), reg["metadata"])

    @functools.cached_property
    def images(self) -> Dict[int, Dict]:
        """Image records by id."""
        return {int(im["id"]): im for im in self.coco["images"]}

    @property
    def ids(self) -> List[int]:
        """Image ids, sorted."""
        return sorted(self.images)

    @functools.cached_property
    def box_counts(self) -> Counter:
        """Number of annotations per image id."""
        return Counter(int(a["image_id"]) for a in self.coco["annotations"])

    def boxes(self, ids: Sequence[int]) -> int:
        """Annotations of the images ``ids``."""
        return sum(self.box_counts[i] for i in ids)

    def path(self, image_id: int) -> Path:
        """The image file."""
        return self.image_root / self.images[image_id]["file_name"]


def subset_coco(coco: Dict, ids: Sequence[int]) -> Dict:
    """The COCO json of only the images ``ids`` and their annotations (categories unchanged)."""
    keep = {int(i) for i in ids}
    known = {int(im["id"]) for im in coco["images"]}
    if keep - known:
        raise SimulationError(f"image ids not in the pool: {sorted(keep - known)[:5]}")
    out = {k: v for k, v in coco.items() if k not in ("images", "annotations")}
    out["images"] = [im for im in coco["images"] if int(im["id"]) in keep]
    out["annotations"] = [a for a in coco["annotations"] if int(a["image_id"]) in keep]
    return out


def initial_ids(pool_ids: Sequence[int], n: int, seed: int) -> List[int]:
    """``n`` image ids drawn at random (reproducibly from ``seed``), sorted."""
    chosen = np.random.default_rng(seed).choice(sorted(pool_ids), size=n, replace=False)
    return sorted(int(i) for i in chosen)


# ------------------------------------------------------------------------ settings and folders


def round_dir(output: Path, seed: int, strategy: str, k: int) -> Path:
    """``OUT/seed{S}/r0`` for round 0, ``OUT/seed{S}/{strategy}/r{k}`` after."""
    base = Path(output) / f"seed{seed}"
    return base / "r0" if k == 0 else base / strategy / f"r{k}"


def check_settings(settings: SimSettings, write: bool = True) -> None:
    """Compare with ``OUT/simulation.json`` (SimulationError if a fixed setting differs); with
    ``write``, record the settings there (seeds and strategies as the union of all runs)."""
    path = Path(settings.output) / "simulation.json"
    old = json.loads(path.read_text()) if path.is_file() else None
    if old is not None:
        for key, value in settings.fixed().items():
            if json.dumps(old["fixed"].get(key)) != json.dumps(value):
                raise SimulationError(
                    f"{path} was made with {key} = {old['fixed'].get(key)!r}, not {value!r}: "
                    "use the same settings or another --output"
                )
    if not write:
        return
    record = {"fixed": settings.fixed(), "settings": asdict(settings)}
    if old is not None:
        for key in ("seeds", "strategies"):
            merged = list(old["settings"][key]) + list(getattr(settings, key))
            record["settings"][key] = list(dict.fromkeys(merged))
        record["settings"]["rounds"] = max(old["settings"]["rounds"], settings.rounds)
    write_json_atomic(record, path, indent=2)


def _read_json(path: Path) -> Dict:
    return json.loads(Path(path).read_text())


def data_opts(settings: SimSettings, train: str) -> List[str]:
    """Datasets and class count of a training on the registered dataset ``train``."""
    return [
        *("DATASETS.TRAIN", f"('{train}',)", "DATASETS.TEST", f"('{settings.test_dataset}',)"),
        *("MODEL.RETINANET.NUM_CLASSES", str(settings.num_classes)),
    ]


def training_opts(settings: SimSettings, train: str, seed: int, folder: Path) -> List[str]:
    """Every override of a round's training: data, the user's, the schedule, seed, folder."""
    base = data_opts(settings, train) + list(settings.opts)
    sched = schedule_opts(settings.config_file, base, settings.max_iter)
    return base + sched + ["SEED", str(seed), "OUTPUT_DIR", str(folder.resolve())]


# ----------------------------------------------------------------------------------- training


def train_round(settings: SimSettings, train: str, seed: int, folder: Path) -> Dict[str, object]:
    """Train on the registered dataset ``train`` into ``folder`` (resuming from its last
    checkpoint) and evaluate on the test dataset; returns the metrics and times."""
    cfg = build_cfg(settings.config_file, training_opts(settings, train, seed, folder))
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "config.yaml", cfg.dump())
    seed_all_rng(cfg.SEED)
    trainer = TrainOnlyTrainer(cfg)
    trainer.resume_or_load(resume=True)  # an interrupted round goes on from its last checkpoint
    t0 = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    bbox = dict(BMCTrainer.test(cfg, trainer.model).get("bbox", {}))
    eval_s = time.perf_counter() - t0
    del trainer
    gc.collect()
    out = {k: bbox.get(k) for k in ("AP", "AP50", "AP75")}
    out["per_class"] = {k: v for k, v in bbox.items() if k.startswith(("AP-", "AP50-"))}
    return {**out, "train_s": train_s, "eval_s": eval_s}


def train_on(settings: SimSettings, pool: Pool, seed: int, folder: Path, ids: Sequence[int]):
    """Write the labelled subset, register it under a unique name, train, unregister."""
    json_file = write_json_atomic(subset_coco(pool.coco, ids), folder / "train.json")
    name = "al_sim/" + folder.relative_to(settings.output).as_posix()  # unique per round
    unregister_dataset(name)
    register_coco_dataset(name, json_file, pool.image_root, pool.metadata)
    try:
        return train_round(settings, name, seed, folder)
    finally:
        unregister_dataset(name)


# -------------------------------------------------------------------------------- acquisition


def pool_entries(
    settings: SimSettings, pool: Pool, ids: Sequence[int], model_dir: Path, rank: RankSettings
) -> Dict[int, Dict[str, np.ndarray]]:
    """Analyses of the images ``ids`` by ``model_dir/model_final.pth`` (cached in
    ``model_dir/acquisition_cache``); the random strategy needs none (empty entries)."""
    if rank.strategy == "random":
        return {i: dict(_EMPTY_ENTRY) for i in ids}
    from bmc_detectron.active.acquire import PoolModel, analyse_pool
    from bmc_detectron.pipeline.detector import Detector

    weights = model_dir / "model_final.pth"
    opts = data_opts(settings, settings.test_dataset) + list(settings.opts)
    model = PoolModel(Detector.from_config(settings.config_file, str(weights), opts))
    by_path = {pool.path(i): i for i in ids}
    results, skipped = analyse_pool(model, list(by_path), model_dir / "acquisition_cache")
    for path, why in skipped:
        logger.warning("acquisition: skipped %s: %s", path, why)
    return {by_path[p]: entry for p, entry in results.items()}


def acquire(
    settings: SimSettings,
    pool: Pool,
    strategy: str,
    seed: int,
    k: int,
    labelled: Sequence[int],
    model_dir: Path,
) -> List[Dict[str, object]]:
    """The images of round ``k`` (min(budget, unlabelled left)), chosen by ``strategy`` with
    the model of ``model_dir``; each as ``{image_id, file_name, score, rank, pick, boxes}``."""
    done = set(labelled)
    rest = [i for i in pool.ids if i not in done]
    if not rest:
        return []
    budget = min(settings.budget, len(rest))
    rank = RankSettings(**STRATEGY_SETTINGS[strategy], budget=budget, seed=seed + k)
    entries = pool_entries(settings, pool, rest, model_dir, rank)
    ids = [i for i in rest if i in entries]
    keys = [pool.images[i]["file_name"] for i in ids]
    rows = rank_pool(keys, [entries[i] for i in ids], rank)
    by_key = dict(zip(keys, ids))
    chosen = []
    for r in sorted((r for r in rows if r["selected"]), key=lambda r: r["pick"]):
        image_id = by_key[r["image"]]
        chosen.append({"image_id": image_id, "file_name": r["image"], "score": r["score"]})
        chosen[-1].update(rank=r["rank"], pick=r["pick"], boxes=pool.box_counts[image_id])
    return chosen


# ------------------------------------------------------------------------------------- rounds


def labelled_set(
    settings: SimSettings, pool: Pool, seed: int, strategy: str, k: int, prev: Optional[Path]
) -> Optional[Dict[str, object]]:
    """``labelled.json`` of a round: read back if written, else chosen now and written
    (None when the pool has nothing left to acquire)."""
    folder = round_dir(Path(settings.output), seed, strategy, k)
    if (folder / "labelled.json").is_file():
        return _read_json(folder / "labelled.json")
    if k == 0:
        ids, acquired = initial_ids(pool.ids, settings.initial, seed), []
    else:
        before = _read_json(prev / "labelled.json")["image_ids"]
        acquired = acquire(settings, pool, strategy, seed, k, before, prev)
        if not acquired:
            return None
        ids = sorted(before + [a["image_id"] for a in acquired])
    doc = {"strategy": strategy, "seed": seed, "round": k, "image_ids": ids, "acquired": acquired}
    write_json_atomic(doc, folder / "labelled.json", indent=2)
    return doc


def ensure_round(
    settings: SimSettings, pool: Pool, seed: int, strategy: str, k: int, prev: Optional[Path]
) -> Optional[Path]:
    """Run round ``k`` of ``strategy`` unless finished; returns its folder (None: pool empty)."""
    folder = round_dir(Path(settings.output), seed, strategy, k)
    tag = f"seed {seed} {strategy} round {k}"
    if (folder / "round.json").is_file():
        logger.info("[al_simulate] skip %s: %s exists", tag, folder / "round.json")
        return folder
    doc = labelled_set(settings, pool, seed, strategy, k, prev)
    if doc is None:
        logger.info("[al_simulate] %s: the pool has no unlabelled image left", tag)
        return None
    ids = doc["image_ids"]
    logger.info("[al_simulate] train %s on %d images", tag, len(ids))
    metrics = train_on(settings, pool, seed, folder, ids)
    record = {"strategy": strategy, "seed": seed, "round": k, "n_images": len(ids)}
    record.update(n_boxes=pool.boxes(ids), n_acquired=len(doc["acquired"]))
    record.update(n_boxes_acquired=sum(a["boxes"] for a in doc["acquired"]))
    record.update(metrics, acquired=doc["acquired"])
    write_json_atomic(record, folder / "round.json", indent=2)
    logger.info("[al_simulate] %s: AP %s AP50 %s", tag, metrics.get("AP"), metrics.get("AP50"))
    return folder


def simulate_seed(settings: SimSettings, pool: Pool, seed: int) -> None:
    """Round 0 (shared) and every strategy's rounds 1..R for one seed, round by round (every
    strategy's round k before any round k + 1, so an interrupted simulation is comparable)."""
    base = ensure_round(settings, pool, seed, INITIAL, 0, None)
    prev: Dict[str, Optional[Path]] = dict.fromkeys(settings.strategies, base)
    for k in range(1, settings.rounds + 1):
        for strategy in settings.strategies:
            if prev[strategy] is not None:
                prev[strategy] = ensure_round(settings, pool, seed, strategy, k, prev[strategy])


def prepare(settings: SimSettings, write: bool = True) -> Tuple[Pool, List[str]]:
    """Load the pool, check the test dataset, the settings and the config (DatasetError,
    SimulationError or ConfigError), then compare with / record in ``OUT/simulation.json``;
    returns the pool and the training schedule."""
    pool = Pool.load(settings.train_dataset)
    prepare_dataset(settings.test_dataset)
    validate(settings, len(pool.ids))
    base = data_opts(settings, settings.train_dataset) + list(settings.opts)
    schedule = schedule_opts(settings.config_file, base, settings.max_iter)
    check_settings(settings, write)
    return pool, schedule


def simulate(settings: SimSettings, pool: Pool) -> None:
    """Run every unfinished round of every seed and strategy."""
    with torch_threads(settings.threads):
        for seed in settings.seeds:
            simulate_seed(settings, pool, seed)
