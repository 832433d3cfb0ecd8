"""What every benchmark records next to its numbers: the command, the machine, the versions."""

import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).parent / "results"


def write_result(
    name: str, rows: list[dict[str, Any]], quick: bool, extra: dict | None = None
) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}{'_quick' if quick else ''}.json"
    record = {
        "benchmark": name,
        "command": " ".join(["python", *sys.argv]),
        "machine": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        **(extra or {}),
        "rows": rows,
    }
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {path}")
    return path


def run_sweep(folder: Path, *overrides: str) -> float:
    """`hpsweep-train -m ...` in `folder`; returns the process's wall seconds."""
    import subprocess
    import time

    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "hpsweep.train", "-m", *overrides],
        cwd=folder,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    return time.perf_counter() - start


def load_study(sweep_dir: Path, name: str):
    from hydra_plugins.hpsweep_sweeper import load_sweep_study

    return load_sweep_study(sweep_dir, name)
