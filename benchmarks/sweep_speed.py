"""Sweep speed: seconds per trial spent outside training, and trials/hour with 1 vs 2 workers.

    python benchmarks/sweep_speed.py [--quick] [--part overhead|scaling|around]
                                     [--baseline REV] [--rounds N]

1. Per-trial overhead: a sweep of trials that each train one tiny epoch (64 images), so nearly
   all their time is the sweep's own: config composition, study ask/tell, trial dir files,
   checkpoints, curves.png, the test-set report. Measured with n_jobs 1 and 2.
2. Parallel scaling: the same 20 trials (the `mlp` preset's widths x batch sizes as a grid, at
   one learning rate: identical work in every run) with 1 worker (all cores, the default, and
   1 thread, for reference), 2 workers x cores/2 threads (the default), and 2 workers x all
   cores (oversubscribed).

3. Around training (BENCHMARKS.md sections 10 and 12): a 64-trial sweep of the `mlp` preset
   on mnist_mini (5 epochs at most, median pruning, sampler seed 0), n_jobs 1 and 2, for this
   checkout and, with --baseline, for REV side by side (A B A B, N rounds). Its wall time is
   split: the start (command to first trial), training (every trial's epoch seconds from its
   metrics.csv, per worker), the end (last trial to the command's return: the last figures
   are drawn then) and the rest, around training, given per trial and worker. Steady: the
   same per trial once a worker runs, its first trial (which imports the training code, once
   per worker) left out.

Times come from the study (trial start/complete) and each trial's result.json; the runs go one
after the other in this process, so their ratios are side by side. Writes
benchmarks/results/sweep_speed.json (sweep_speed_around.json for --part around).
"""

import argparse
import itertools
import os
import statistics
import tempfile
from datetime import datetime
from pathlib import Path

from common import (  # benchmarks/ is on sys.path
    checkouts,
    load_study,
    run_sweep,
    run_train,
    write_result,
)

from hpsweep.record import TrialFiles


def measure(folder: Path, name: str, *overrides: str) -> dict:
    process_seconds = run_sweep(
        folder,
        "sweep=mlp",
        "hydra/sweeper/pruner=none",
        f"hydra.sweeper.study_name={name}",
        *overrides,
    )
    sweep = folder / "multirun" / name
    trials = load_study(sweep, name).trials
    first = min(t.datetime_start for t in trials)
    last = max(t.datetime_complete for t in trials)
    training = sum(files(sweep, t).read_result().wall_time_s for t in trials)
    return {
        "trials": len(trials),
        "process_seconds": process_seconds,
        "startup_seconds": process_seconds - (last - first).total_seconds(),
        "span_seconds": (last - first).total_seconds(),
        "training_seconds": training,
    }


def parts_overhead_and_scaling(quick: bool, part: str) -> list[dict]:
    n_overhead = 10 if quick else 30
    epochs = 2 if quick else 4
    rows = []
    cores = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if part in ("overhead", "all"):
            print(f"per-trial overhead: {n_overhead} trials of one 64-image epoch", flush=True)
            for n_jobs in (1, 2):
                r = measure(
                    folder,
                    f"overhead{n_jobs}",
                    f"hydra.sweeper.n_trials={n_overhead}",
                    f"hydra.sweeper.n_jobs={n_jobs}",
                    "data.train_size=64",
                    "data.val_size=64",
                    "batch_size=64",
                    "epochs=1",
                )
                outside = (r["span_seconds"] * n_jobs - r["training_seconds"]) / r["trials"]
                row = {
                    "measure": "per_trial_overhead",
                    "n_jobs": n_jobs,
                    **r,
                    "outside_training_s_per_trial": outside,
                    "wall_s_per_trial": r["span_seconds"] / r["trials"],
                }
                rows.append(row)
                print(
                    f"  n_jobs={n_jobs}: {outside:.3f} s/trial outside training per worker, "
                    f"{row['wall_s_per_trial']:.3f} s/trial wall, process start "
                    f"{r['startup_seconds']:.1f} s once",
                    flush=True,
                )

        if part in ("scaling", "all"):
            print(
                f"parallel scaling: 20 trials x {epochs} epochs on mnist_mini, {cores} cores",
                flush=True,
            )
            grid = [
                "hydra/sweeper/sampler=grid",
                "hydra.sweeper.n_trials=20",
                "model.hidden_sizes=choice(16,32,64,128,256)",
                "batch_size=choice(32,64,128,256)",
                "optimizer.lr=0.001",
                f"epochs={epochs}",
            ]
            base = None
            for label, n_jobs, threads in (
                ("1 worker x all cores", 1, None),
                ("1 worker x 1 thread", 1, 1),
                ("2 workers x cores/2", 2, None),
                ("2 workers x all cores", 2, cores),
            ):
                # one worker runs trials in the sweep's own process: its threads are num_threads
                extra = [] if threads is None else [f"hydra.sweeper.threads_per_job={threads}"]
                if n_jobs == 1 and threads is not None:
                    extra = [f"num_threads={threads}"]
                r = measure(
                    folder, f"scaling{len(rows)}", *grid, f"hydra.sweeper.n_jobs={n_jobs}", *extra
                )
                per_hour = r["trials"] / r["span_seconds"] * 3600
                base = base or per_hour
                rows.append(
                    {
                        "measure": "parallel_scaling",
                        "setup": label,
                        "n_jobs": n_jobs,
                        **r,
                        "trials_per_hour": per_hour,
                        "x_one_worker": per_hour / base,
                    }
                )
                print(
                    f"  {label:<24} {per_hour:8.0f} trials/h  {per_hour / base:4.2f}x", flush=True
                )
    return rows


def around_training(src: Path, n_jobs: int, seed: int = 0) -> dict:
    """A 64-trial mnist_mini sweep with `src`'s code; its wall time split (seconds)."""
    with tempfile.TemporaryDirectory() as tmp:
        folder, name = Path(tmp), f"around{n_jobs}"
        args = ["-m", "sweep=mlp", "hydra.sweeper.n_trials=64", f"hydra.sweeper.n_jobs={n_jobs}"]
        args += [f"hydra.sweeper.sampler.seed={seed}", f"hydra.sweeper.study_name={name}"]
        began = datetime.now().astimezone()
        wall = run_train(src, folder, *args)
        sweep = folder / "multirun" / name
        trials = load_study(sweep, name).trials
        trained = {  # each trial's epoch seconds (training and validation)
            t.number: sum(
                row["seconds"]
                for row in TrialFiles(sweep / t.user_attrs["trial_dir"]).read_metrics()
            )
            for t in trials
        }
    first = min(t.datetime_start for t in trials).astimezone()
    last = max(t.datetime_complete for t in trials).astimezone()
    startup = (first - began).total_seconds()
    span = (last - first).total_seconds()
    training = sum(trained.values())
    around = span - training / n_jobs
    return {
        "n_jobs": n_jobs,
        "trials": len(trials),
        "wall_s": wall,
        "start_s": startup,
        "training_s_per_worker": training / n_jobs,
        "end_s": wall - startup - span,
        "around_s": around,
        "around_s_per_trial": around * n_jobs / len(trials),
        "steady_s_per_trial": steady_around(trials, trained),
        "trials_per_hour": len(trials) / wall * 3600,
    }


def files(sweep: Path, trial) -> TrialFiles:
    return TrialFiles(sweep / trial.user_attrs["trial_dir"])


def steady_around(trials: list, trained: dict[int, float]) -> float:
    """Seconds around training per trial once a worker runs: from each trial's start to its
    worker's next trial's start, less the trial's epochs, averaged over every trial but each
    worker's first (which also imports torch and the training code, once per worker: the
    start-up that around_s_per_trial spreads over the sweep) and last (no next start)."""
    by_worker: dict[str, list] = {}
    for t in trials:
        by_worker.setdefault(t.user_attrs["worker"], []).append(t)
    cycles = []
    for own in by_worker.values():
        own.sort(key=lambda t: t.datetime_start)
        for t, after in itertools.pairwise(own[1:]):
            cycles.append(
                (after.datetime_start - t.datetime_start).total_seconds() - trained[t.number]
            )
    return statistics.mean(cycles)


def part_around(baseline: str | None, rounds: int) -> list[dict]:
    keys = ("wall_s", "start_s", "training_s_per_worker", "around_s", "end_s")
    keys += ("around_s_per_trial", "steady_s_per_trial", "trials_per_hour")
    rows = []
    with checkouts(baseline) as sources:
        runs: dict[tuple[str, int], list[dict]] = {}
        for _ in range(rounds):
            for n_jobs in (1, 2):
                for name, src in sources.items():  # A B A B: drift hits both alike
                    r = around_training(src, n_jobs)
                    runs.setdefault((name, n_jobs), []).append(r)
                    print(f"  {name}, n_jobs={n_jobs}: " + ", ".join(
                        f"{k} {r[k]:.3f}" for k in keys), flush=True)  # fmt: skip
    print(f"{'checkout':28} n_jobs " + " ".join(f"{k:>22}" for k in keys))
    for (name, n_jobs), measured in runs.items():
        medians = {k: statistics.median(r[k] for r in measured) for k in keys}
        rows.append({"checkout": name, "n_jobs": n_jobs, "median": medians, "rounds": measured})
        print(f"{name:28} {n_jobs:6} " + " ".join(f"{medians[k]:>22.3f}" for k in keys))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer trials")
    parser.add_argument("--part", choices=("overhead", "scaling", "around", "all"), default="all")
    parser.add_argument("--baseline", help="around: a commit to compare with, side by side")
    parser.add_argument("--rounds", type=int, default=2, help="around: rounds, A B A B")
    args = parser.parse_args()
    if args.part == "around":
        rows = part_around(args.baseline, args.rounds)
        write_result("sweep_speed_around", rows, quick=False)
        return
    rows = parts_overhead_and_scaling(args.quick, args.part)
    if args.part == "all":
        rows += part_around(args.baseline, 1 if args.quick else args.rounds)
    write_result("sweep_speed", rows, quick=args.quick)


if __name__ == "__main__":
    main()
