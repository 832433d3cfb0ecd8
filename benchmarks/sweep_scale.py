"""The sweeper at scale: its cost per trial, its resume and its end as a study grows to
100, 1,000 and 10,000 trials.

    python benchmarks/sweep_scale.py [--quick] [--trials K] [--before SRC]

For each size N, a journal of N finished trials is written straight into a sweep dir (records
as the sweeper writes them: a trial created, its two parameters, its trial_dir, overrides and
worker attributes, its state; every 23rd trial PRUNED, every 97th FAIL, every 499th lost its
worker and was retried in the same dir), then a trivial Hydra app (its task returns x**2 + y**2
at once, random sampler, n_jobs=1) runs the same sweep command with n_trials=N+K, so it
continues the study for K more trials (default 40). Since the task takes microseconds, all of a
trial's time is the sweeper's (ask, Hydra's job setup, tell, progress line). Per size:
- ms/trial: the mean gap between the new trials' starts (the first 3 left out as warm-up), and
  the median gap;
- resume s: from launching the command to the first new trial's start (process start, imports
  and Hydra included; compare the sizes, not the absolute time);
- end s: from the last trial's completion to the process's exit (the report, the final
  failure check, interpreter exit);
- replay s: opening the journal in this process (Optuna replays every record).
Sizes 100, 1,000, 10,000 (--quick: 100 and 1,000). The pre-filled journals are built under
/tmp (--data) once and copied for each run. `--before SRC` runs the sweeps with another copy of
the plugin first on PYTHONPATH (SRC holding hydra_plugins/hpsweep_sweeper, e.g. a copy of src/
from before a change). Writes benchmarks/results/sweep_scale.json.
"""

import argparse
import itertools
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
from common import write_result  # benchmarks/ is on sys.path
from optuna.storages import JournalStorage
from optuna.storages.journal import BaseJournalBackend
from optuna.study import StudyDirection
from optuna.trial import TrialState

from hydra_plugins.hpsweep_sweeper import (
    FAIL_REASON,
    JOURNAL_FILE,
    MAX_RETRIES,
    OVERRIDES,
    RETRY_OF,
    SEARCH_SPACE,
    TRIAL_DIR,
    WORKER,
    load_sweep_study,
    parse_search_space,
)

DATA = Path(tempfile.gettempdir()) / "hpsweep-sweep-scale"
DATA_VERSION = 2  # bump when what build() writes changes: older journals are then built anew
STUDY = "scale"
PARAMS = {"x": "interval(-5.0, 5.0)", "y": "interval(-5.0, 5.0)"}

CONFIG = """\
defaults:
  - override hydra/sweeper: hpsweep
  - override hydra/sweeper/sampler: random

hydra:
  sweeper:
    direction: minimize
    study_name: scale
    n_trials: 10
    params:
      x: interval(-5.0, 5.0)
      y: interval(-5.0, 5.0)

x: 0
y: 0
"""

APP = """\
import hydra


@hydra.main(version_base=None, config_path="conf", config_name="config")
def task(cfg):
    return float(cfg.x**2 + cfg.y**2)


if __name__ == "__main__":
    task()
"""


class MemoryBackend(BaseJournalBackend):
    """Journal records in a list: building 10,000 trials through the file (an fsync per
    record) would take minutes."""

    def __init__(self) -> None:
        self.logs: list[dict[str, Any]] = []

    def read_logs(self, log_number_from: int) -> Iterator[dict[str, Any]]:
        yield from self.logs[log_number_from:]

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        self.logs.extend(logs)


def build(n: int, path: Path) -> None:
    """A journal of `n` finished trials (plus the retries), record by record as a sweep writes."""
    space = parse_search_space(PARAMS, [])
    backend = MemoryBackend()
    storage = JournalStorage(backend)
    study = storage.create_new_study([StudyDirection.MINIMIZE], STUDY)
    storage.set_study_user_attr(study, SEARCH_SPACE, space.signature())
    storage.set_study_user_attr(study, MAX_RETRIES, 2)
    rng = random.Random(n)
    number = 0

    def trial(params: dict[str, float], trial_dir: str, retry_of: int | None) -> int:
        nonlocal number
        trial_id = storage.create_new_trial(study)
        for name, distribution in space.distributions.items():
            storage.set_trial_param(
                trial_id, name, distribution.to_internal_repr(params[name]), distribution
            )
        if retry_of is not None:
            storage.set_trial_user_attr(trial_id, RETRY_OF, retry_of)
        storage.set_trial_user_attr(trial_id, TRIAL_DIR, trial_dir)
        storage.set_trial_user_attr(trial_id, OVERRIDES, space.overrides(params))
        storage.set_trial_user_attr(trial_id, WORKER, "bench:1")
        number += 1
        return trial_id

    for i in range(n):
        params = {"x": rng.uniform(-5, 5), "y": rng.uniform(-5, 5)}
        trial_dir = f"trial_{number:04d}"
        first = number
        trial_id = trial(params, trial_dir, None)
        if i % 499 == 498:  # its worker died: FAIL, and a retry in the same dir completes
            storage.set_trial_user_attr(trial_id, FAIL_REASON, "its worker died")
            storage.set_trial_state_values(trial_id, TrialState.FAIL)
            trial_id = trial(params, trial_dir, first)
        if i % 97 == 96:
            storage.set_trial_user_attr(trial_id, FAIL_REASON, "ValueError: benchmark")
            storage.set_trial_state_values(trial_id, TrialState.FAIL)
        elif i % 23 == 22:
            storage.set_trial_state_values(trial_id, TrialState.PRUNED)
        else:
            value = params["x"] ** 2 + params["y"] ** 2
            storage.set_trial_state_values(trial_id, TrialState.COMPLETE, [value])
    lines = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in backend.logs)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(lines)
    temporary.replace(path)


def journal(n: int, data: Path) -> Path:
    path = data / f"v{DATA_VERSION}" / f"journal-{n}"
    if not path.is_file():
        print(f"  building a journal of {n} trials in {path}", flush=True)
        build(n, path)
    return path


def replay_seconds(sweep: Path) -> tuple[float, int]:
    start = time.perf_counter()
    trials = load_sweep_study(sweep, STUDY).get_trials(deepcopy=False)
    return time.perf_counter() - start, len(trials)


def run(folder: Path, n_trials: int, before: Path | None) -> tuple[datetime, float]:
    """The sweep command, continuing the study to n_trials; returns its launch (local time, as
    Optuna's trial times are) and its exit (the same clock)."""
    env = dict(os.environ)
    if before is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(before), env.get("PYTHONPATH", "")])
    launched = datetime.now()
    proc = subprocess.run(
        [
            sys.executable,
            "app.py",
            "-m",
            "hydra.sweep.dir=sweep",
            f"hydra.sweeper.n_trials={n_trials}",
        ],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
    )
    ended = datetime.now()
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    (folder / "sweep.log").write_text(proc.stdout + proc.stderr)
    return launched, (ended - launched).total_seconds()


def measure(n: int, k: int, data: Path, before: Path | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "conf").mkdir()
        (folder / "conf" / "config.yaml").write_text(CONFIG)
        (folder / "app.py").write_text(APP)
        sweep = folder / "sweep"
        sweep.mkdir()
        shutil.copyfile(journal(n, data), sweep / JOURNAL_FILE)
        replay, prefilled = replay_seconds(sweep)
        launched, process = run(folder, n + k, before)
        trials = load_sweep_study(sweep, STUDY).trials
    new = trials[prefilled:]
    assert len(new) == k and all(t.state == TrialState.COMPLETE for t in new), len(new)
    starts = [t.datetime_start for t in new]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(starts[3:])]
    last = max(t.datetime_complete for t in new)
    return {
        "trials_before": prefilled,
        "new_trials": k,
        "ms_per_trial": 1000 * statistics.mean(gaps),
        "ms_per_trial_median": 1000 * statistics.median(gaps),
        "resume_s": (starts[0] - launched).total_seconds(),
        "end_s": process - (last - launched).total_seconds(),
        "replay_s": replay,
        "process_s": process,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="sizes 100 and 1,000 only")
    parser.add_argument("--trials", type=int, default=40, help="new trials per sweep")
    parser.add_argument("--data", type=Path, default=DATA, help="where journals are built")
    parser.add_argument("--before", type=Path, help="another plugin source tree to time")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sizes = (100, 1_000) if args.quick else (100, 1_000, 10_000)
    print(
        f"continuing studies of {', '.join(map(str, sizes))} trials by {args.trials} trials "
        "of a trivial task (random sampler, n_jobs=1)",
        flush=True,
    )
    header = f"{'trials':>7} {'ms/trial':>9} {'median':>7} {'resume s':>9} {'end s':>6} "
    header += f"{'replay s':>9}"
    rows = []
    for n in sizes:
        row = {"size": n, **measure(n, args.trials, args.data, args.before)}
        rows.append(row)
        if len(rows) == 1:
            print(header)
        print(
            f"{n:>7} {row['ms_per_trial']:>9.1f} {row['ms_per_trial_median']:>7.1f} "
            f"{row['resume_s']:>9.2f} {row['end_s']:>6.2f} {row['replay_s']:>9.2f}",
            flush=True,
        )
    base, top = rows[0], rows[-1]
    ratio = top["ms_per_trial"] / base["ms_per_trial"]
    print(f"per-trial overhead at {top['size']} / at {base['size']}: {ratio:.2f}x")
    extra = {"ratio_largest_to_smallest": ratio, "before": str(args.before or "")}
    # the other tree's numbers next to this one's, not over them
    write_result(f"sweep_scale{'_before' if args.before else ''}", rows, args.quick, extra)


if __name__ == "__main__":
    main()
