"""The race: hpsweep against Optuna alone, on full MNIST, for the same wall time.

    HPSWEEP_DATA_ROOT=../shared/data python benchmarks/race.py [--runs 3] [--budget 240] [--quick]

Each run starts both contestants one after the other (peer, hpsweep; the order alternates
from run to run), each from a fresh folder with the same budget:
- the peer, benchmarks/race_optuna_peer.py: Optuna as its examples teach (ToTensor +
  DataLoader, an objective with the pruning idiom, TPE seed 0, median pruner);
- `hpsweep-train -m sweep=mlp data=mnist` with the same sampler seed, pruner, space and epochs,
  `hydra.sweeper.timeout` set to the budget and its defaults otherwise.

From each contestant's trials (end times from its command's start, COMPLETE ones only, those
that ended within the budget): the peer's final best validation accuracy B and when the peer
reached it; when hpsweep first reached B or more. "x sooner" is the peer's time over hpsweep's.
Prints every run and the medians; writes benchmarks/results/race.json.
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

from common import load_study, write_result  # benchmarks/ is on sys.path

HERE = Path(__file__).resolve().parent


def run(args: list[str], cwd: Path, budget: float) -> datetime:
    """Run a contestant; returns its start time (every trial's end is measured from it)."""
    began = datetime.now().astimezone()
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=budget + 600)
    if proc.returncode != 0:
        raise RuntimeError(f"{args[:4]}: exit {proc.returncode}\n{proc.stderr[-3000:]}")
    return began


def peer(root: str, budget: float, folder: Path) -> list[tuple[float, float]]:
    """(seconds from the start, value) of each COMPLETE trial of the peer."""
    out = folder / "peer.json"
    script = str(HERE / "race_optuna_peer.py")
    args = [sys.executable, script, "--root", root, "--timeout", str(budget), "--out", str(out)]
    began = run(args, folder, budget)
    return sorted(
        ((datetime.fromisoformat(t["complete"]) - began).total_seconds(), t["value"])
        for t in json.loads(out.read_text())
        if t["state"] == "COMPLETE"
    )


def hpsweep(budget: float, folder: Path, extra: list[str]) -> list[tuple[float, float]]:
    args = [sys.executable, "-m", "hpsweep.train", "-m", "sweep=mlp", "data=mnist"]
    args += ["hydra.sweeper.sampler.seed=0", f"hydra.sweeper.timeout={budget}"]
    args += ["hydra.sweeper.n_trials=100000", *extra]
    began = run(args, folder, budget)
    study = load_study(folder / "multirun" / "mlp", "mlp")
    return sorted(
        ((t.datetime_complete.astimezone() - began).total_seconds(), t.value)
        for t in study.trials
        if t.state.name == "COMPLETE"
    )


def first_reaching(ends: list[tuple[float, float]], value: float) -> float | None:
    return next((s for s, v in ends if v >= value), None)


def score(peer_ends: list, ours: list, budget: float) -> dict:
    peer_ends = [(s, v) for s, v in peer_ends if s <= budget]
    ours = [(s, v) for s, v in ours if s <= budget]
    best = max(v for _, v in peer_ends)
    peer_s = first_reaching(peer_ends, best)
    ours_s = first_reaching(ours, best)
    assert peer_s is not None
    return {
        "peer_trials_complete": len(peer_ends),
        "peer_best": best,
        "peer_reached_s": peer_s,
        "hpsweep_trials_complete": len(ours),
        "hpsweep_best": max((v for _, v in ours), default=None),
        "hpsweep_reached_s": ours_s,
        "x_sooner": None if ours_s is None else peer_s / ours_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--budget", type=float, default=240.0, help="seconds per contestant")
    parser.add_argument("--hpsweep-args", nargs="*", default=[], help="extra overrides")
    parser.add_argument("--quick", action="store_true", help="one run of 120 s each")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.budget = 1, 120.0
    root = os.environ.get("HPSWEEP_DATA_ROOT")
    if root is None or not (Path(root) / "MNIST" / "raw").is_dir():
        raise SystemExit("set HPSWEEP_DATA_ROOT to the folder holding MNIST/raw")
    rows = []
    for i in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            a, b = Path(tmp) / "peer", Path(tmp) / "hpsweep"
            a.mkdir(), b.mkdir()
            started = time.perf_counter()
            if i % 2 == 0:  # alternate who goes first: drift hits both alike
                peer_ends = peer(root, args.budget, a)
                ours = hpsweep(args.budget, b, args.hpsweep_args)
            else:
                ours = hpsweep(args.budget, b, args.hpsweep_args)
                peer_ends = peer(root, args.budget, a)
            row = {"run": i, **score(peer_ends, ours, args.budget)}
            row["peer_ends"], row["hpsweep_ends"] = peer_ends, ours
            rows.append(row)
        x = row["x_sooner"]
        print(
            f"run {i}: peer best {row['peer_best']:.4f} at {row['peer_reached_s']:.1f} s "
            f"({row['peer_trials_complete']} complete); hpsweep "
            + (
                f"reached it at {row['hpsweep_reached_s']:.1f} s: {x:.1f}x sooner"
                if x is not None
                else "did not reach it"
            )
            + f" (best {row['hpsweep_best']:.4f}, {row['hpsweep_trials_complete']} complete)"
            + f" [{time.perf_counter() - started:.0f} s]",
            flush=True,
        )
    ratios = [r["x_sooner"] or 0.0 for r in rows]
    print(f"median x sooner: {statistics.median(ratios):.1f} (0: not reached)")
    write_result("race", rows, quick=args.quick, extra={"budget_s": args.budget})


if __name__ == "__main__":
    main()
