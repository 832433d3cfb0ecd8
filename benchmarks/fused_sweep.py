"""Fused trials at sweep level: `hpsweep-train -m sweep=mlp hydra.sweeper.n_trials=64` on
mnist_mini with hydra.sweeper.fuse=K (a worker claims up to K trials from the study and trains
those that can share one FusedMLP as one job) against today's best unfused setting, n_jobs=2.

    python benchmarks/fused_sweep.py [--quick]

Settings: A n_jobs=2 (the baseline), B fuse=32, C n_jobs=2 fuse=32, D n_jobs=2 fuse=8, each
with sampler seeds 0, 1, 2, run interleaved (A B C D A B C D ...) so machine noise hits all
alike, each through the real CLI in a fresh temp dir. Per run: the process's wall seconds,
trials/hour (n_trials / wall), the study's COMPLETE / PRUNED / FAIL counts, epochs trained
(result.json epochs_run, summed) and the best validation accuracy found (study.best_value).
The table's ratios are to A: of the mean trials/hour, and per seed (run i against A's run i).
--quick: one seed, 16 trials, A and B (fuse=8) only. Writes benchmarks/results/fused_sweep.json.
"""

import argparse
import statistics
import tempfile
from pathlib import Path

from common import load_study, run_sweep, write_result  # benchmarks/ is on sys.path

from hpsweep.record import TrialFiles
from hydra_plugins.hpsweep_sweeper import TRIAL_DIR

SETTINGS = {
    "A": ["hydra.sweeper.n_jobs=2"],
    "B": ["hydra.sweeper.fuse=32"],
    "C": ["hydra.sweeper.n_jobs=2", "hydra.sweeper.fuse=32"],
    "D": ["hydra.sweeper.n_jobs=2", "hydra.sweeper.fuse=8"],
}
QUICK_SETTINGS = {"A": SETTINGS["A"], "B": ["hydra.sweeper.fuse=8"]}


def log_problems(sweep: Path) -> int:
    """WARNING and ERROR lines in the trials' train.log: run_sweep keeps no output, and a
    sweep can exit 0 with trials that went wrong."""
    return sum(
        line.count("][WARNING]") + line.count("][ERROR]")
        for log in sweep.glob("trial_*/train.log")
        for line in log.read_text(errors="replace").splitlines()
    )


def measure(label: str, overrides: list[str], seed: int, n_trials: int) -> dict:
    name = f"fused_{label}_{seed}"
    # a fresh dir each run: nothing (data cache aside) carries over from the run before
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        wall = run_sweep(
            folder,
            "sweep=mlp",
            f"hydra.sweeper.n_trials={n_trials}",
            f"hydra.sweeper.sampler.seed={seed}",
            f"hydra.sweeper.study_name={name}",
            *overrides,
        )
        sweep = folder / "multirun" / name
        study = load_study(sweep, name)
        states = [t.state.name for t in study.trials]
        epochs = 0
        for t in study.trials:
            result = TrialFiles(sweep / t.user_attrs[TRIAL_DIR]).read_result()
            epochs += result.epochs_run if result is not None else 0
        complete = states.count("COMPLETE")
        return {
            "setting": label,
            "overrides": overrides,
            "seed": seed,
            "n_trials": n_trials,
            "trials": len(states),
            "wall_s": wall,
            "trials_per_hour": n_trials / wall * 3600,
            "complete": complete,
            "pruned": states.count("PRUNED"),
            "failed": states.count("FAIL"),
            "epochs": epochs,
            "best_val_acc": study.best_value if complete else None,
            "log_warnings_errors": log_problems(sweep),
        }


def span(values: list[float], fmt: str) -> str:
    low, high = format(min(values), fmt), format(max(values), fmt)
    return low if len(values) == 1 else f"{low}-{high}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one seed, 16 trials, A and B")
    args = parser.parse_args()
    settings, seeds, n_trials = (
        (QUICK_SETTINGS, [0], 16) if args.quick else (SETTINGS, [0, 1, 2], 64)
    )
    rows = []
    for seed in seeds:
        for label, overrides in settings.items():
            row = measure(label, overrides, seed, n_trials)
            rows.append(row)
            best = row["best_val_acc"]
            print(
                f"{label} seed {seed}  {' '.join(overrides):<44} {row['wall_s']:6.1f} s "
                f"{row['trials_per_hour']:7.0f} trials/h  {row['epochs']:4d} epochs  "
                f"best {best if best is None else f'{best:.4f}'}  "
                f"{row['complete']}/{row['pruned']}/{row['failed']} complete/pruned/failed  "
                f"{row['log_warnings_errors']} log warnings/errors",
                flush=True,
            )

    by = {label: [r for r in rows if r["setting"] == label] for label in settings}
    base = by["A"]
    base_rate = statistics.mean(r["trials_per_hour"] for r in base)
    summary = []
    print(
        f"\n{n_trials} trials, sweep=mlp on mnist_mini, seeds {seeds}; x A: ratio of mean "
        "trials/hour, and per seed (run i vs A's run i)\n"
    )
    print(
        "| setting | wall s | trials/h | x A | x A per seed | epochs | best val acc mean "
        "| best val acc per seed | complete/pruned/failed per seed |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for label, mine in by.items():
        rate = statistics.mean(r["trials_per_hour"] for r in mine)
        per_seed = [
            r["trials_per_hour"] / a["trials_per_hour"] for r, a in zip(mine, base, strict=True)
        ]
        bests = [r["best_val_acc"] for r in mine if r["best_val_acc"] is not None]
        counts = " ".join(f"{r['complete']}/{r['pruned']}/{r['failed']}" for r in mine)
        entry = {
            "setting": label,
            "overrides": settings[label],
            "wall_s_mean": statistics.mean(r["wall_s"] for r in mine),
            "trials_per_hour_mean": rate,
            "x_a": rate / base_rate,
            "x_a_per_seed": per_seed,
            "epochs_mean": statistics.mean(r["epochs"] for r in mine),
            "best_val_acc_mean": statistics.mean(bests) if bests else None,
            "best_val_acc_per_seed": [r["best_val_acc"] for r in mine],
        }
        summary.append(entry)
        best_mean = "-" if not bests else f"{entry['best_val_acc_mean']:.4f}"
        print(
            f"| {label}: {' '.join(o.removeprefix('hydra.sweeper.') for o in settings[label])} "
            f"| {entry['wall_s_mean']:.1f} | {rate:.0f} | {entry['x_a']:.2f} "
            f"| {span(per_seed, '.2f')} | {entry['epochs_mean']:.0f} | {best_mean} "
            f"| {' '.join(f'{b:.4f}' for b in bests)} | {counts} |"
        )
    a_bests = [r["best_val_acc"] for r in base if r["best_val_acc"] is not None]
    a_spread = max(a_bests) - min(a_bests) if a_bests else None
    if a_spread is not None:
        sd = f", sd {statistics.stdev(a_bests):.4f}" if len(a_bests) > 1 else ""
        print(
            f"\nA's best val acc over its {len(a_bests)} seed(s): {span(a_bests, '.4f')} "
            f"(spread {a_spread:.4f}{sd}): differences in best val acc within that are noise"
        )
    problems = sum(r["log_warnings_errors"] for r in rows)
    print(f"WARNING/ERROR lines in the trials' train.log, all runs: {problems}")
    write_result(
        "fused_sweep",
        rows,
        quick=args.quick,
        extra={"n_trials": n_trials, "seeds": seeds, "summary": summary, "a_spread": a_spread},
    )


if __name__ == "__main__":
    main()
