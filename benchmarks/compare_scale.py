"""Reading a big sweep: `load_trials` and `hpsweep compare` on 1,000 and 10,000 trials.

    python benchmarks/compare_scale.py [--quick] [--before SRC]

Each size is a synthetic sweep dir of files only (no journal): a small real sweep runs first
(3 trials of `sweep=mlp`), and its trial_0000 is the template for every trial, with its own
parameters, values and job number written into config.yaml, overrides.yaml and hydra.yaml as
Hydra writes them, result.json and metrics.csv by hpsweep.record's own writers; every 23rd
trial is PRUNED and every 97th FAIL. Sizes 1,000 and 10,000 (--quick: 200 and 1,000); the data
is built under /tmp (--data) once and reused by later runs.

Per size, each the best of --repeats, page cache warm:
- json floor: the trial dirs' result.json read with `json` alone, nothing else (in-process);
- load_trials: in a fresh process, the call alone (the modules it imports when called, pandas
  first, imported before the clock starts);
- compare: `hpsweep compare SWEEP_DIR` as a subprocess, process start included.
load_trials and compare each twice: "first", the sweep's first read (hpsweep's read cache
emptied before each repeat), and "again", a later read with the cache there and no file
changed (a user opening a sweep again, or `compare --watch` between trials). The cache lives
in --data/read-cache for these runs, not in ~/.cache.
`--before SRC` times the same with another source tree (e.g. a copy of src/ from before a
change) on PYTHONPATH, side by side, up to --before-max trials (the old code took a minute per
1,000). Writes benchmarks/results/compare_scale.json.
"""

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import run_sweep, write_result  # benchmarks/ is on sys.path

from hpsweep.record import Status, TrialFiles, TrialResult

DATA = Path(tempfile.gettempdir()) / "hpsweep-compare-scale"
DATA_VERSION = 1  # bump when what build() writes changes: older data is then built anew
EPOCHS = 3
TEMPLATE_PARAMS = ("model.hidden_sizes", "optimizer.lr", "batch_size")


def template_sweep(folder: Path) -> Path:
    """A small real sweep, files only: the template for the synthetic trials."""
    sweep = folder / "multirun" / "mlp"
    if not (sweep / "trial_0000" / "result.json").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        run_sweep(
            folder,
            "sweep=mlp",
            "hydra.sweeper.n_trials=3",
            f"epochs={EPOCHS}",
            "data.train_size=2000",
            "data.val_size=500",
        )
    return sweep


def trial_files(template: Path, number: int, rng: random.Random) -> dict[str, str]:
    """The template trial's .hydra files for trial `number`, with its own parameters: each
    override `key=old` becomes `key=new` wherever Hydra wrote it (overrides.yaml, hydra.yaml's
    task overrides and override_dirname), each config value likewise, and the job's number,
    id and subdir are the trial's."""
    hydra_dir = template / ".hydra"
    overrides = [
        line[2:] for line in (hydra_dir / "overrides.yaml").read_text().splitlines() if line
    ]
    old = dict(o.split("=", 1) for o in overrides if o.split("=", 1)[0] in TEMPLATE_PARAMS)
    new = {
        "model.hidden_sizes": str(rng.choice([16, 32, 64, 128, 256])),
        "optimizer.lr": repr(10 ** rng.uniform(-4, -1)),
        "batch_size": str(rng.choice([32, 64, 128, 256])),
    }
    texts = {name: (hydra_dir / name).read_text() for name in ("overrides.yaml", "hydra.yaml")}
    for key, value in old.items():
        for name, text in texts.items():
            texts[name] = text.replace(f"{key}={value}", f"{key}={new[key]}")
    name = f"trial_{number:04d}"
    hydra = texts["hydra.yaml"]
    hydra = re.sub(r"^    num: \d+$", f"    num: {number}", hydra, count=1, flags=re.M)
    hydra = re.sub(r"^    id: (\w+)_\d+$", rf"    id: \g<1>_{number}", hydra, count=1, flags=re.M)
    texts["hydra.yaml"] = hydra.replace(template.name, name)
    config = (hydra_dir / "config.yaml").read_text()
    for key, value in old.items():
        *_, leaf = key.split(".")
        indent = "  " * key.count(".")
        line = re.compile(rf"^{indent}{leaf}: {re.escape(value)}$", re.M)
        config = line.sub(f"{indent}{leaf}: {new[key]}", config, count=1)
    texts["config.yaml"] = config
    return texts


def build(sweep: Path, n: int, template: Path) -> None:
    rng = random.Random(n)
    base = TrialFiles(template).read_result()
    assert base is not None
    (sweep.parent).mkdir(parents=True, exist_ok=True)
    sweep.mkdir()
    (sweep / "multirun.yaml").write_bytes((template.parent / "multirun.yaml").read_bytes())
    real_fsync = os.fsync
    os.fsync = lambda fd: None  # the writers' fsync, 20,000 times, would only slow the build
    try:
        for number in range(n):
            name = f"trial_{number:04d}"
            trial = sweep / name
            (trial / ".hydra").mkdir(parents=True)
            for file, text in trial_files(template, number, rng).items():
                (trial / ".hydra" / file).write_text(text)
            status = Status.COMPLETE
            epochs = EPOCHS
            if number % 97 == 5:
                status, epochs = Status.FAIL, 1
            elif number % 23 == 3:
                status, epochs = Status.PRUNED, 2
            history = []
            for epoch in range(1, epochs + 1):
                acc = rng.uniform(0.5, 0.95)
                history.append(
                    {
                        "epoch": epoch,
                        "train_loss": rng.uniform(0.1, 2.0),
                        "train_acc": rng.uniform(0.5, 0.99),
                        "val_loss": rng.uniform(0.1, 2.0),
                        "val_acc": acc,
                        "lr": 0.001,
                        "seconds": rng.uniform(0.5, 3.0),
                    }
                )
            files = TrialFiles(trial)
            files.write_metrics(history)
            best = max(history, key=lambda row: row["val_acc"])
            failed = status is Status.FAIL
            result = TrialResult(
                **{
                    **base.__dict__,
                    "status": status,
                    "reason": "ValueError: the loss is nan" if failed else None,
                    "value": None if failed else best["val_acc"],
                    "best_epoch": None if failed else int(best["epoch"]),
                    "best_val_acc": None if failed else best["val_acc"],
                    "best_val_loss": None if failed else best["val_loss"],
                    "test_acc": None if failed else rng.uniform(0.5, 0.95),
                    "test_loss": None if failed else rng.uniform(0.1, 2.0),
                    "epochs_run": epochs,
                    "wall_time_s": rng.uniform(1.0, 30.0),
                }
            )
            files.write_result(result)
    finally:
        os.fsync = real_fsync


def sweep_of(n: int, data: Path, template: Path) -> Path:
    sweep = data / f"sweep_{n}"
    done = data / f"sweep_{n}.built"  # next to the sweep, not in it: the sweep is files only
    if done.is_file() and done.read_text() == str(DATA_VERSION) and sweep.is_dir():
        return sweep
    if sweep.exists():
        subprocess.run(["rm", "-rf", str(sweep)], check=True)
    start = time.perf_counter()
    build(sweep, n, template)
    done.write_text(str(DATA_VERSION))
    print(f"  built {n} trials in {time.perf_counter() - start:.1f} s: {sweep}", flush=True)
    return sweep


def json_floor(sweep: Path) -> float:
    start = time.perf_counter()
    rows = [json.loads((d / "result.json").read_bytes()) for d in sweep.iterdir() if d.is_dir()]
    assert rows
    return time.perf_counter() - start


LOAD_TRIALS = """
import sys, time
import pandas, hydra.errors, optuna.distributions  # what load_trials imports when called
from hpsweep.results import load_trials
start = time.perf_counter()
trials = load_trials(sys.argv[1])
print(time.perf_counter() - start, len(trials))
"""


def environment(src: Path | None, cache: Path) -> dict[str, str]:
    env = dict(os.environ, HPSWEEP_CACHE_DIR=str(cache))
    if src is not None:  # shadows the installed (editable) hpsweep
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(src), env.get("PYTHONPATH")]))
    return env


def load_trials_seconds(sweep: Path, src: Path | None, n: int, cache: Path) -> float:
    proc = subprocess.run(
        [sys.executable, "-c", LOAD_TRIALS, str(sweep)],
        env=environment(src, cache),
        capture_output=True,
        text=True,
        check=True,
    )
    seconds, rows = proc.stdout.split()
    assert int(rows) == n, (rows, n)
    return float(seconds)


def compare_seconds(sweep: Path, src: Path | None, n: int, cache: Path) -> float:
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "hpsweep.cli", "compare", str(sweep), "--format", "csv"],
        env=environment(src, cache),
        capture_output=True,
        text=True,
        check=True,
    )
    seconds = time.perf_counter() - start
    assert len(proc.stdout.splitlines()) == 11, proc.stdout  # header and --top 10
    return seconds


def best(repeats: int, measure, *args) -> float:
    return min(measure(*args) for _ in range(repeats))


def first_read(measure, sweep: Path, src: Path | None, n: int, cache: Path) -> float:
    shutil.rmtree(cache, ignore_errors=True)
    return measure(sweep, src, n, cache)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 and 1,000 trials")
    parser.add_argument("--sizes", type=int, nargs="+", help="trial counts (default by --quick)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data", type=Path, default=DATA, help=f"default {DATA}")
    parser.add_argument("--before", type=Path, help="a source tree to time side by side")
    parser.add_argument("--before-max", type=int, default=1000, help="largest size for --before")
    args = parser.parse_args()
    sizes = args.sizes or ([200, 1000] if args.quick else [1000, 10000])
    args.data.mkdir(parents=True, exist_ok=True)
    template = template_sweep(args.data / "template") / "trial_0000"
    cache = args.data / "read-cache"
    rows = []
    for n in sizes:
        sweep = sweep_of(n, args.data, template)
        json_floor(sweep)  # warms the page cache for everything below
        row = {
            "trials": n,
            "json_floor_s": best(args.repeats, json_floor, sweep),
            "load_trials_first_s": best(
                args.repeats, first_read, load_trials_seconds, sweep, None, n, cache
            ),
            "load_trials_again_s": best(args.repeats, load_trials_seconds, sweep, None, n, cache),
            "compare_first_s": best(
                args.repeats, first_read, compare_seconds, sweep, None, n, cache
            ),
            "compare_again_s": best(args.repeats, compare_seconds, sweep, None, n, cache),
        }
        for when in ("first", "again"):
            row[f"load_trials_{when}_x_floor"] = row[f"load_trials_{when}_s"] / row["json_floor_s"]
        if args.before is not None and n <= args.before_max:
            row["before_load_trials_s"] = first_read(
                load_trials_seconds, sweep, args.before, n, cache
            )
            row["before_compare_s"] = first_read(compare_seconds, sweep, args.before, n, cache)
        rows.append(row)
        print(f"{n:>6} trials: {row}", flush=True)
    print()
    print(
        f"{'trials':>7} {'json floor':>11} {'load_trials first':>18} {'again':>15} "
        f"{'compare first':>14} {'again':>7}"
        + ("  before: load_trials, compare" if args.before else "")
    )
    for row in rows:
        before = (
            f"  {row['before_load_trials_s']:>8.2f}s {row['before_compare_s']:>8.2f}s"
            if "before_compare_s" in row
            else ""
        )
        print(
            f"{row['trials']:>7} {row['json_floor_s']:>10.3f}s "
            f"{row['load_trials_first_s']:>7.3f}s ({row['load_trials_first_x_floor']:>5.1f}x) "
            f"{row['load_trials_again_s']:>6.3f}s ({row['load_trials_again_x_floor']:>4.1f}x) "
            f"{row['compare_first_s']:>13.2f}s {row['compare_again_s']:>6.2f}s" + before
        )
    extra = {"before": str(args.before)} if args.before else {}
    write_result("compare_scale", rows, quick=args.quick, extra=extra)


if __name__ == "__main__":
    main()
