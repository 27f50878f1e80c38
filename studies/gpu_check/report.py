"""The page of the GPU check (``tools/gpu_check``): markdown from its ``gpu_check.json``."""

from __future__ import annotations

from typing import Dict, List, Mapping

from bmc_detectron.reporting.tables import fmt, markdown_table

GRADS = ("output", "input", "weight", "offsets")


def _error_line(name: str, value: object) -> List[str]:
    if isinstance(value, Mapping) and "error" in value:
        return [f"**{name} failed**: `{value['error']}`", ""]
    return []


def header(result: Mapping) -> List[str]:
    env = result.get("environment") or {}
    gpu = env.get("gpu")
    title = f"measured on {gpu}" if gpu else "a dry run without a GPU (its numbers are the CPU's)"
    lines = [f"# GPU check: {title}", ""]
    where = (
        "Unlike the other pages, every number here was measured on a CUDA machine lent for a few"
        " minutes, not on the project's 2-core CPU machine."
        if gpu
        else "No CUDA device was found: the CUDA paths did not run and every time is the CPU's."
    )
    lines += [
        where + " Written by `studies/gpu_check/gpu_check.sh`; the JSON it returned is"
        " rendered by `python -m studies.gpu_check.gpu_check --report-from JSON --report PAGE`.",
        "",
    ]
    if env and "error" not in env:
        rows = [
            ["date", str(result.get("date", "?"))],
            [
                "GPU",
                f"{gpu} ({env.get('gpu_memory_gib')} GiB, sm {env.get('capability')})"
                if gpu
                else "none",
            ],
            ["CUDA / cuDNN", f"{env.get('cuda')} / {env.get('cudnn')}"],
            ["torch / torchvision", f"{env.get('torch')} / {env.get('torchvision')}"],
            ["detectron2", str(env.get("detectron2"))],
            ["CPU", f"{env.get('cpu')}, {env.get('logical_cores')} logical cores"],
        ]
        lines += [markdown_table(["", ""], rows), ""]
    lines += [f"Command: `{result.get('command', '?')}`", ""]
    return lines + _error_line("environment", env)


def dcn_section(result: Mapping) -> List[str]:
    lines = ["## Deformable convolution: which kernel, and the same numbers", ""]
    dcn = result.get("dcn")
    if dcn is None:
        return lines + ["Not run.", ""]
    if isinstance(dcn, Mapping):
        return lines + _error_line("dcn", dcn)
    lines += [
        "One random 3x3 layer (offsets of a few pixels), output and gradients of each path against",
        "`torchvision.ops.deform_conv2d` in float64 on the CPU: max |error| / max |reference|.",
        "",
    ]
    rows = []
    for layer in dcn:
        kind = "DCNv2" if layer["modulated"] else "DCNv1"
        for path, rec in layer["paths"].items():
            errs = [f"{rec['errors'][k]:.1e}" for k in GRADS]
            ops = ", ".join(f"`{o}`" for o in rec["ops"][:4]) + (
                " ..." if len(rec["ops"]) > 4 else ""
            )
            rows.append([kind, path, *errs, f"{rec['tolerance']:.0e}", ops, _yes(rec["ok"])])
    headers = [
        "layer",
        "path",
        "output",
        "grad input",
        "grad weight",
        "grad offsets",
        "tolerance",
        "ops / kernels seen",
        "ok",
    ]
    lines += [markdown_table(headers, rows), ""]
    model = result.get("dcn_model")
    if isinstance(model, Mapping) and "ops" in model:
        ops = ", ".join(f"`{o}`" for o in model["ops"]) or "none"
        lines += [f"One training step of `{model['config']}` ran: {ops}.", ""]
    return lines + _error_line("dcn_model", model)


def _yes(ok: bool) -> str:
    return "yes" if ok else "**no**"


def step_section(result: Mapping) -> List[str]:
    lines = ["## Training step: float32 vs mixed precision", ""]
    step = result.get("step")
    if not isinstance(step, Mapping) or "precisions" not in step:
        return lines + (_error_line("step", step) or ["Not run.", ""])
    prec = step["precisions"]
    base = prec.get("float32", {}).get("median_ms")
    rows = []
    for name, rec in prec.items():
        speed = base / rec["median_ms"] if base and rec.get("median_ms") else float("nan")
        rows.append(
            [
                name,
                rec.get("precision", ""),
                rec["median_ms"],
                rec["p90_ms"],
                rec.get("n", ""),
                f"{speed:.2f}x",
            ]
        )
    lines += [
        f"`{step['config']}`, one batch of {step['batch_size']} images from the trainer's loader,",
        "forward + backward + optimizer step (data loading not included).",
        "",
        markdown_table(["variant", "precision", "median ms", "p90 ms", "steps", "speed-up"], rows),
        "",
    ]
    return lines


def _ap(metrics: Mapping, key: str) -> object:
    value = metrics.get(key)
    return float("nan") if value is None else value


def runs_section(result: Mapping) -> List[str]:
    lines = ["## Short schedule: reference vs full model (R-50, from scratch, AMP)", ""]
    sched = result.get("schedule") or {}
    runs = result.get("runs")
    lines += _error_line("schedule", sched)
    if not isinstance(runs, list):
        return lines + (_error_line("runs", runs) or ["Not run.", ""])
    iters = sched.get("iterations")
    lines += [
        f"{iters} iterations (the longest that fitted the lease), one seed: a check that the",
        "GPU path trains and what it costs, not a result to set against the 780-iteration CPU",
        "pages.",
        "",
    ]
    classes = sorted({k[3:] for r in runs for k in (r.get("metrics") or {}) if k.startswith("AP-")})
    headers = ["model", "s / it", "training min", "final loss", "AP", "AP50", "AP75"]
    headers += [f"AP {c}" for c in classes]
    headers += ["latency ms (batch 1)", "GFLOPs", "peak GiB"]
    rows = []
    for r in runs:
        m = r.get("metrics") or {}
        if r.get("status") != "ok":
            rows.append(
                [r.get("name", "?"), f"failed: {r.get('error')}"] + [""] * (len(headers) - 2)
            )
            continue
        row = [r["name"], fmt(r.get("sec_per_iter"), 3), (r.get("train_s") or 0) / 60]
        row += [fmt(r.get("final_loss"), 3), _ap(m, "AP"), _ap(m, "AP50"), _ap(m, "AP75")]
        row += [_ap(m, f"AP-{c}") for c in classes]
        row += [r.get("latency_ms"), r.get("gflops"), fmt(r.get("peak_memory_gib"), 1)]
        rows.append(row)
    lines += [markdown_table(headers, rows), ""]
    lines += [
        "Latency: batch 1 in the training precision, median of the timed images; the",
        "`train_net.py` command of each run is in the JSON (`runs[].train_net_command`).",
        "",
    ]
    return lines


def agreement_section(result: Mapping) -> List[str]:
    lines = ["## The same weights on the GPU and on the CPU", ""]
    agr = result.get("cpu_agreement")
    if not isinstance(agr, Mapping) or "per_image" not in agr:
        return lines + (_error_line("cpu_agreement", agr) or ["Not run.", ""])
    lines += [
        f"The full model's trained weights in float32, on {agr['images']} test images: the",
        "share of the GPU's top-100 detections that the CPU reproduces (same class, IoU >= 0.9)",
        f"is at least {fmt(100 * agr['reproduced'], 1)} % per image; the largest score difference",
        f"among them is {fmt(agr['max_score_diff'], 4)}.",
        "",
    ]
    cpu, dev = agr.get("cpu_metrics"), agr.get("device_metrics")
    if isinstance(cpu, Mapping) and isinstance(dev, Mapping):
        rows = [[k, dev.get(k), cpu.get(k)] for k in ("AP", "AP50", "AP75")]
        lines += [markdown_table(["metric", "GPU (fp32 eval)", "CPU"], rows), ""]
    elif cpu:
        lines += [f"AP on the CPU: {cpu}.", ""]
    return lines


def page(result: Mapping) -> str:
    """The whole page; steps that failed or did not run say so."""
    lines: List[str] = []
    for part in (header, dcn_section, step_section, runs_section, agreement_section):
        lines += part(result)
    seconds: Dict[str, float] = result.get("step_seconds") or {}
    if seconds:
        lines += ["Seconds per step: " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()), ""]
    return "\n".join(lines).rstrip() + "\n"
