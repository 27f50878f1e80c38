"""What a measurement or a page was made on and with: the machine, the command line."""

from __future__ import annotations

import os
import platform
import shlex
from pathlib import Path
from typing import Dict, Sequence

import psutil
import torch


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (Linux), else :func:`platform.processor`."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> Dict[str, object]:
    """CPU model, cores, memory, torch / detectron2 versions, the GPU (if any), the load."""
    import detectron2

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "cpu": cpu_model(),
        "logical_cores": psutil.cpu_count(logical=True),
        "physical_cores": psutil.cpu_count(logical=False),
        "usable_cores": usable,
        "torch_threads": torch.get_num_threads(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "detectron2": getattr(detectron2, "__version__", "unknown"),
        "platform": platform.platform(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }


def shell_join(args: Sequence[object]) -> str:
    """A copy-pastable command line; values with single quotes (e.g. ``('bccd_test',)``) are
    double-quoted instead of shlex's escaped form."""
    out = []
    for arg in map(str, args):
        quoted = shlex.quote(arg)
        if quoted != arg and "'" in arg and not any(c in arg for c in '"$`\\!'):
            quoted = f'"{arg}"'
        out.append(quoted)
    return " ".join(out)
