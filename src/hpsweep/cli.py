"""`hpsweep compare | best | reproduce | plot | rebuild [SWEEP_DIR]`: decide from a sweep's results.

SWEEP_DIR defaults to the newest sweep under ./multirun.
"""

import argparse
import logging
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from hpsweep.record import Status, TrialFileError
from hpsweep.results import (
    SweepDirError,
    best_of,
    load_trials,
    trial_by_number,
    trial_dirs,
)

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


def newest_sweep(root: Path = Path("multirun")) -> Path:
    """The most recently changed dir under `root` that holds trial dirs: multirun/<study>/ of
    the hpsweep sweeper, or multirun/<date>/<time>/ of Hydra's grid sweeper."""
    candidates = [p for p in (*root.glob("*"), *root.glob("*/*")) if p.is_dir()]
    sweeps = [p for p in candidates if any((c / ".hydra").is_dir() for c in p.iterdir())]
    if not sweeps:
        raise SweepDirError(f"no sweep found under {root.absolute()}; pass SWEEP_DIR")
    return max(sweeps, key=lambda p: p.stat().st_mtime)


def select_columns(trials: pd.DataFrame, patterns: list[str]) -> list[str]:
    columns = []
    for pattern in patterns:
        if pattern.endswith("*"):
            columns += [c for c in trials.columns if c.startswith(pattern[:-1])]
        elif pattern in trials.columns:
            columns.append(pattern)
        else:
            raise SweepDirError(
                f"--columns: no column {pattern!r}; columns are: {', '.join(trials.columns)}"
            )
    return columns


def render(table: pd.DataFrame, fmt: str) -> str:
    if fmt == "csv":
        return table.to_csv(index=False)
    if fmt == "json":
        return table.to_json(orient="records", indent=2)
    if fmt == "markdown":
        cells = table.astype(object).where(table.notna(), "").astype(str)
        lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
        lines += ["| " + " | ".join(row) + " |" for row in cells.itertuples(index=False)]
        return "\n".join(lines)
    return table.to_string(index=False, float_format=lambda v: f"{v:.4g}")


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
    if len(bad):
        numbers = ", ".join(str(n) for n in bad["number"])
        print(
            f"hpsweep compare: damaged or missing files in trial(s) {numbers}; "
            "the problem column says which and why",
            file=sys.stderr,
        )
    if args.state:
        trials = trials[trials["state"] == args.state.upper()]
    if args.sort:
        column = args.sort.lstrip("-")
        select_columns(trials, [column])
        trials = trials.sort_values(column, ascending=not args.sort.startswith("-"), kind="stable")
    default = DEFAULT_COLUMNS + (["problem"] if len(bad) else [])
    columns = select_columns(trials, args.columns.split(",") if args.columns else default)
    print(render(trials[columns].head(args.top), args.format))
    return 0


def cmd_best(args: argparse.Namespace) -> int:
    trials = load_trials(args.sweep_dir)
    # the trials that could have been the best: complete ones, and those nothing says ended how
    candidates = (trials["state"] == "COMPLETE") | trials["state"].isna()
    best = best_of(leave_out_damaged("best", trials, candidates), args.sweep_dir)
    trial_dir = Path(best["trial_dir"])
    overrides = [str(o) for o in OmegaConf.load(trial_dir / ".hydra" / "overrides.yaml")]
    print(f"best trial {best['number']} ({trial_dir}): {best['objective']} = {best['value']}")
    for column in (c for c in best.index if c.startswith("params_")):
        print(f"  {column[len('params_') :]} = {best[column]}")
    print("reproduce: hpsweep-train " + " ".join(shlex.quote(o) for o in overrides))
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    from hpsweep.record import TrialFiles
    from hpsweep.reproduce import compare_metrics, reproduce

    trials = load_trials(args.sweep_dir)
    if args.trial is None:
        row = best_of(trials, args.sweep_dir)
    else:
        row = trial_by_number(trials, args.trial)
    trial_dir = Path(row["trial_dir"])
    if isinstance(row["problem"], str):
        raise SweepDirError(
            f"trial {row['number']} ({trial_dir}) cannot be re-run: {row['problem']}"
        )
    out = args.out or Path(args.sweep_dir) / "reproduce" / trial_dir.name
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(f"re-running trial {row['number']} from {trial_dir}/.hydra/config.yaml into {out}")
    reproduced = reproduce(trial_dir, out)
    original = TrialFiles(trial_dir).read_metrics()
    differences = compare_metrics(original, reproduced, args.tolerance)
    if not differences:
        exact = "exactly" if args.tolerance == 0 else f"within {args.tolerance}"
        print(f"reproduced {exact}: {len(original)} epochs, every metric equal")
        return 0
    table = pd.DataFrame([vars(d) for d in differences])
    table["difference"] = table["reproduced"] - table["original"]
    print(f"NOT reproduced: {len(differences)} metric values differ by more than {args.tolerance}")
    print(table.to_string(index=False))
    return 1


def cmd_plot(args: argparse.Namespace) -> int:
    from hpsweep.plots import plot_sweep

    trials = load_trials(args.sweep_dir)
    trials = leave_out_damaged("plot", trials, damaged(trials))
    for path in plot_sweep(args.sweep_dir, top_k=args.top, trials=trials):
        print(path)
    return 0


def cmd_rebuild(args: argparse.Namespace) -> int:
    import optuna

    from hydra_plugins.hpsweep_sweeper import RebuildError, rebuild_study

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # what it did is said below
    try:
        rebuilt = rebuild_study(args.sweep_dir, args.storage)
    except RebuildError as e:
        print(f"hpsweep rebuild: {e}", file=sys.stderr)
        return 2
    for note in rebuilt.notes:
        print(f"hpsweep rebuild: {note}", file=sys.stderr)
    if rebuilt.backup is not None:
        print(f"moved the old journal to {rebuilt.backup}")
    states = ", ".join(f"{n} {state}" for state, n in sorted(rebuilt.states.items()))
    print(f"rebuilt study {rebuilt.study_name} in {rebuilt.storage}: {states}")
    print(f"continue it: {rebuilt.command}")
    return 0


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="hpsweep", description=__doc__.splitlines()[0])
    commands = main.add_subparsers(dest="command", required=True)

    def command(
        name: str, help: str, handler: Callable[[argparse.Namespace], int]
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.add_argument("sweep_dir", nargs="?", type=Path, help="default: newest under multirun/")
        sub.set_defaults(handler=handler)
        return sub

    compare = command("compare", "table of the top trials", cmd_compare)
    compare.add_argument("--top", type=int, default=10, help="rows to show (default 10)")
    compare.add_argument("--sort", help="column to sort by; --sort=-COLUMN for descending")
    compare.add_argument("--state", choices=[s.value.lower() for s in Status], type=str.lower)
    compare.add_argument("--format", choices=FORMATS, default="table")
    compare.add_argument("--columns", help="comma-separated; a trailing * matches a prefix")
    command("best", "the best trial and the command that reproduces it", cmd_best)
    reproduce = command("reproduce", "re-run a trial and compare its metrics", cmd_reproduce)
    reproduce.add_argument("--trial", type=int, help="trial number (default: the best)")
    reproduce.add_argument(
        "--tolerance",
        type=float,
        default=0.0,
        help="largest accepted difference per metric (default 0: exact)",
    )
    reproduce.add_argument("--out", type=Path, help="default: SWEEP_DIR/reproduce/<trial dir>")
    plot = command("plot", "write PNGs of curves, parameters and history", cmd_plot)
    plot.add_argument("--top", type=int, default=5, help="trials in the curves plot")
    rebuild = command(
        "rebuild", "write the sweep's Optuna study anew from its trial dirs alone", cmd_rebuild
    )
    rebuild.add_argument(
        "--storage",
        help="journal path or database URL to write it to (default: the sweep's own; "
        "a journal there is moved aside to <name>.bak-<time>)",
    )
    return main


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.sweep_dir is None:
            args.sweep_dir = newest_sweep()
        trial_dirs(args.sweep_dir)  # a clear error for a path that is not a sweep
        return args.handler(args)
    except (SweepDirError, FileExistsError) as e:
        print(f"hpsweep {args.command}: {e}", file=sys.stderr)
        return 2
    except TrialFileError as e:  # changed after load_trials looked at it: a sweep still running
        print(f"hpsweep {args.command}: {e.path}: {e.why}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
