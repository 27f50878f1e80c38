"""The cases of a batch: which folders or slides are counted, into which report folders, and how.

A batch is a list of case folders (each a folder of field images) or a folder of case folders
(:func:`find_cases`), or a list of whole-slide files or folders of them (:func:`find_slides`);
every case is counted into ``<output>/<case name>`` (a slide's name is its file's stem), a report
folder exactly as ``bmc count`` (:mod:`bmc_detectron.pipeline.run`) or ``bmc count --slide``
(:func:`~bmc_detectron.counting.count_slide_file`) writes it. The worker side
(:class:`CaseWorker`) builds its counter once, from a picklable factory, and counts one case per
call; a finished case is not counted again, an interrupted one resumes per field (the report
folder's own resumability: a slide's counted fields are reused).

``summary.json`` is byte-identical across engines and runs for the same inputs except for the
facts of a run (:data:`RUN_FACTS`: when it was written, the seconds spent, which fields a resumed
run reused); :func:`comparable_summary` masks them.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from bmc_detectron.counting import (
    CounterSpec,
    SlideOptions,
    build_counter,
    count_slide_file,
    scale_setup,
)
from bmc_detectron.pipeline.counter import CellCounter
from bmc_detectron.pipeline.run import run_count
from bmc_detectron.pipeline.run_io import SUMMARY_FILE
from bmc_detectron.pipeline.scale_plan import ScaleOptions, ScaleSetup
from bmc_detectron.structures.differential import Lineage
from bmc_detectron.utils.io import list_images

#: summary.json keys that record the run rather than the count (top level, and per field)
RUN_FACTS = ("created", "timing")
FIELD_RUN_FACTS = ("detect_s", "recognise_s", "reused")

#: the file suffixes taken for slides in a folder of slides
SLIDE_SUFFIXES = (".svs", ".tif", ".tiff", ".ndpi", ".mrxs")

#: builds a worker's counter and scale setup (called once per worker; must pickle)
CounterFactory = Callable[[], Tuple[CellCounter, ScaleSetup]]


#: how a case's error starts when its worker could not build its counter
SETUP_FAILED = "the worker could not build its counter"


class BatchError(ValueError):
    """A batch that cannot start (a missing folder, a case without images); one line."""


@dataclass(frozen=True)
class BatchCase:
    """One case: its name, its folder of field images and its report folder; for a whole
    slide, ``slide`` is its file (and ``folder`` the file's folder)."""

    name: str
    folder: Path
    output: Path
    slide: Optional[Path] = None


@dataclass(frozen=True)
class CaseOptions:
    """The count's options, the same for every case of a batch."""

    uncertain_below: float = 0.5
    lineage: Lineage = field(default_factory=Lineage)
    overwrite: bool = False
    slide: SlideOptions = SlideOptions()


@dataclass
class CaseResult:
    """What became of a case: ``counted``, ``done`` (finished before) or ``failed``; the
    process (``worker``, its pid) and, on Ray, the node (``node``, its Ray node id) that
    counted it."""

    name: str
    output: str
    status: str
    fields: int = 0
    cells: int = 0
    skipped: int = 0
    seconds: float = 0.0
    worker: Optional[int] = None
    error: Optional[str] = None
    node: Optional[str] = None

    def to_json(self) -> Dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class SpecFactory:
    """The product's :data:`CounterFactory`: the counter a :class:`CounterSpec` describes
    (``slides``: its scale set up for slides, as ``bmc count --slide`` does)."""

    spec: CounterSpec
    options: ScaleOptions = ScaleOptions()
    slides: bool = False

    def __call__(self) -> Tuple[CellCounter, ScaleSetup]:
        counter = build_counter(self.spec)
        return counter, scale_setup(self.spec, counter, self.options, per_request=self.slides)


def find_cases(folders: Sequence[Path], output: Path) -> List[BatchCase]:
    """The cases of ``folders``: each a case folder (it holds images) or a folder of case
    folders (its sub-folders holding images, in name order). Raises :class:`BatchError` for a
    missing folder, one without images or case folders, or two cases of the same name."""
    cases: List[BatchCase] = []
    for folder in map(Path, folders):
        if not folder.is_dir():
            raise BatchError(f"{folder}: no such folder")
        if list_images(folder):
            cases.append(BatchCase(folder.name, folder, Path(output) / folder.name))
            continue
        subs = sorted(p for p in folder.iterdir() if p.is_dir() and list_images(p))
        if not subs:
            raise BatchError(f"{folder}: no images and no case folders with images (empty case)")
        cases += [BatchCase(p.name, p, Path(output) / p.name) for p in subs]
    return _checked(cases, "no case folders given")


def find_slides(paths: Sequence[Path], output: Path) -> List[BatchCase]:
    """The slides of ``paths``: each a slide file (any suffix) or a folder of slide files (those
    with a :data:`SLIDE_SUFFIXES` suffix, in name order); a slide is named by its file's stem.
    Raises :class:`BatchError` for a missing path, a folder without slides, or two slides of
    the same name. Whether a file can be read is the worker's business (a ``failed`` case)."""
    slides: List[Path] = []
    for path in map(Path, paths):
        if path.is_file():
            slides.append(path)
        elif path.is_dir():
            found = sorted(
                p for p in path.iterdir() if p.is_file() and p.suffix.lower() in SLIDE_SUFFIXES
            )
            if not found:
                raise BatchError(f"{path}: no slide files ({', '.join(SLIDE_SUFFIXES)})")
            slides += found
        else:
            raise BatchError(f"{path}: no such slide file or folder")
    cases = [BatchCase(p.stem, p.parent, Path(output) / p.stem, slide=p) for p in slides]
    return _checked(cases, "no slide files given")


def _checked(cases: List[BatchCase], empty: str) -> List[BatchCase]:
    names = [c.name for c in cases]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise BatchError(f"case name(s) given twice: {', '.join(twice)} (one report folder each)")
    if not cases:
        raise BatchError(empty)
    return cases


def is_finished(case: BatchCase) -> bool:
    """The case's report folder holds a finished report."""
    return (case.output / SUMMARY_FILE).exists()


def finished_result(case: BatchCase, status: str = "done") -> CaseResult:
    """A finished case's result, read from its summary.json."""
    summary = json.loads((case.output / SUMMARY_FILE).read_text())
    return _result(case, status, summary)


def _result(case: BatchCase, status: str, summary: Dict[str, Any]) -> CaseResult:
    return CaseResult(
        case.name,
        str(case.output),
        status,
        fields=len(summary["fields"]),
        cells=summary["counted"],
        skipped=len(summary["skipped"]),
    )


class CaseWorker:
    """One worker: its counter, built once by ``factory``, counts a case per :meth:`count`;
    ``worker`` (its pid) and ``node`` (its Ray node, if any) go into every result."""

    def __init__(
        self,
        factory: CounterFactory,
        options: CaseOptions,
        worker: int = 0,
        node: Optional[str] = None,
    ) -> None:
        self.options, self.worker, self.node = options, worker, node
        self.setup_error: Optional[str] = None
        try:
            self.counter, self.setup = factory()
        except Exception as e:  # reported with every case (the batch stops on it)
            self.setup_error = f"{SETUP_FAILED}: {_one_line(e)}"

    def count(self, case: BatchCase) -> CaseResult:
        """Count ``case`` into its report folder (a finished one is left as it is, unless
        overwriting); a case that cannot be counted is ``failed`` with the reason."""
        start = time.perf_counter()
        try:
            if self.setup_error:
                raise BatchError(self.setup_error)
            if is_finished(case) and not self.options.overwrite:
                result = finished_result(case)
            else:
                result = self._count(case)
        except Exception as e:  # one case's failure must not stop the batch: it is reported
            error = str(e) if self.setup_error else _one_line(e)
            result = CaseResult(case.name, str(case.output), "failed", error=error)
        result.seconds, result.worker = round(time.perf_counter() - start, 3), self.worker
        result.node = self.node
        return result

    def _count(self, case: BatchCase) -> CaseResult:
        if case.slide is not None:
            summary = count_slide_file(
                self.counter,
                self.setup,
                case.slide,
                case.output,
                self.options.slide,
                uncertain_below=self.options.uncertain_below,
                lineage=self.options.lineage,
                overwrite=self.options.overwrite,
                progress=False,
            )
            return _result(case, "counted", summary)
        summary = run_count(
            self.counter,
            list_images(case.folder),
            case.output,
            uncertain_below=self.options.uncertain_below,
            lineage=self.options.lineage,
            overwrite=self.options.overwrite,
            progress=False,
            scale=self.setup,
        )
        return _result(case, "counted", summary)


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return f"{type(error).__name__}: {text}"


def comparable_summary(summary: Dict[str, Any]) -> Dict[str, Any]:
    """``summary`` without the facts of the run (:data:`RUN_FACTS`, :data:`FIELD_RUN_FACTS`):
    what two counts of the same inputs with the same models and settings share exactly."""
    kept = {k: v for k, v in summary.items() if k not in RUN_FACTS}
    kept["fields"] = [
        {k: v for k, v in f.items() if k not in FIELD_RUN_FACTS} for f in summary["fields"]
    ]
    return kept
