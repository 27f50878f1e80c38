"""Names of the models a benchmark or a study compares: one per config file."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Sequence, Tuple


def run_names(config_files: Sequence[str]) -> List[Tuple[str, str]]:
    """(name, config file) per config: the file stem, prefixed by its folder when two configs
    share a stem; a config listed twice is kept once."""
    unique: Dict[Path, str] = {}
    for c in config_files:
        unique.setdefault(Path(c).resolve(), c)
    files = list(unique.values())
    stems = [Path(c).stem for c in files]
    return [
        (s if stems.count(s) == 1 else f"{Path(c).parent.name}_{s}", c)
        for s, c in zip(stems, files)
    ]
