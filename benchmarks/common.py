"""What every benchmark records next to its numbers: the command, the machine, the versions."""

import contextlib
import json
import os
import platform
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).parent / "results"
REPO = Path(__file__).resolve().parent.parent


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
    """`hpsweep-train -m ...` in `folder`, with the installed code; the process's wall seconds."""
    return run_train(None, folder, "-m", *overrides)


def load_study(sweep_dir: Path, name: str):
    from hydra_plugins.hpsweep_sweeper import load_sweep_study

    return load_sweep_study(sweep_dir, name)


@contextlib.contextmanager
def checkouts(baseline: str | None) -> Iterator[dict[str, Path]]:
    """{name: src folder}: this checkout's, and (with `baseline`, a git revision) that
    revision's, checked out into a temporary worktree. Put a src folder first on PYTHONPATH to
    run its code in this venv, against the same torch."""
    import subprocess
    import tempfile

    sources = {"this checkout": REPO / "src"}
    with tempfile.TemporaryDirectory() as tmp:
        if baseline is None:
            yield sources
            return
        into = Path(tmp) / "base"
        git = ["git", "-C", str(REPO), "worktree"]
        subprocess.run([*git, "add", "--detach", str(into), baseline], check=True)
        try:
            yield {**sources, f"baseline {baseline}": into / "src"}
        finally:
            subprocess.run([*git, "remove", "--force", str(into)], check=False)


def run_train(src: Path | None, cwd: Path, *args: str, ok: bool = True) -> float:
    """`python -m hpsweep.train ARGS` with `src`'s code first on PYTHONPATH (None: the
    installed code); its wall seconds. Raises if it exits 0 when `ok` is False, or otherwise
    when `ok` is True."""
    import subprocess
    import time

    env = {**os.environ, **({"PYTHONPATH": str(src)} if src is not None else {})}
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "hpsweep.train", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - start
    if (proc.returncode == 0) != ok:
        raise RuntimeError(f"{args}: exit {proc.returncode}\n{proc.stderr[-3000:]}")
    return seconds
