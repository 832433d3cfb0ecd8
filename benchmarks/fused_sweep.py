"""Fused trials at sweep level (hydra.sweeper.fuse=K: a worker takes up to K trials from the
study and trains those that can share one FusedMLP as one job) against today's best unfused
setting for the `mlp` preset, n_jobs=2, through the real CLI, each run in a fresh temp dir.

    HPSWEEP_DATA_ROOT=../shared/data python benchmarks/fused_sweep.py [--quick]

Three experiments, each run with sampler seeds 0, 1, 2, settings interleaved (A B C ... A B C)
so machine noise hits all alike:
  mini     sweep=mlp, 64 trials on mnist_mini (the issue's acceptance): A n_jobs=2,
           B fuse=32, C n_jobs=2 fuse=32, E n_jobs=2 fuse=32 fuse_sampling=per_group
  mnist    sweep=mlp on full MNIST, 32 trials of 3 epochs, where training outweighs the
           per-trial cost around it: A, C and E with fuse=16
Per run: wall seconds of the command, trials/hour, COMPLETE / PRUNED / FAIL counts, epochs
trained (result.json epochs_run, summed), the best validation accuracy (study.best_value), and
at equal wall time: the best of the trials that completed within A's time (its mean, from the
first trial's start to the last trial's end; a fused sweep that ends later is cut there).
Ratios are to A: of the mean trials/hour, and per seed (run i against A's run i). A second
table splits each setting's wall time: outside the trials, training (the trials' epoch seconds
from their metrics.csv), and around training; with ceilings on x A were the last free.
--quick: one seed, mini only, 16 trials, A and E (fuse=8). Writes
benchmarks/results/fused_sweep.json.
"""

import argparse
import statistics
import tempfile
from pathlib import Path

from common import load_study, run_sweep, write_result  # benchmarks/ is on sys.path

from hpsweep.record import TrialFiles
from hydra_plugins.hpsweep_sweeper import TRIAL_DIR

PER_GROUP = "hydra.sweeper.fuse_sampling=per_group"
EXPERIMENTS = {
    "mini": (
        "sweep=mlp, 64 trials, mnist_mini",
        ["hydra.sweeper.n_trials=64"],
        {
            "A": ["hydra.sweeper.n_jobs=2"],
            "B": ["hydra.sweeper.fuse=32"],
            "C": ["hydra.sweeper.n_jobs=2", "hydra.sweeper.fuse=32"],
            "E": ["hydra.sweeper.n_jobs=2", "hydra.sweeper.fuse=32", PER_GROUP],
        },
    ),
    "mnist": (
        "sweep=mlp, 32 trials of 3 epochs, full MNIST",
        ["hydra.sweeper.n_trials=32", "data=mnist", "epochs=3"],
        {
            "A": ["hydra.sweeper.n_jobs=2"],
            "C": ["hydra.sweeper.n_jobs=2", "hydra.sweeper.fuse=16"],
            "E": ["hydra.sweeper.n_jobs=2", "hydra.sweeper.fuse=16", PER_GROUP],
        },
    ),
}
QUICK = {
    "mini": (
        "sweep=mlp, 16 trials, mnist_mini",
        ["hydra.sweeper.n_trials=16"],
        {
            "A": ["hydra.sweeper.n_jobs=2"],
            "E": ["hydra.sweeper.n_jobs=2", "hydra.sweeper.fuse=8", PER_GROUP],
        },
    )
}


def log_problems(sweep: Path) -> int:
    """WARNING and ERROR lines in the trials' train.log: run_sweep keeps no output, and a
    sweep can exit 0 with trials that went wrong."""
    return sum(
        line.count("][WARNING]") + line.count("][ERROR]")
        for log in sweep.glob("trial_*/train.log")
        for line in log.read_text(errors="replace").splitlines()
    )


def measure(experiment: str, label: str, overrides: list[str], seed: int) -> dict:
    name = f"{experiment}_{label}_{seed}"
    # a fresh dir each run: nothing (data cache aside) carries over from the run before
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        wall = run_sweep(
            folder,
            "sweep=mlp",
            f"hydra.sweeper.sampler.seed={seed}",
            f"hydra.sweeper.study_name={name}",
            *overrides,
        )
        sweep = folder / "multirun" / name
        study = load_study(sweep, name)
        states = [t.state.name for t in study.trials]
        epochs, train_s = 0, 0.0
        for t in study.trials:
            files = TrialFiles(sweep / t.user_attrs[TRIAL_DIR])
            result = files.read_result()
            epochs += result.epochs_run if result is not None else 0
            # an epoch's seconds (training and validation); a fused trial's: its share of the
            # group's, so the sum over trials is the time spent training either way
            train_s += sum(row["seconds"] for row in files.read_metrics())
        complete = states.count("COMPLETE")
        start = min(t.datetime_start for t in study.trials)
        # (seconds from the first trial's start, value) of each COMPLETE trial, as it ended
        ends = sorted(
            ((t.datetime_complete - start).total_seconds(), t.value)
            for t in study.trials
            if t.state.name == "COMPLETE"
        )
        return {
            "experiment": experiment,
            "setting": label,
            "overrides": overrides,
            "seed": seed,
            "trials": len(states),
            "wall_s": wall,
            "trials_per_hour": len(states) / wall * 3600,
            "complete": complete,
            "pruned": states.count("PRUNED"),
            "failed": states.count("FAIL"),
            "epochs": epochs,
            "train_s": train_s,
            "best_val_acc": study.best_value if complete else None,
            "log_warnings_errors": log_problems(sweep),
            "completions": ends,
            "sweep_s": max(
                (t.datetime_complete - start).total_seconds()
                for t in study.trials
                if t.datetime_complete is not None
            ),
        }


def span(values: list[float], fmt: str) -> str:
    low, high = format(min(values), fmt), format(max(values), fmt)
    return low if len(values) == 1 else f"{low}-{high}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one seed, mini only, A and E")
    args = parser.parse_args()
    experiments, seeds = (QUICK, [0]) if args.quick else (EXPERIMENTS, [0, 1, 2])
    rows, summary = [], {}
    for experiment, (title, common, settings) in experiments.items():
        print(f"\n== {experiment}: {title} ==", flush=True)
        for seed in seeds:
            for label, overrides in settings.items():
                row = measure(experiment, label, [*common, *overrides], seed)
                rows.append(row)
                best = row["best_val_acc"]
                print(
                    f"{label} seed {seed}  {' '.join(overrides):<44} {row['wall_s']:6.1f} s "
                    f"{row['trials']:4d} trials {row['trials_per_hour']:7.0f}/h "
                    f"{row['epochs']:4d} epochs  best {best if best is None else f'{best:.4f}'}"
                    f"  {row['complete']}/{row['pruned']}/{row['failed']} complete/pruned/failed"
                    f"  {row['log_warnings_errors']} log warnings/errors",
                    flush=True,
                )
        mine = [r for r in rows if r["experiment"] == experiment]
        summary[experiment] = table(title, settings, mine)
    problems = sum(r["log_warnings_errors"] for r in rows)
    print(f"\nWARNING/ERROR lines in the trials' train.log, all runs: {problems}")
    write_result("fused_sweep", rows, quick=args.quick, extra={"seeds": seeds, "summary": summary})


def table(title: str, settings: dict[str, list[str]], rows: list[dict]) -> list[dict]:
    by = {label: [r for r in rows if r["setting"] == label] for label in settings}
    base = by["A"]
    base_rate = statistics.mean(r["trials_per_hour"] for r in base)
    budget = statistics.mean(r["sweep_s"] for r in base)  # equal wall time: A's
    print(f"\n{title}; x A: ratio of mean trials/hour, and per seed (run i vs A's run i)\n")
    print(
        "| setting | wall s | trials | trials/h | x A | x A per seed | epochs "
        f"| best val acc mean | best val acc per seed | best within {budget:.1f} s "
        "| complete/pruned/failed per seed |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    summary = []
    for label, mine in by.items():
        rate = statistics.mean(r["trials_per_hour"] for r in mine)
        per_seed = [
            r["trials_per_hour"] / a["trials_per_hour"] for r, a in zip(mine, base, strict=True)
        ]
        bests = [r["best_val_acc"] for r in mine if r["best_val_acc"] is not None]
        counts = " ".join(f"{r['complete']}/{r['pruned']}/{r['failed']}" for r in mine)
        in_time = [max((v for t, v in r["completions"] if t <= budget), default=None) for r in mine]
        entry = {
            "setting": label,
            "overrides": settings[label],
            "wall_s_mean": statistics.mean(r["wall_s"] for r in mine),
            "trials_mean": statistics.mean(r["trials"] for r in mine),
            "trials_per_hour_mean": rate,
            "x_a": rate / base_rate,
            "x_a_per_seed": per_seed,
            "epochs_mean": statistics.mean(r["epochs"] for r in mine),
            "best_val_acc_mean": statistics.mean(bests) if bests else None,
            "best_val_acc_per_seed": [r["best_val_acc"] for r in mine],
            "equal_time_s": budget,
            "best_val_acc_in_equal_time_per_seed": in_time,
        }
        summary.append(entry)
        best_mean = "-" if not bests else f"{entry['best_val_acc_mean']:.4f}"
        print(
            f"| {label}: {' '.join(o.removeprefix('hydra.sweeper.') for o in settings[label])} "
            f"| {entry['wall_s_mean']:.1f} | {entry['trials_mean']:.0f} | {rate:.0f} "
            f"| {entry['x_a']:.2f} | {span(per_seed, '.2f')} | {entry['epochs_mean']:.0f} "
            f"| {best_mean} | {' '.join(f'{b:.4f}' for b in bests)} "
            f"| {' '.join('-' if b is None else f'{b:.4f}' for b in in_time)} | {counts} |"
        )
    where_time_goes(by)
    a_bests = [r["best_val_acc"] for r in base if r["best_val_acc"] is not None]
    if len(a_bests) > 1:
        print(
            f"\nA's best val acc over its {len(a_bests)} seeds: {span(a_bests, '.4f')} "
            f"(sd {statistics.stdev(a_bests):.4f}): differences within that are noise"
        )
    return summary


def where_time_goes(by: dict[str, list[dict]]) -> None:
    """Each setting's wall split three ways (means over seeds): outside the trials (process start
    to the first trial, the last trial to exit), training (epoch seconds summed over trials, per
    worker) and around it (the rest: composition, checkpoints, curves.png, test evaluation, the
    study). Then two ceilings on x A: with this setting's time around training made free and
    A's kept, and with it made free in both."""

    def parts(rows: list[dict]) -> tuple[float, float, float, float]:
        workers = next((int(o.split("=")[1]) for o in rows[0]["overrides"] if "n_jobs=" in o), 1)
        wall = statistics.mean(r["wall_s"] for r in rows)
        outside = statistics.mean(r["wall_s"] - r["sweep_s"] for r in rows)
        training = statistics.mean(r["train_s"] for r in rows) / workers
        return wall, outside, training, wall - outside - training

    a_wall, a_outside, a_training, _ = parts(by["A"])
    print(
        "\n| setting | wall s | outside trials s | training s (per worker) | around training s "
        "| ceiling x A: its around free, A's as measured | ceiling x A: around free in both |"
    )
    print("|---|---|---|---|---|---|---|")
    for label, rows in by.items():
        wall, outside, training, around = parts(rows)
        floor = outside + training
        print(
            f"| {label} | {wall:.1f} | {outside:.1f} | {training:.1f} | {around:.1f} "
            f"| {a_wall / floor:.2f} | {(a_outside + a_training) / floor:.2f} |"
        )


if __name__ == "__main__":
    main()
