"""`hpsweep compare`: a sweep's trials as a table (table, markdown, csv, json), and
`--watch`, the table again whenever the sweep's trial files change."""

from __future__ import annotations  # pandas types in signatures

import argparse
import contextlib
import json
import math
import sys
from pathlib import Path
from time import sleep, strftime  # names of this module, so tests can replace sleep
from typing import TYPE_CHECKING, Any, cast

from hpsweep.record import Status, TrialFileError
from hpsweep.results import (
    NEVER_STARTED,
    WORKER_GONE,
    SweepDirError,
    find_trials,
    load_trials,
    newest_sweep,
    sweep_signature,
)

if TYPE_CHECKING:  # imported when a table is made: --help and wrong paths answer sooner
    import pandas as pd

DEFAULT_COLUMNS = [
    "number",
    "state",
    "value",
    "params_*",
    "best_epoch",
    "test_acc",
    "epochs_run",
    "wall_time_s",
]
FORMATS = ("table", "csv", "markdown", "json")


def test_column(trials: pd.DataFrame) -> str:
    """The test score of the sweep's objective (test_mse for val_mse), where the trials have it;
    else test_acc."""
    objectives = trials["objective"].dropna().unique() if "objective" in trials else []
    if len(objectives) == 1:
        column = "test_" + str(objectives[0]).partition("_")[2]
        if column != "test_loss" and column in trials and trials[column].notna().any():
            return column
    return "test_acc"


def select_columns(trials: pd.DataFrame, patterns: list[str], option: str) -> list[str]:
    columns = []
    for pattern in patterns:
        if pattern.endswith("*"):
            columns += [c for c in trials.columns if c.startswith(pattern[:-1])]
        elif pattern in trials.columns:
            columns.append(pattern)
        else:
            raise SweepDirError(
                f"{option}: no column {pattern!r}; columns are: {', '.join(trials.columns)}"
            )
    return columns


def render(table: pd.DataFrame, fmt: str) -> str:
    """csv and json are data: every number exactly as load_trials has it (Python's float repr,
    which reads back to the same float). table and markdown are for reading: 4 significant
    digits, empty cells where there is no value."""
    if fmt == "csv":
        return table.to_csv(index=False).rstrip("\n")
    if fmt == "json":
        records = [
            {column: plain(value) for column, value in row.items()}
            for row in table.to_dict(orient="records")
        ]
        return json.dumps(records, indent=2)
    cells = table.astype(object).apply(lambda column: column.map(readable))
    if fmt == "markdown":
        lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
        lines += ["| " + " | ".join(row) + " |" for row in cells.itertuples(index=False)]
        return "\n".join(lines)
    return cells.to_string(index=False)


def plain(value: Any) -> Any:
    """A cell as a JSON value: None for a missing one, Python numbers for numpy's."""
    import pandas as pd

    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    return value.item() if hasattr(value, "item") else value


def readable(value: Any) -> str:
    value = plain(value)
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def summary(trials: pd.DataFrame) -> str:
    """'4 trials: 3 COMPLETE, 1 PRUNED'"""
    states = trials["state"].fillna("unknown").value_counts()
    order = [s.value for s in (Status.COMPLETE, Status.PRUNED, Status.FAIL, Status.RUNNING)]
    names = [s for s in order if s in states] + [s for s in states.index if s not in order]
    counts = ", ".join(f"{states[s]} {s}" for s in names)
    return f"{len(trials)} trial{'s' if len(trials) != 1 else ''}: {counts}"


def damaged(trials: pd.DataFrame) -> pd.Series:
    """Rows of trials whose files are damaged or missing (their `problem` says how)."""
    return trials["problem"].notna()


def leave_out_damaged(command: str, trials: pd.DataFrame, rows: pd.Series) -> pd.DataFrame:
    """The table without damaged trials; one line on stderr for each of `rows` left out."""
    for row in trials[damaged(trials) & rows].itertuples():
        name = Path(str(row.trial_dir)).name
        print(
            f"hpsweep {command}: left out trial {row.number} ({name}): {row.problem}",
            file=sys.stderr,
        )
    return trials[~damaged(trials)]


def cmd_compare(args: argparse.Namespace) -> int:
    trials = load_trials(args.sweep_dir)
    bad = trials[damaged(trials)]
    gone = bad["problem"].str.startswith(WORKER_GONE)
    unstarted = bad["problem"].str.startswith(NEVER_STARTED)
    files = ~gone & ~unstarted
    damaged_files = "damaged or missing files in trial(s) {}; the problem column says which and why"
    worker_gone = "the worker of trial(s) {} is gone; the problem column says after which epoch"
    never = "trial(s) {} never started (no trial dir); they take no slot of n_trials"
    kinds = ((bad[files], damaged_files), (bad[gone], worker_gone), (bad[unstarted], never))
    for rows, what in kinds:
        if len(rows):
            numbers = ", ".join(str(n) for n in rows["number"])
            print(f"hpsweep compare: {what.format(numbers)}", file=sys.stderr)
    print(compare_text(args, trials))
    return 0


def compare_text(args: argparse.Namespace, trials: pd.DataFrame) -> str:
    everything = trials
    if args.state:
        trials = trials[trials["state"] == args.state.upper()]
    if args.sort:
        column = args.sort.lstrip("-")
        select_columns(trials, [column], "--sort")
        trials = trials.sort_values(column, ascending=not args.sort.startswith("-"), kind="stable")
    default = [test_column(trials) if c == "test_acc" else c for c in DEFAULT_COLUMNS]
    default += ["retry_of"] if trials["retry_of"].notna().any() else []
    default += ["problem"] if damaged(everything).any() else []
    patterns = args.columns.split(",") if args.columns else default
    table = trials[select_columns(trials, patterns, "--columns")].head(args.top)
    if table.empty and args.format in ("table", "markdown"):
        # an empty but valid selection: said in words, exit 0 (csv and json print their header
        # and [] for scripts)
        if trials.empty and args.state:
            return f"no trials match --state {args.state.upper()} ({summary(everything)})"
        return f"--top 0 shows no rows ({summary(everything)})"
    return render(table, args.format)


def watch(args: argparse.Namespace) -> int:
    """compare --watch: the table again whenever the sweep's trial files change, until Ctrl-C."""
    if args.format in ("csv", "json"):
        raise SweepDirError(
            f"--watch redraws a table for reading, not a stream of {args.format} documents; "
            "use it with --format table or markdown"
        )
    # object(): equal to nothing, so the first tick reads and shows
    sweep, seen, shown = args.sweep_dir, object(), cast(Any, object())
    try:
        while True:
            if sweep is None:  # no SWEEP_DIR: the newest sweep under ./multirun, once there is one
                with contextlib.suppress(SweepDirError):
                    sweep = newest_sweep()
            signature = sweep_signature(sweep) if sweep else None
            if signature != seen:  # else nothing is read: a few stats a trial for each tick
                seen = signature
                try:
                    view = watched_view(args, sweep) if sweep else None
                except (TrialFileError, OSError):  # a file changing as it was read (a damaged
                    seen, view = object(), shown  # one is in `problem`): read again next tick
                if view != shown:  # a trial file touched but the table the same: not shown again
                    shown = view
                    print(frame(view, sweep or Path("multirun").absolute()), flush=True)
            sleep(args.watch)
    except KeyboardInterrupt:  # how a watch ends: not an error
        return 0


def watched_view(args: argparse.Namespace, sweep: Path) -> tuple[str, str] | None:
    """(summary, table), or None while the sweep has no trial yet."""
    try:
        find_trials(sweep)
    except SweepDirError as e:
        if not_started(sweep, e):
            return None
        raise  # a file, a trial dir, a folder of sweeps: refused as without --watch
    trials = load_trials(sweep)
    return summary(trials), compare_text(args, trials)


def not_started(path: Path, error: SweepDirError) -> bool:
    """A sweep just launched: its dir not made yet, or no trial dir in it yet."""
    if not path.exists():
        return True
    return path.is_dir() and error.use is None and not any(map(holds_trials, path.iterdir()))


def holds_trials(path: Path) -> bool:
    try:
        return path.is_dir() and bool(find_trials(path))
    except SweepDirError:
        return False


def frame(view: tuple[str, str] | None, sweep: Path) -> str:
    if view is None:
        return f"waiting for trials in {sweep}"
    head = f"{sweep} at {strftime('%H:%M:%S')}: {view[0]}"
    if sys.stdout.isatty():  # redrawn in place
        return f"\x1b[H\x1b[2J{head} (Ctrl-C to stop)\n{view[1]}"
    return f"-- {head}\n{view[1]}"  # piped: each table once, in the order they came
