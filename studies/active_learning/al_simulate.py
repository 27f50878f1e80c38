"""Simulate active learning on a fully annotated pool: does selecting by uncertainty pay?

    python -m studies.active_learning.al_simulate \\
        --config-file configs/cpu/retinanet_R_18_PAN_cpu.yaml \\
        --train-dataset bccd_train --test-dataset bccd_val --num-classes 3 \\
        --initial 30 --budget 25 --rounds 3 --max-iter 200 --seeds 0 1 \\
        --strategies random entropy entropy_kcenter --output output/al_bccd --threads 1 \\
        [--report docs/results/active_learning/RESULTS_active.md] [--no-run] [KEY VALUE ...]

Per seed, ``--initial`` random images of the pool (``--train-dataset``) are the labelled seed
set (round 0, shared by every strategy); each strategy then acquires ``--budget`` images per round
for ``--rounds`` rounds, scored by the previous round's model, and retrains from scratch with the
config's schedule scaled to ``--max-iter``; every model is evaluated on ``--test-dataset``. See
:mod:`studies.active_learning.simulation` for the folder layout. Interrupted: run the same command
again (finished rounds are skipped, an unfinished one resumes from its last checkpoint); other
settings into the same ``--output`` are refused. ``--no-run`` trains nothing and only writes the
report from the finished rounds. The report (``--report``, default ``OUTPUT/simulation.md``) gets
two figures beside it: ``<stem>_images.png`` and ``<stem>_boxes.png``.

Exit status: 0 done, 2 bad input (unknown dataset or strategy, impossible sizes, bad config).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

from bmc_detectron.config import ConfigError
from bmc_detectron.data.checks import DatasetError
from bmc_detectron.reporting.provenance import shell_join
from studies.active_learning.simulation import (
    STRATEGY_SETTINGS,
    SimSettings,
    SimulationError,
    prepare,
    simulate,
)
from studies.active_learning.simulation_report import collect_records, write_report

COMMAND = "python -m studies.active_learning.al_simulate"


def build_parser() -> argparse.ArgumentParser:
    """The command's arguments."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config-file", required=True, help="detector config (yaml)")
    p.add_argument("--train-dataset", required=True, help="the pool: a registered, labelled set")
    p.add_argument("--test-dataset", required=True, help="registered dataset evaluated on")
    p.add_argument("--num-classes", type=int, required=True)
    p.add_argument("--initial", type=int, default=30, help="labelled images of round 0")
    p.add_argument("--budget", type=int, default=25, help="images acquired per round")
    p.add_argument("--rounds", type=int, default=3, help="acquisition rounds after round 0")
    p.add_argument("--max-iter", type=int, help="iterations per training (schedule scaled)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--strategies", nargs="+", default=list(STRATEGY_SETTINGS))
    p.add_argument("--output", default="output/al_simulation")
    p.add_argument("--threads", type=int, help="torch.set_num_threads while training")
    p.add_argument("--report", help="markdown page to write (default: OUTPUT/simulation.md)")
    p.add_argument("--no-run", action="store_true", help="train nothing: report what exists")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    return p


def settings_of(args: argparse.Namespace) -> SimSettings:
    """The simulation settings of the parsed command line."""
    return SimSettings(
        config_file=args.config_file,
        train_dataset=args.train_dataset,
        test_dataset=args.test_dataset,
        num_classes=args.num_classes,
        output=args.output,
        initial=args.initial,
        budget=args.budget,
        rounds=args.rounds,
        max_iter=args.max_iter,
        seeds=list(args.seeds),
        strategies=list(args.strategies),
        opts=list(args.opts),
        threads=args.threads,
    )


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    settings = settings_of(args)
    try:
        pool, schedule = prepare(settings, write=not args.no_run)
    except (ConfigError, DatasetError, SimulationError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not args.no_run:
        simulate(settings, pool)
    records = collect_records(settings)
    report = Path(args.report) if args.report else Path(settings.output) / "simulation.md"
    command = f"{COMMAND} {shell_join([a for a in argv if a != '--no-run'])}"
    size = (len(pool.ids), pool.boxes(pool.ids))
    write_report(report, settings, records, command, size, schedule)
    print(f"{len(records)} finished round(s); report: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
