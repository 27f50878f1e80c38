"""``bmc``: the subcommands listed, each one's --help, dispatch to the tool, and the tools' old
flag spellings still read but not shown."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
from pathlib import Path

import pytest

from bmc_detectron import cli

USER_JOBS = (
    "train count batch count-eval serve export-onnx open-set-threshold demo visualize select "
    "merge-labels cases estimate-scale convert split synthetic marrow-fields"
).split()


def test_help_lists_every_subcommand_with_its_summary(capsys):
    assert cli.main(["--help"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("usage: bmc COMMAND")
    assert list(cli.COMMANDS) == USER_JOBS
    rows = {line.split()[0]: line for line in printed.splitlines() if line.startswith("  ")}
    assert list(rows) == USER_JOBS
    for name in USER_JOBS:
        doc = importlib.import_module(cli.tool_module(name)).__doc__
        first = doc.strip().split("\n")[0].replace("``", "`")
        assert first and rows[name].split(None, 1)[1] == first


def test_no_command_prints_the_usage_and_an_unknown_one_is_refused(capsys):
    assert cli.main([]) == 2
    assert "commands:" in capsys.readouterr().out
    assert cli.main(["cuont", "--input", "x"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'cuont'" in err and "count" in err


@pytest.mark.parametrize("name", USER_JOBS)
def test_each_subcommand_has_help(name, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main([name, "--help"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: bmc {name}")


@pytest.mark.parametrize("name", USER_JOBS)
def test_each_tool_runs_as_a_module(name):
    """``python -m bmc_detectron.tools.X`` runs its main and exits with its status."""
    origin = importlib.util.find_spec(cli.tool_module(name)).origin
    tree = ast.parse(Path(origin).read_text())
    guard = [n for n in tree.body if isinstance(n, ast.If) and "__main__" in ast.unparse(n.test)]
    assert len(guard) == 1 and ast.unparse(guard[0].body[0]) == "sys.exit(main())"


def test_dispatch_passes_the_arguments_and_the_status(monkeypatch):
    seen = []
    tool = importlib.import_module("bmc_detectron.tools.count")
    monkeypatch.setattr(tool, "main", lambda argv: seen.append(list(argv)) or 1)
    argv = ["--input", "a b.png", "--output", "out", "--score-threshold", "0"]
    assert cli.main(["count", *argv]) == 1
    assert seen == [argv]
    split = importlib.import_module("bmc_detectron.tools.split")
    monkeypatch.setattr(split, "main", lambda argv: seen.append(list(argv)))
    assert cli.main(["split", "--stats-only"]) == 0  # a tool returning None: success
    assert seen[-1] == ["--stats-only"]


@pytest.mark.parametrize(
    "name, new, old, value",
    [
        ("convert", "--output", "--out", "x.json"),
        ("split", "--output", "--out", "dir"),
        ("synthetic", "--output", "--out", "dir"),
        ("visualize", "--score-threshold", "--confidence-threshold", "0.25"),
        ("select", "--detector-config", "--config-file", "c.yaml"),
        ("select", "--detector-weights", "--weights", "w.pth"),
        ("select", "--score-floor", "--score-threshold", "0.25"),
    ],
)
def test_old_spellings_are_read_not_shown(name, new, old, value):
    parser = importlib.import_module(cli.tool_module(name)).build_parser()
    dest = new.lstrip("-").replace("-", "_")
    base = {
        "convert": ["voc", "--annotations", "a"],
        "split": ["--json", "a.json"],
        "synthetic": [],
        "visualize": ["--config-file", "c", "--input", "i", "--output", "o"],
        "select": ["--pool", "p", "--budget", "1", "--output", "o"],
    }[name]
    expected = float(value) if "score" in new else value
    assert getattr(parser.parse_args([*base, new, value]), dest) == expected
    assert getattr(parser.parse_args([*base, old, value]), dest) == expected
    shown = parser.format_help()
    assert new in shown and f"{old} " not in shown.replace(new, "")


def test_select_needs_the_detector():
    select = importlib.import_module("bmc_detectron.tools.select")
    base = ["--pool", "p", "--budget", "1", "--output", "o"]
    with pytest.raises(SystemExit):
        select.parse_args([*base, "--detector-config", "c.yaml"])
    args = select.parse_args([*base, "--config-file", "c", "--weights", "w", "--opts", "K", "V"])
    got = (args.detector_config, args.detector_weights, args.detector_opts, args.score_floor)
    assert got == ("c", "w", ["K", "V"], 0.05)


def test_shared_settings_have_one_name_and_one_default():
    """The same setting in several commands: the same flag, the same default."""
    helps, defaults = {}, {}
    for name in USER_JOBS:
        parser = importlib.import_module(cli.tool_module(name)).build_parser()
        helps[name] = parser.format_help()
        for flag in re.findall(r"(?<![\w-])--[a-z][a-z-]*", helps[name]):
            defaults.setdefault(flag, {})[name] = parser.get_default(flag[2:].replace("-", "_"))
    for flag in ("--score-threshold", "--uncertain-below", "--tile-size", "--tile-overlap"):
        # count-eval's --uncertain-below defaults to the report's own threshold
        values = {v for k, v in defaults[flag].items() if k != "count-eval"}
        assert len(values) == 1, (flag, defaults[flag])
    assert set(defaults["--score-threshold"]) == {"count", "batch", "serve", "visualize"}
    assert defaults["--scale-tolerance"] == {"count": 0.15, "estimate-scale": 0.15}
    assert set(defaults["--output"]) >= {"convert", "split", "synthetic", "count", "select"}
    for old in ("--min-score", "--threshold", "--tolerance", "--confidence-threshold", "--out"):
        assert old not in defaults, old
