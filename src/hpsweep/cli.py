"""`hpsweep compare | best | reproduce | plot [SWEEP_DIR]`: decide from a sweep's results.

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

from hpsweep.record import Status
from hpsweep.results import (
    SweepDirError,
    best_trial,
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


def cmd_compare(args: argparse.Namespace) -> int:
    trials = load_trials(args.sweep_dir)
    if args.state:
        trials = trials[trials["state"] == args.state.upper()]
    if args.sort:
        column = args.sort.lstrip("-")
        select_columns(trials, [column])
        trials = trials.sort_values(column, ascending=not args.sort.startswith("-"), kind="stable")
    columns = select_columns(trials, args.columns.split(",") if args.columns else DEFAULT_COLUMNS)
    print(render(trials[columns].head(args.top), args.format))
    return 0


def cmd_best(args: argparse.Namespace) -> int:
    best = best_trial(args.sweep_dir)
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

    if args.trial is None:
        row = best_trial(args.sweep_dir)
    else:
        row = trial_by_number(load_trials(args.sweep_dir), args.trial)
    trial_dir = Path(row["trial_dir"])
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

    for path in plot_sweep(args.sweep_dir, top_k=args.top):
        print(path)
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


if __name__ == "__main__":
    sys.exit(main())
