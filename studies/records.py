"""A study's results kept in the repository: run folders do not outlive their machine.

A page is built from the small files its runs write (metrics, results), but a run folder lives
on the machine that trained it; on a new machine the page could only be rebuilt by training every
run again. So each study that trains names, in its manifest, the files its pages read: globs
relative to each runs folder (a list: relative to the manifest's ``runs``)::

    records:
      output/open_set: ["without_*/result.json", "without_*/feature_scores*.json"]
      output/open_set_2400: ["without_*/result.json"]

and keeps a copy of them in ``studies/<study>/records/<folder name>/`` (same relative paths),
committed::

    python -m studies.records save open_set [--runs /elsewhere/open_set ...]
    python -m studies.records restore open_set [--runs ...]
    python -m studies.records list open_set

(``--runs DIR`` stands for the manifest's folder of the same name.) ``save`` copies every
matching file of the runs folders into the records (a file over :data:`MAX_FILE_BYTES` is
refused, as are one folder's records over :data:`MAX_FOLDER_BYTES`: records are results, never
weights); ``restore`` copies the records into the runs folders where they lack them (a file
a runs folder has is never overwritten), so the drivers skip what was finished on another
machine and the pages build from every run ever recorded.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

from studies.status import MANIFEST, load_manifest

STUDIES = Path(__file__).resolve().parent
RECORDS = "records"
MAX_FILE_BYTES = 256 * 1024
MAX_FOLDER_BYTES = 4 * 1024 * 1024


class RecordsError(ValueError):
    """A study whose records cannot be saved or restored (the message names file and problem)."""


def record_sets(study: str) -> Dict[str, List[str]]:
    """``runs folder -> globs`` of ``studies/<study>/study.yaml``'s ``records``; a
    :class:`RecordsError` names the manifest when it has none or they are malformed."""
    path = STUDIES / study / MANIFEST
    if not path.is_file():
        raise RecordsError(f"{path}: no such study manifest")
    manifest = load_manifest(path)
    records = manifest.get("records")
    if isinstance(records, list) and manifest.get("runs"):
        records = {str(manifest["runs"]): records}
    if not isinstance(records, dict) or not records:
        raise RecordsError(
            f"{path}: 'records' must map each runs folder to globs of the files its pages read"
        )
    names = [Path(folder).name for folder in records]
    if len(set(names)) != len(names):
        raise RecordsError(f"{path}: two runs folders of 'records' share a name: {names}")
    return {str(folder): [str(g) for g in globs] for folder, globs in records.items()}


def runs_folders(sets: Mapping[str, Sequence[str]], overrides: Sequence[str]) -> Dict[str, Path]:
    """``manifest folder -> folder to use``: each override stands for the manifest's folder of
    the same name (``/work/runs/open_set`` for ``output/open_set``)."""
    folders = {folder: Path(folder) for folder in sets}
    by_name = {Path(folder).name: folder for folder in sets}
    for override in overrides:
        name = Path(override).name
        if name not in by_name:
            raise RecordsError(
                f"--runs {override}: the study records no folder named {name!r} "
                f"(it records {sorted(by_name)})"
            )
        folders[by_name[name]] = Path(override)
    return folders


def matching_files(root: Path, patterns: Sequence[str]) -> List[Path]:
    """The files under ``root`` that match any of ``patterns``, relative to ``root``, sorted."""
    found = {p.relative_to(root) for pattern in patterns for p in root.glob(pattern) if p.is_file()}
    return sorted(found)


def save_records(runs: Path, records: Path, patterns: Sequence[str]) -> List[Path]:
    """Copy the files of ``runs`` matching ``patterns`` into ``records`` (relative paths kept);
    returns the relative paths copied. Checks every size before copying anything."""
    files = matching_files(runs, patterns)
    for rel in files:
        size = (runs / rel).stat().st_size
        if size > MAX_FILE_BYTES:
            raise RecordsError(
                f"{runs / rel}: {size} bytes, over the {MAX_FILE_BYTES}-byte limit of a record "
                "(records are results, not weights or caches: narrow the manifest's globs)"
            )
    kept = {rel: (records / rel).stat().st_size for rel in matching_files(records, patterns)}
    kept.update({rel: (runs / rel).stat().st_size for rel in files})
    total = sum(kept.values())
    if total > MAX_FOLDER_BYTES:
        raise RecordsError(
            f"{records}: the records would hold {total} bytes, over the limit of {MAX_FOLDER_BYTES}"
        )
    for rel in files:
        (records / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(runs / rel, records / rel)
    return files


def restore_records(records: Path, runs: Path, patterns: Sequence[str]) -> List[Path]:
    """Copy the records matching ``patterns`` into ``runs`` where it lacks them; returns the
    relative paths copied (a file ``runs`` has is left as it is)."""
    copied = []
    for rel in matching_files(records, patterns):
        target = runs / rel
        if target.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(records / rel, target)
        copied.append(rel)
    return copied


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("action", choices=("save", "restore", "list"))
    p.add_argument("study", help="the study's folder under studies/ (e.g. open_set)")
    p.add_argument(
        "--runs", nargs="+", default=[], help="runs folders used for the manifest's of that name"
    )
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    try:
        sets = record_sets(args.study)
        folders = runs_folders(sets, args.runs)
        for folder, patterns in sets.items():
            runs, records = folders[folder], STUDIES / args.study / RECORDS / Path(folder).name
            if args.action == "list":
                files = matching_files(records, patterns)
                print(f"{records}: {len(files)} file(s)")
                for f in files:
                    print(f"  {f}")
            elif args.action == "save":
                if not runs.is_dir():
                    print(f"{runs}: no such runs folder, nothing saved from it")
                    continue
                files = save_records(runs, records, patterns)
                print(f"saved {len(files)} file(s) of {runs} into {records}")
            else:
                files = restore_records(records, runs, patterns)
                print(f"restored {len(files)} file(s) of {records} into {runs}")
    except RecordsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
