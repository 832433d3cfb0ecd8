"""Sweep speed: seconds per trial spent outside training, and trials/hour with 1 vs 2 workers.

    python benchmarks/sweep_speed.py [--quick]

1. Per-trial overhead: a sweep of trials that each train one tiny epoch (64 images), so nearly
   all their time is the sweep's own: config composition, study ask/tell, trial dir files,
   checkpoints, curves.png, the test-set report. Measured with n_jobs 1 and 2.
2. Parallel scaling: the same 20 trials (the `mlp` preset's widths x batch sizes as a grid, at
   one learning rate: identical work in every run) with 1 worker (all cores, the default, and
   1 thread, for reference), 2 workers x cores/2 threads (the default), and 2 workers x all
   cores (oversubscribed).

Times come from the study (trial start/complete) and each trial's result.json; the runs go one
after the other in this process, so their ratios are side by side. Writes
benchmarks/results/sweep_speed.json.
"""

import argparse
import json
import os
import tempfile
from pathlib import Path

from common import load_study, run_sweep, write_result  # benchmarks/ is on sys.path


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
    training = sum(
        json.loads((sweep / t.user_attrs["trial_dir"] / "result.json").read_text())["wall_time_s"]
        for t in trials
    )
    return {
        "trials": len(trials),
        "process_seconds": process_seconds,
        "startup_seconds": process_seconds - (last - first).total_seconds(),
        "span_seconds": (last - first).total_seconds(),
        "training_seconds": training,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer trials")
    args = parser.parse_args()
    n_overhead = 10 if args.quick else 30
    epochs = 2 if args.quick else 4
    rows = []
    cores = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
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
            print(f"  {label:<24} {per_hour:8.0f} trials/h  {per_hour / base:4.2f}x", flush=True)
    write_result("sweep_speed", rows, quick=args.quick)


if __name__ == "__main__":
    main()
