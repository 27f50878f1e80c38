"""Where the gradient goes at a checkpoint: per-group gradient norms and step sizes, SE gates.

    python -m bmc_detectron.analysis_tools.grad_probe \\
        --config-file configs/cpu/retinanet_R_18_PAN_SE_cpu.yaml \\
        --weights RUN/model_0000099.pth RUN/model_final.pth --batches 8 --output DIR [KEY VALUE ...]

For each checkpoint, ``--batches`` batches of the config's own training loader (its data,
augmentation and batch size; seeded) go through forward + backward in float32, without an
optimizer step; :mod:`bmc_detectron.analysis.gradients` measures them. Writes
``DIR/grad_probe.json`` and ``DIR/grad_probe.md`` (and ``--report``).
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from bmc_detectron.analysis.gradients import DEFAULT_GROUPS, step_stats, summarize
from bmc_detectron.config import ConfigError, build_cfg
from bmc_detectron.reporting.provenance import shell_join
from bmc_detectron.reporting.tables import fmt, markdown_table
from bmc_detectron.utils.io import atomic_write_text, write_json_atomic


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config-file", required=True)
    p.add_argument("--weights", nargs="+", required=True, help="checkpoints to probe")
    p.add_argument("--batches", type=int, default=8, help="training batches per checkpoint")
    p.add_argument("--output", required=True, help="folder for grad_probe.json / .md")
    p.add_argument("--report", help="also write the markdown page here (e.g. docs/...md)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config KEY VALUE overrides")
    return p.parse_args(argv)


def probe(cfg, weights: str, batches: int) -> Dict[str, object]:
    """Summary of ``batches`` training batches at ``weights``."""
    from detectron2.utils.env import seed_all_rng

    from bmc_detectron.engine import BMCTrainer
    from bmc_detectron.engine.loading import load_model

    seed_all_rng(cfg.SEED)
    # float32 whatever the config's precision: clean gradients
    model = load_model(cfg, weights, precision=False).train()
    clip = cfg.SOLVER.CLIP_GRADIENTS
    clip_value = float(clip.CLIP_VALUE) if clip.ENABLED and clip.CLIP_TYPE == "norm" else None
    loader = BMCTrainer.build_train_loader(cfg)
    steps = [
        step_stats(model, batch, DEFAULT_GROUPS, clip_value)
        for batch in itertools.islice(loader, batches)
    ]
    out = summarize(steps, float(cfg.SOLVER.BASE_LR))
    out.update(weights=weights, batches=batches, clip=clip_value, lr=cfg.SOLVER.BASE_LR)
    return out


def markdown(results: List[Dict], max_iter: int, command: str) -> str:
    """Tables of the probe: groups per checkpoint, SE gates per checkpoint."""
    g_rows, s_rows = [], []
    for r in results:
        name = Path(r["weights"]).name
        for g, v in r["groups"].items():
            g_rows.append([name, g, fmt(v["grad_norm"], 4), fmt(v["clipped_norm"], 4)])
            g_rows[-1] += [fmt(v["weight_norm"], 2), f"{v['update_ratio']:.1e}"]
        for n, v in r["gates"].items():
            drift = r["lr"] * max_iter * v["fc2_bias_grad"]
            s_rows.append([name, n, fmt(v["gate"], 3), f"{v['dloss_dgate']:.1e}"])
            s_rows[-1] += [f"{v['abs_dloss_dgate']:.1e}", f"{v['fc2_bias_grad']:.1e}"]
            s_rows[-1] += [fmt(v["fc2_bias_consistency"], 2), fmt(-drift, 3)]
    g_head = ["checkpoint", "group", "|grad|", "|clipped grad|", "|weight|", "lr x step / |w|"]
    s_head = ["checkpoint", "fusion", "gate", "mean dL/dgate", "mean |dL/dgate|"]
    s_head += ["mean dL/d fc2.bias", "sign consistency", f"bias drift over {max_iter} it (SGD)"]
    return "\n".join(
        [
            "# Gradient probe",
            "",
            markdown_table(g_head, g_rows),
            "",
            markdown_table(s_head, s_rows),
            "",
            "Means over the batches. *sign consistency*: |mean| / mean |.| of the fc2 bias "
            "gradient over batches. *bias drift*: -lr x iterations x mean gradient, how far plain "
            "SGD would move the gate's bias (momentum aside) if the push stayed as measured.",
            "",
            f"`{command}`",
            "",
        ]
    )


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    from bmc_detectron.data.datasets import register_builtin_datasets

    register_builtin_datasets()
    try:
        cfg = build_cfg(args.config_file, args.opts)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    missing = [w for w in args.weights if not Path(w).is_file()]
    if missing:
        print(f"error: no such checkpoint: {', '.join(missing)}", file=sys.stderr)
        return 2
    results = [probe(cfg, w, args.batches) for w in args.weights]
    out = Path(args.output)
    write_json_atomic(results, out / "grad_probe.json", indent=2)
    command = "python -m bmc_detectron.analysis_tools.grad_probe " + shell_join(
        sys.argv[1:] if argv is None else list(argv)
    )
    page = markdown(results, cfg.SOLVER.MAX_ITER, command)
    for path in [out / "grad_probe.md", *([Path(args.report)] if args.report else [])]:
        atomic_write_text(path, page)
    print(f"wrote {out / 'grad_probe.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
