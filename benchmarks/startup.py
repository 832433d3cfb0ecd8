"""Start-up: what a command costs before the work it was asked for, side by side with another
commit.

    python benchmarks/startup.py [--rounds 3] [--baseline REV] [--quick]

Each round runs, for this checkout and (with --baseline) for REV checked out into a temporary
worktree, one after the other (A B A B ...):
- `hpsweep-train --help`: wall seconds;
- a refused command (`batch_size=0`): wall seconds to its one line;
- a single 1-epoch mnist_mini run: wall seconds minus the training's own `wall_time_s`;
- a 1-trial sweep (`-m sweep=mlp`, 1 epoch): seconds from the command's start to its trial's
  start in the study;
- for reference, the floor under any run: a three-line PyTorch script that takes one Adam
  step (import torch, which this torch's optimizers follow with `torch._dynamo`), wall seconds.
A checkout's code is put first on PYTHONPATH, so both run in this venv, against the same
torch. Prints the medians and each round's numbers; writes benchmarks/results/startup.json.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from common import checkouts, run_train, write_result  # benchmarks/ is on sys.path

FAST = ["data.train_size=2000", "data.val_size=500", "epochs=1"]


def measure(src: Path) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        row = {"help_s": run_train(src, cwd, "--help")}
        row["refused_s"] = run_train(src, cwd, "batch_size=0", ok=False)
        run_s = run_train(src, cwd, "hydra.run.dir=run", *FAST)
        wall = json.loads((cwd / "run" / "result.json").read_text())["wall_time_s"]
        row["single_run_outside_training_s"] = run_s - wall
        began = datetime.now().astimezone()
        run_train(src, cwd, "-m", "sweep=mlp", "hydra.sweeper.n_trials=1", *FAST)
        row["sweep_to_first_trial_s"] = first_trial_start(src, cwd / "multirun" / "mlp", began)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", ONE_ADAM_STEP], check=True)
    row["one_adam_step_script_s"] = time.perf_counter() - start
    return row


ONE_ADAM_STEP = """
import torch
model = torch.nn.Linear(3, 2)
optimizer = torch.optim.Adam(model.parameters())
model(torch.ones(1, 3)).sum().backward()
optimizer.step()
"""


def first_trial_start(src: Path, sweep: Path, began: datetime) -> float:
    code = (
        "import sys; from hydra_plugins.hpsweep_sweeper import load_sweep_study as l; "
        f"print(l({str(sweep)!r}, 'mlp').trials[0].datetime_start.isoformat())"
    )
    env = {**os.environ, "PYTHONPATH": str(src)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    started = datetime.fromisoformat(out.stdout.strip()).astimezone()  # local time, naive
    return (started - began).total_seconds()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", help="a commit to compare with, side by side")
    parser.add_argument("--quick", action="store_true", help="one round")
    args = parser.parse_args()
    if args.quick:
        args.rounds = 1
    with checkouts(args.baseline) as sources:
        rounds: dict[str, list[dict[str, float]]] = {name: [] for name in sources}
        for _ in range(args.rounds):
            for name, src in sources.items():  # A B A B: drift hits both alike
                rounds[name].append(measure(src))
    rows = []
    keys = list(next(iter(rounds.values()))[0])
    print(f"{'':22}" + "".join(f"{k:>32}" for k in keys))
    for name, measured in rounds.items():
        medians = {k: statistics.median(r[k] for r in measured) for k in keys}
        rows.append({"checkout": name, "median": medians, "rounds": measured})
        print(f"{name:22}" + "".join(f"{medians[k]:>31.2f}s" for k in keys))
        for r in measured:
            print(f"{'  round':22}" + "".join(f"{r[k]:>31.2f}s" for k in keys))
    write_result("startup", rows, quick=args.quick)


if __name__ == "__main__":
    main()
