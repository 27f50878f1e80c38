"""``bmc``: one command for the user jobs, each a subcommand with its own ``--help``.

    bmc --help                 # the subcommands, one line each
    bmc count --help           # a subcommand's arguments
    bmc count --detector-config C --detector-weights W --input 'case/*.png' --output reports/c

The dispatcher is thin: ``bmc X ARGS`` runs ``bmc_detectron.tools.<module>.main(ARGS)`` and exits
with its status; ``python -m bmc_detectron.tools.<module> ARGS`` does the same. A subcommand's
one-line summary is the first line of its module's docstring, read without importing the module
(``bmc --help`` stays fast).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

PROG = "bmc"
#: subcommand -> module under bmc_detectron.tools, in the order ``bmc --help`` lists them
COMMANDS: Dict[str, str] = {
    "train": "train",
    "count": "count",
    "batch": "batch",
    "count-eval": "count_eval",
    "serve": "serve",
    "export-onnx": "export_onnx",
    "open-set-threshold": "open_set_threshold",
    "demo": "demo",
    "visualize": "visualize",
    "select": "select",
    "merge-labels": "merge_labels",
    "cases": "cases",
    "estimate-scale": "estimate_scale",
    "convert": "convert",
    "split": "split",
    "synthetic": "synthetic",
    "marrow-fields": "marrow_fields",
}


def tool_module(command: str) -> str:
    """The module that runs ``command``."""
    return f"bmc_detectron.tools.{COMMANDS[command]}"


def summary(command: str) -> str:
    """The first line of the command's module docstring (the module is parsed, not imported)."""
    spec = importlib.util.find_spec(tool_module(command))
    if spec is None or spec.origin is None:
        return ""
    doc = ast.get_docstring(ast.parse(Path(spec.origin).read_text(encoding="utf-8"))) or ""
    return doc.strip().split("\n")[0].replace("``", "`")


def usage() -> str:
    """``bmc --help``: what the command is and its subcommands."""
    width = max(map(len, COMMANDS))
    lines = [
        f"usage: {PROG} COMMAND [ARGS ...]",
        "",
        "bmc-detectron: bone-marrow cell detection, recognition and counting.",
        "",
        "commands:",
    ]
    lines += [f"  {name:<{width}}  {summary(name)}" for name in COMMANDS]
    lines += ["", f"`{PROG} COMMAND --help` shows a command's arguments."]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``bmc``; returns the exit status (2: no or an unknown command)."""
    args: List[str] = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        known = ", ".join(COMMANDS)
        print(f"{PROG}: unknown command {command!r}; one of: {known}", file=sys.stderr)
        return 2
    tool = importlib.import_module(tool_module(command))
    program = sys.argv[0]
    sys.argv[0] = f"{PROG} {command}"  # what argparse names in the tool's usage and errors
    try:
        status = tool.main(rest)
    finally:
        sys.argv[0] = program
    return int(status or 0)


if __name__ == "__main__":
    sys.exit(main())
