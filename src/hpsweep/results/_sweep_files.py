"""A sweep's trial dirs: finding them (a sweep of the hpsweep sweeper, a plain Hydra multirun,
a folder of single runs), their numbers and order, and what each one's files say, each file
read once and, between calls, only again when it changed (results._read_cache).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from omegaconf import OmegaConf

from hpsweep.record import TrialFileError, TrialFiles, TrialResult
from hpsweep.results import _read_cache as read_cache
from hydra_plugins.hpsweep_sweeper import JOURNAL_FILE


class SweepDirError(ValueError):
    """A path that is not a sweep, or a request the sweep cannot answer; one line for the user.

    `use` and `trial`: for a path inside a sweep (a single run's dir, a trial dir), the folder
    to pass instead and the number the trial has there."""

    def __init__(self, message: str, use: Path | None = None, trial: int | None = None) -> None:
        super().__init__(message)
        self.use = use
        self.trial = trial


# Any of these marks a folder as a trial dir, so one that lost some of its files is still found.
TRIAL_MARKS = (".hydra", "result.json", "metrics.csv")
# A trial dir's files that a table is made of, in the order of Trials.stats' entries: what
# was read of a dir is used again while these have not changed (results._read_cache).
TRIAL_FILES = (
    "result.json",
    "metrics.csv",
    os.path.join(".hydra", "config.yaml"),
    os.path.join(".hydra", "hydra.yaml"),
    os.path.join(".hydra", "overrides.yaml"),
    os.path.join("checkpoints", "best.pt"),
)
HYDRA_YAML = TRIAL_FILES.index(os.path.join(".hydra", "hydra.yaml"))
BEST_PT = TRIAL_FILES.index(os.path.join("checkpoints", "best.pt"))


@dataclass
class Trials:
    """The trial dirs of a sweep dir, in trial order, and the number each has (None: unknown,
    when a dir holds no readable hydra.yaml and its name ends in no number)."""

    dirs: list[Path]
    numbers: dict[Path, int | None]
    single_runs: bool  # a folder of single runs (hpsweep-train without -m), not a sweep
    # each dir's Hydra mode (MULTIRUN, RUN; None: no readable hydra.yaml)
    modes: dict[Path, str | None] = field(default_factory=dict)
    # each dir's TRIAL_FILES as read_cache.stat_key gives them, taken once, here
    stats: dict[Path, read_cache.StatKey] = field(default_factory=dict)
    # hydra.yaml's `hydra` node, or why it cannot be used, of each dir parsed in this call
    # (one whose file is unchanged since an earlier call is not parsed at all)
    hydra: dict[Path, dict[str, Any] | TrialFileError] = field(default_factory=dict)

    @property
    def keep_records(self) -> bool:
        """Whether the sweep's task writes a trial record (result.json, metrics.csv): a user's
        own task function may not, and then only the study says how its trials ended."""
        return any(stat[0] or stat[1] for stat in self.stats.values()) or not self.stats


def find_trials(sweep_dir: str | Path) -> Trials:
    """The trial dirs of a sweep dir, or of a folder of single runs; SweepDirError, saying what
    the path is instead and what to pass, for anything else."""
    sweep = Path(sweep_dir)
    found = _scan(sweep) if sweep.is_dir() else None
    if found is None:
        raise _not_a_sweep(sweep)
    return found


def _scan(sweep: Path) -> Trials | None:
    stats: dict[Path, read_cache.StatKey] = {}
    with os.scandir(sweep) as entries:
        for entry in entries:
            if entry.is_dir():  # from the listing: no stat
                stat = read_cache.stat_key([entry.path + os.sep + f for f in TRIAL_FILES])
                if any(stat[:BEST_PT]) or os.path.isdir(os.path.join(entry.path, ".hydra")):
                    stats[Path(entry.path)] = stat
    dirs = list(stats)
    cache = read_cache.for_sweep(sweep)
    facts = {d: _hydra_facts(d, stats[d], cache) for d in dirs}
    parsed = {d: node for d in dirs if (node := _parsed_hydra(d, stats[d], cache)) is not None}
    cache.keep_only({d.name for d in dirs})
    cache.save()
    modes = {d: mode for d, (mode, _) in facts.items()}
    # A sweep's trials are MULTIRUN jobs; a dir whose hydra.yaml cannot be read goes with the
    # others. Single runs' dirs next to a sweep's trials are not its trials.
    single_runs = "RUN" in modes.values() and "MULTIRUN" not in modes.values()
    dirs = [d for d in dirs if modes[d] != ("MULTIRUN" if single_runs else "RUN")]
    if not dirs:
        return None
    numbers: dict[Path, int | None]
    if single_runs:
        # Hydra names a run's dir after the time it started (outputs/<date>/<time>/)
        dirs.sort(key=lambda d: d.name)
        numbers = {d: i for i, d in enumerate(dirs)}
    else:
        numbers = {d: _job_number(d, facts[d][1]) for d in dirs}
        dirs.sort(key=lambda d: (numbers[d] is None, numbers[d] or 0, d.name))
    return Trials(dirs, numbers, single_runs, modes, stats, parsed)


def trial_dirs(sweep_dir: str | Path) -> list[Path]:
    return find_trials(sweep_dir).dirs


# what a trial writes as it starts, after each epoch and as it ends
ACTIVITY_FILES = ("result.json", "metrics.csv", os.path.join(".hydra", "overrides.yaml"))


def last_activity(folder: Path) -> float | None:
    """The newest modification time of the trial files in `folder`'s trial dirs (those with a
    .hydra/) and of its journal; None when it holds no trial dir."""
    trials = [c for c in folder.iterdir() if (c / ".hydra").is_dir()]
    if not trials:
        return None
    files = [t / name for t in trials for name in ACTIVITY_FILES] + [folder / JOURNAL_FILE]
    times = [f.stat().st_mtime for f in files if f.is_file()]
    return max(times, default=0.0)


def sweep_signature(sweep: Path) -> read_cache.StatKey | None:
    """What changes whenever a trial of the sweep starts, ends an epoch or ends: the stats of
    each trial's ACTIVITY_FILES and of the journal, no file read; None while there is no
    `sweep` folder."""
    try:
        with os.scandir(sweep) as entries:
            children = sorted(e.path for e in entries if e.is_dir())
    except OSError:
        return None
    paths = [os.path.join(child, name) for child in children for name in ACTIVITY_FILES]
    return read_cache.stat_key([*paths, os.path.join(sweep, JOURNAL_FILE)])


def _is_trial_dir(path: Path) -> bool:
    return any((path / m).exists() for m in TRIAL_MARKS)


def _not_a_sweep(path: Path) -> SweepDirError:
    """What `path` is, since it is no sweep, and what to pass instead."""
    if not path.exists():
        return SweepDirError(f"{path} is not a folder: it does not exist")
    if not path.is_dir():
        return SweepDirError(f"{path} is not a folder but a file")
    if _is_trial_dir(path):
        trials = _scan(path.parent)
        single = trials is not None and trials.modes.get(path) == "RUN"
        number = None if trials is None else trials.numbers.get(path)
        what = "a single run (hpsweep-train without -m)" if single else "a trial dir"
        where = "its folder" if single else "its sweep"
        held = "" if number is None else f" as trial {number}"
        return SweepDirError(
            f"{path} is {what}, not a sweep dir; {where} {path.parent} holds it{held}",
            use=path.parent,
            trial=number,
        )
    if (path / "multirun.yaml").is_file():
        return SweepDirError(f"{path} is an empty sweep: no trial dirs (*/.hydra/) in it yet")
    if not any(path.iterdir()):
        return SweepDirError(f"{path} is an empty folder, not a sweep dir")
    inside = [str(p) for p in sorted(path.iterdir()) if p.is_dir() and _scan(p) is not None]
    if inside:
        shown = ", ".join(inside[:3]) + (", ..." if len(inside) > 3 else "")
        return SweepDirError(
            f"{path} is not a sweep dir; it holds {len(inside)} folder(s) of trials, pass one: "
            f"{shown}"
        )
    return SweepDirError(
        f"{path} is not a sweep dir: no trial dirs (*/.hydra/, */result.json) in it"
    )


# what load_trials uses of a trial's hydra.yaml: whether it is a sweep's job or a single run,
# the job's number (a retry's, in a trial dir named after another), a config group's option
HYDRA_KEYS = ("mode", "job.num", "runtime.choices")


def _hydra_facts(
    trial_dir: Path, stat: read_cache.StatKey, cache: read_cache.ReadCache
) -> tuple[str | None, int | None]:
    """hydra.yaml's mode and job number (None, None without a readable one), parsed only when
    the file is new or changed; what was parsed is kept for this process (_parsed_hydra)."""
    try:
        return cast(
            tuple[str | None, int | None], cache.get("hydra", trial_dir.name, stat[HYDRA_YAML])
        )
    except KeyError:
        pass
    node: dict[str, Any] | TrialFileError
    try:
        node = TrialFiles(trial_dir).read_hydra_data("hydra.yaml", HYDRA_KEYS)
    except TrialFileError as e:
        node = e
    cache.put("hydra node", trial_dir.name, stat[HYDRA_YAML], node, keep=False)
    facts: tuple[str | None, int | None] = (None, None)
    if not isinstance(node, TrialFileError):
        number = select_key(node, "job.num")
        facts = (select_key(node, "mode"), number if isinstance(number, int) else None)
    cache.put("hydra", trial_dir.name, stat[HYDRA_YAML], facts)
    return facts


def _parsed_hydra(
    trial_dir: Path, stat: read_cache.StatKey, cache: read_cache.ReadCache
) -> dict[str, Any] | TrialFileError | None:
    """What this process parsed of the dir's hydra.yaml as it is now, if it did."""
    try:
        return cast(
            dict[str, Any] | TrialFileError,
            cache.get("hydra node", trial_dir.name, stat[HYDRA_YAML]),
        )
    except KeyError:
        return None


def select_key(node: Any, key: str) -> Any:
    """OmegaConf.select(node, key, default=None) on plain data as read_hydra_data gives it;
    an interpolation is resolved by OmegaConf itself, as the composed config would be."""
    found = node
    for part in key.split("."):
        if isinstance(found, dict) and part in found:
            found = found[part]
        elif isinstance(found, list) and part.isdigit() and int(part) < len(found):
            found = found[int(part)]
        else:
            found = None
            break
    special = isinstance(found, str) and ("${" in found or found == "???")
    if special or not key.replace(".", "").isidentifier():
        # `${...}`, a missing `???`, `a[0]`, keys OmegaConf spells otherwise: its own select
        return OmegaConf.select(OmegaConf.create(node), key, default=None)
    return found


def _job_number(trial_dir: Path, number: int | None) -> int | None:
    """Hydra's job number (the trial's, in a sweep of the hpsweep sweeper); without a readable
    hydra.yaml, the number the dir's name ends with (trial_0003, or Hydra's 3)."""
    return number if number is not None else name_number(trial_dir.name)


def name_number(name: str) -> int | None:
    """The number a trial dir's name ends with: trial_0003's, or Hydra's own 3's."""
    digits = re.search(r"(\d+)$", name)
    return int(digits.group(1)) if digits else None


@dataclass
class TrialDir:
    """What a trial dir's files say, each read once. A file that cannot be used is None here
    and a line in `problems`, which says which file and why."""

    path: Path
    result: TrialResult | None = None
    metrics: list[dict[str, float]] | None = None
    config: dict[str, Any] | None = None  # the composed config, as plain data
    hydra: dict[str, Any] | None = None  # hydra.yaml's `hydra` node, its HYDRA_KEYS only
    overrides: list[str] | None = None
    problems: list[str] = field(default_factory=list)
    result_unreadable: bool = False  # result.json is there but cannot be used


def read_trial_dir(
    trial_dir: Path,
    state: str | None = None,
    hydra: dict[str, Any] | TrialFileError | None = None,
    keeps_record: bool = True,
) -> TrialDir:
    """Read a trial dir, noting each file that is damaged or missing. `state` is the study's
    for the trial, if there is a study: what a trial has written depends on how far it got.

    Missing is a problem only for a file the trial must have by then: .hydra/ (written before
    the job starts) unless the study says the trial is running, waiting, or failed (possibly
    before its job started); result.json once the study says COMPLETE or PRUNED; metrics.csv
    once result.json counts epochs. `hydra`: hydra.yaml as find_trials read it, if it did.
    `keeps_record` False: the sweep's task writes no result.json (Trials.keep_records).
    """
    trial = TrialDir(trial_dir)
    if not trial_dir.is_dir():
        trial.problems.append("trial dir missing")
        return trial
    files = TrialFiles(trial_dir)
    trial.result, trial.result_unreadable, problems = _read_result(
        files, state if keeps_record else None
    )
    trial.problems += problems
    epochs = None if trial.result is None else trial.result.epochs_run
    trial.metrics, problems = _read_metrics(files, state, epochs)
    trial.problems += problems
    loaded, problems = _read_hydra_files(files, state, hydra)
    trial.problems += problems
    trial.config = loaded.get("config.yaml")
    trial.hydra = loaded.get("hydra.yaml")
    if "overrides.yaml" in loaded:
        trial.overrides = [str(o) for o in loaded["overrides.yaml"]]
    return trial


def _read_result(
    files: TrialFiles, state: str | None
) -> tuple[TrialResult | None, bool, list[str]]:
    """result.json, whether it is there but cannot be used, and its problems."""
    try:
        result = files.read_result()
    except TrialFileError as e:
        return None, True, [str(e)]
    missing = result is None and state in ("COMPLETE", "PRUNED")
    return result, False, ["result.json: missing"] if missing else []


def _read_metrics(
    files: TrialFiles, state: str | None, epochs: int | None
) -> tuple[list[dict[str, float]] | None, list[str]]:
    """metrics.csv, if result.json counts `epochs` or the file is there, and its problems."""
    metrics, problems = None, []
    if epochs or files.metrics.exists():
        try:
            metrics = files.read_metrics()
        except TrialFileError as e:
            problems.append(str(e))
    # a resumed trial's metrics.csv grows past its old result.json until the new one is written
    unfinished = state in ("RUNNING", "WAITING")
    counted = metrics is not None and epochs is not None and not unfinished
    if counted and len(metrics or []) != epochs:
        rows = len(metrics or [])
        problems.append(f"metrics.csv: {rows} epoch rows, result.json has epochs_run={epochs}")
    return metrics, problems


def _read_hydra_files(
    files: TrialFiles, state: str | None, hydra: dict[str, Any] | TrialFileError | None
) -> tuple[dict[str, Any], list[str]]:
    """config.yaml, hydra.yaml (`hydra`, if find_trials read it) and overrides.yaml of .hydra/
    by name, those that could be read; and the problems of the others."""
    loaded: dict[str, Any] = {}
    problems = []
    for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
        if state in ("RUNNING", "WAITING", "FAIL") and not (files.dir / ".hydra" / name).exists():
            continue
        try:
            if name == "hydra.yaml" and hydra is not None:
                if isinstance(hydra, TrialFileError):
                    raise hydra
                loaded[name] = hydra
            else:
                keys = HYDRA_KEYS if name == "hydra.yaml" else None
                loaded[name] = files.read_hydra_data(name, keys)
        except TrialFileError as e:
            problems.append(str(e))
    return loaded, problems


def newest_sweep(root: Path = Path("multirun")) -> Path:
    """The sweep under `root` (multirun/<study>/ of the hpsweep sweeper, or
    multirun/<date>/<time>/ of Hydra's grid sweeper) whose trials wrote last: what `hpsweep
    reproduce` and `plot` add to a sweep (reproduce/, plot_*.png) does not make it the newest."""
    candidates = [p for p in (*root.glob("*"), *root.glob("*/*")) if p.is_dir()]
    activity = {p: last_activity(p) for p in candidates}
    sweeps = {p: t for p, t in activity.items() if t is not None}
    if not sweeps:
        raise SweepDirError(f"no sweep found under {root.absolute()}; pass SWEEP_DIR{runs_hint()}")
    return max(sweeps, key=lambda p: sweeps[p])


def runs_hint(outputs: Path = Path("outputs")) -> str:
    """Where single runs of hpsweep-train are, for a user who has no sweep yet."""
    for day in sorted((p for p in outputs.glob("*") if p.is_dir()), reverse=True):
        try:
            find_trials(day)
        except SweepDirError:
            continue
        return f" (single runs are a SWEEP_DIR too: {day})"
    return ""
