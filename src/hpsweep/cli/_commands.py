"""`hpsweep compare | best | reproduce | plot | rebuild [SWEEP_DIR]`: decide from a sweep's results.

SWEEP_DIR defaults to the sweep under ./multirun whose trials wrote last.
"""

from __future__ import annotations  # pandas types in signatures

import argparse
import logging
import math
import shlex
import sys
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from hpsweep.cli._compare import FORMATS, cmd_compare, damaged, leave_out_damaged, watch
from hpsweep.record import (
    REPRODUCE_UNTIL,
    Launch,
    Status,
    TrialFileError,
    TrialFiles,
    TrialResult,
)
from hpsweep.results import (
    SweepDirError,
    best_of,
    find_trials,
    load_trials,
    newest_sweep,
    trial_by_number,
)

if TYPE_CHECKING:  # imported when a command needs it: --help and wrong paths answer sooner
    import pandas as pd


def cmd_best(args: argparse.Namespace) -> int:
    trials = load_trials(args.sweep_dir)
    # the trials that could have been the best: complete ones, and those nothing says ended how
    candidates = (trials["state"] == "COMPLETE") | trials["state"].isna()
    best = best_of(leave_out_damaged("best", trials, candidates), args.sweep_dir)
    trial_dir = Path(best["trial_dir"])
    objective = best["objective"] if isinstance(best["objective"], str) else "value"
    print(f"best trial {best['number']} ({trial_dir}): {objective} = {best['value']}")
    for column in (c for c in best.index if c.startswith("params_")):
        print(f"  {column[len('params_') :]} = {best[column]}")
    result = TrialFiles(trial_dir).read_result()
    entry = program(result.entry_point if result is not None else None)
    try:
        command = Launch.of(trial_dir).command(entry, here=Path.cwd())
    except TrialFileError:  # hydra.yaml damaged: its overrides still say what was searched
        overrides = [str(o) for o in OmegaConf.load(trial_dir / ".hydra" / "overrides.yaml")]
        command = "hpsweep-train " + " ".join(shlex.quote(o) for o in overrides)
    print(f"reproduce: {command}")
    sweep = shlex.quote(str(args.sweep_dir))
    print(f"  (or re-run it and compare, epoch by epoch: hpsweep reproduce {sweep})")
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    row = trial_to_reproduce(load_trials(args.sweep_dir), args.sweep_dir, args.trial)
    trial_dir = Path(row["trial_dir"])
    out = args.out or Path(args.sweep_dir) / "reproduce" / trial_dir.name
    reproduced = rerun(row, out)
    return report_reproduction(trial_dir, out, reproduced, args.tolerance)


def trial_to_reproduce(trials: pd.DataFrame, sweep_dir: Path, number: int | None) -> pd.Series:
    """Trial `number` (None: the best); SweepDirError when it cannot be re-run and compared."""
    row = best_of(trials, sweep_dir) if number is None else trial_by_number(trials, number)
    trial_dir = Path(row["trial_dir"])
    if row["state"] == Status.FAIL.value:
        # It has no end to compare with: it stopped by an error (or its worker died), and a
        # re-run would only fail again or go further than it did.
        why = f": {row['fail_reason']}" if isinstance(row["fail_reason"], str) else ""
        raise SweepDirError(
            f"trial {row['number']} ({trial_dir}) failed, so there is no run to compare "
            f"with{why}; only COMPLETE and PRUNED trials can be reproduced"
        )
    if isinstance(row["problem"], str):
        raise SweepDirError(f"{refusal(row)}: {row['problem']}")
    if row["state"] == Status.RUNNING.value:
        raise SweepDirError(f"{refusal(row)}: it is still running; reproduce it once it has ended")
    return row


def refusal(row: pd.Series) -> str:
    return f"trial {row['number']} ({Path(row['trial_dir'])}) cannot be re-run"


def rerun(row: pd.Series, out: Path) -> list[dict[str, float]]:
    """The trial trained again from its saved config into `out`: the new metrics rows."""
    from hpsweep.errors import CheckpointError, ConfigError

    trial_dir = Path(row["trial_dir"])
    result = TrialFiles(trial_dir).read_result()
    if result is not None and result.entry_point:
        return rerun_own_task(row, result, out)
    from hpsweep.job import reproduce  # torch: seconds

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(f"re-running trial {row['number']} from {trial_dir}/.hydra/config.yaml into {out}")
    try:
        return reproduce(trial_dir, out)
    except (ConfigError, CheckpointError) as e:
        raise SweepDirError(f"{refusal(row)}: its saved config is refused: {e}") from None
    except OmegaConfBaseException as e:  # a config saved by another version of hpsweep
        first = str(e).splitlines()[0]
        raise SweepDirError(f"{refusal(row)}: its saved config does not fit: {first}") from None


def rerun_own_task(row: pd.Series, result: TrialResult, out: Path) -> list[dict[str, float]]:
    """A user's own loop (hpsweep.loop) started again: its entry point with the trial's config
    dir, config name and overrides, in the folder it started in, writing into `out`."""
    import os
    import subprocess

    from hpsweep.job import stopping_epoch

    trial_dir, out = Path(row["trial_dir"]), out.resolve()
    if out.exists() and any(out.iterdir()):
        raise SweepDirError(f"{out} exists and is not empty; choose another --out")
    try:
        launch = Launch.of(trial_dir)
    except TrialFileError as e:
        raise SweepDirError(f"{refusal(row)}: {e}") from None
    entry = str(result.entry_point)
    start = entry.split(" ", 1) if entry.startswith("-m ") else [entry]
    command = [sys.executable, *start, *launch.arguments(None), f"hydra.run.dir={out}"]
    env = dict(os.environ)
    stopped = stopping_epoch(result)
    if stopped is not None:  # it was pruned there: the re-run stops there too
        env[REPRODUCE_UNTIL] = str(stopped)
    print(f"re-running trial {row['number']} in {launch.cwd}: {shlex.join(command)}")
    # its stderr kept back: a re-run stopped where the original was pruned ends in Hydra's
    # report of optuna.TrialPruned, which says nothing here
    proc = subprocess.run(command, cwd=launch.cwd, env=env, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0 and stopped is None:
        print(proc.stderr, end="", file=sys.stderr)
    try:
        return TrialFiles(out).read_metrics()
    except TrialFileError as e:
        raise SweepDirError(
            f"{refusal(row)}: the re-run (exit code {proc.returncode}) left no metrics: {e}"
        ) from None


def report_reproduction(
    trial_dir: Path, out: Path, reproduced: list[dict[str, float]], asked: float | None
) -> int:
    """Says whether the re-run in `out` matches the original's metrics within the tolerance
    `asked` (None: exactly, or within FUSED_TOLERANCE for a fused trial): 0 if so, else 1."""
    from hpsweep.job import FUSED_TOLERANCE, compare_metrics

    original = TrialFiles(trial_dir).read_metrics()
    result = TrialFiles(trial_dir).read_result()
    tolerance = 0.0 if asked is None else asked
    differences = compare_metrics(original, reproduced, tolerance)
    epochs = f"{len(original)} epoch{'s' if len(original) != 1 else ''}"
    note = stop_note(result, out)
    if not differences:
        exact = "exactly" if tolerance == 0 else f"within {tolerance}"
        print(f"reproduced {exact}: {epochs}, every metric equal{note}")
        return 0
    fused = None if result is None else result.fused_with
    if asked is None and fused and not compare_metrics(original, reproduced, FUSED_TOLERANCE):
        # within FUSED_TOLERANCE: both ran the same epochs, so no value is None
        largest = max(differences, key=lambda d: abs((d.reproduced or 0.0) - (d.original or 0.0)))
        print(
            f"reproduced within tolerance, not exactly: {epochs}, every metric within "
            f"{FUSED_TOLERANCE}{note}. It was trained in a fused group of {fused} trials and "
            "re-run alone, which equals it up to float rounding (largest difference: "
            f"{largest.metric} in epoch {largest.epoch}, {largest.original!r} -> "
            f"{largest.reproduced!r})"
        )
        return 0
    import pandas as pd

    table = pd.DataFrame([vars(d) for d in differences])
    numbers = table[["original", "reproduced"]].astype(float)  # None: an epoch one did not run
    table["difference"] = numbers["reproduced"] - numbers["original"]
    print(f"NOT reproduced: {len(differences)} metric values differ by more than {tolerance}")
    print(table.to_string(index=False))
    return 1


def stop_note(result: TrialResult | None, out: Path) -> str:
    """For an original that stopped before its epochs: where, and whether the re-run did too."""
    from hpsweep.job import stopping_epoch

    stopped = stopping_epoch(result)
    if result is None or stopped is None:
        return ""
    again = TrialFiles(out).read_result()
    how = "was pruned" if result.status is Status.PRUNED else "stopped early"
    same = again is not None and again.epochs_run == stopped
    there = "the re-run stopped there too" if same else "the re-run did not stop there"
    return f" (the original {how} after epoch {stopped}; {there})"


def cmd_plot(args: argparse.Namespace) -> int:
    from hpsweep.plots import plot_sweep

    trials = load_trials(args.sweep_dir)
    trials = leave_out_damaged("plot", trials, damaged(trials))
    for path in plot_sweep(args.sweep_dir, top_k=args.top, trials=trials):
        print(path)
    return 0


def sweep_program(sweep_dir: Path) -> str:
    """What runs the sweep's trials: a user's own loop (hpsweep.loop) says so in result.json;
    else hpsweep-train."""
    for trial_dir in find_trials(sweep_dir).dirs:
        try:
            result = TrialFiles(trial_dir).read_result()
        except TrialFileError:
            continue
        if result is not None:
            return program(result.entry_point)
    return "hpsweep-train"


def program(entry_point: str | None) -> str:
    """The command that starts a trial's task: hpsweep-train, or a user's own loop's script
    (`python <path>`) or module (`python -m <module>`)."""
    if entry_point is None:
        return "hpsweep-train"
    own = entry_point if entry_point.startswith("-m ") else shlex.quote(entry_point)
    return f"python {own}"


def cmd_rebuild(args: argparse.Namespace) -> int:
    import optuna

    from hpsweep.results import rebuild
    from hydra_plugins.hpsweep_sweeper import RebuildError

    if find_trials(args.sweep_dir).single_runs:
        raise SweepDirError(
            f"{args.sweep_dir} holds single runs (hpsweep-train without -m): they have no "
            "study to rebuild"
        )
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # what it did is said below
    try:
        rebuilt = rebuild(args.sweep_dir, args.storage)
    except RebuildError as e:
        print(f"hpsweep rebuild: {e}", file=sys.stderr)
        return 2
    for note in rebuilt.notes:
        print(f"hpsweep rebuild: {note}", file=sys.stderr)
    if rebuilt.backup is not None:
        print(f"moved the old journal to {rebuilt.backup}")
    states = ", ".join(f"{n} {state}" for state, n in sorted(rebuilt.states.items()))
    print(f"rebuilt study {rebuilt.study_name} in {rebuilt.storage}: {states}")
    print(f"continue it: {sweep_program(args.sweep_dir)} {rebuilt.arguments}")
    return 0


class Parser(argparse.ArgumentParser):
    """argparse, with its errors in one line (the usage is one --help away)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def count(text: str) -> int:
    """--top: a whole number >= 0."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, not {text!r}")
    return value


def seconds(text: str) -> float:
    """--watch: a number of seconds > 0."""
    try:
        value = float(text)
    except ValueError:  # argparse takes a SWEEP_DIR after --watch for its value
        raise argparse.ArgumentTypeError(
            f"must be a number of seconds > 0, not {text!r} (SWEEP_DIR goes before --watch)"
        ) from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, not {text!r}")
    return value


def package_version() -> str:
    try:
        return version("hpsweep")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "(version unknown: not installed)"


EPILOG = """\
SWEEP_DIR: a sweep of the hpsweep sweeper (multirun/<study>/), a plain Hydra multirun of
hpsweep-train (multirun/<date>/<time>/), or a folder of single runs (outputs/<date>/: its runs
are trials 0..n-1 in the order they started). Default: the sweep under ./multirun whose trials
wrote last. `hpsweep COMMAND --help` shows a command's options.
"""


def parser() -> argparse.ArgumentParser:
    main = Parser(
        prog="hpsweep",
        usage="hpsweep [-h] [--version] COMMAND [SWEEP_DIR] [options]",
        description=__doc__.splitlines()[0],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    main.add_argument("--version", action="version", version=f"hpsweep {package_version()}")
    # listed in the epilog, one line each (argparse's own list wraps a name as long as
    # "reproduce" onto a line of its own)
    commands = main.add_subparsers(
        dest="command", metavar="COMMAND", help=argparse.SUPPRESS, prog="hpsweep"
    )
    listed: dict[str, str] = {}
    add_compare(commands, listed)
    add_command(
        commands,
        listed,
        "best",
        "print the best trial and the command that reproduces it",
        cmd_best,
    )
    add_reproduce(commands, listed)
    add_plot(commands, listed)
    add_rebuild(commands, listed)
    lines = [f"  {name:<10} {help}" for name, help in listed.items()]
    main.epilog = "commands:\n" + "\n".join(lines) + "\n\n" + EPILOG
    return main


def add_command(
    commands: argparse._SubParsersAction[Parser],
    listed: dict[str, str],
    name: str,
    help: str,
    handler: Callable[[argparse.Namespace], int],
    more: str = "",
) -> argparse.ArgumentParser:
    """A command taking SWEEP_DIR, run by `handler`; `help` is its line in `listed`, and with
    `more` its description."""
    sub = commands.add_parser(name, help=help, description=help + more)
    listed[name] = help
    sub.add_argument(
        "sweep_dir",
        nargs="?",
        type=Path,
        metavar="SWEEP_DIR",
        help="a sweep dir or a folder of single runs (default: the sweep under ./multirun "
        "whose trials wrote last)",
    )
    sub.set_defaults(handler=handler)
    return sub


def add_compare(commands: argparse._SubParsersAction[Parser], listed: dict[str, str]) -> None:
    compare = add_command(
        commands,
        listed,
        "compare",
        "print a table of the trials, best first",
        cmd_compare,
        ". An empty selection prints one line saying so (csv: the header, json: []), exit 0.",
    )
    compare.add_argument("--top", type=count, default=10, help="rows to show (default 10)")
    compare.add_argument("--sort", help="column to sort by; --sort=-COLUMN for descending")
    compare.add_argument("--state", choices=[s.value.lower() for s in Status], type=str.lower)
    compare.add_argument(
        "--format",
        choices=FORMATS,
        default="table",
        help="table and markdown round to 4 significant digits; csv and json are exact",
    )
    compare.add_argument("--columns", help="comma-separated; a trailing * matches a prefix")
    compare.add_argument(
        "--watch",
        nargs="?",
        const=5.0,
        type=seconds,
        metavar="SECONDS",
        help="print the table again whenever a trial's files change, looking every SECONDS "
        "(default 5); waits for a sweep that has no trial yet. Ctrl-C to stop",
    )


def add_reproduce(commands: argparse._SubParsersAction[Parser], listed: dict[str, str]) -> None:
    reproduce = add_command(
        commands,
        listed,
        "reproduce",
        "re-run a trial, compare its metrics with the original's",
        cmd_reproduce,
        ", epoch by epoch. The trial (default: the best) runs from its saved composed config "
        "into "
        "SWEEP_DIR/reproduce/<trial dir> (--out to choose); a pruned trial stops where it did. "
        "Exit 1 when a metric differs.",
    )
    reproduce.add_argument("--trial", type=int, help="trial number (default: the best)")
    reproduce.add_argument(
        "--tolerance",
        type=float,
        help="largest accepted difference per metric (default 0: exact; for a trial trained "
        "fused, re-run alone, within 1e-3 is said to match, and how closely)",
    )
    reproduce.add_argument(
        "--out",
        type=Path,
        help="an empty or new folder for the re-run (default: SWEEP_DIR/reproduce/<trial dir>)",
    )


def add_plot(commands: argparse._SubParsersAction[Parser], listed: dict[str, str]) -> None:
    plot = add_command(
        commands,
        listed,
        "plot",
        "write PNGs of curves, parameters and history into SWEEP_DIR",
        cmd_plot,
    )
    plot.add_argument("--top", type=count, default=5, help="trials in the curves plot")


def add_rebuild(commands: argparse._SubParsersAction[Parser], listed: dict[str, str]) -> None:
    rebuild = add_command(
        commands,
        listed,
        "rebuild",
        "write the sweep's Optuna study anew from its trial dirs alone",
        cmd_rebuild,
    )
    rebuild.add_argument(
        "--storage",
        help="journal path or database URL to write it to (default: the sweep's own; "
        "a journal there is moved aside to <name>.bak-<time>)",
    )


def main(argv: list[str] | None = None) -> int:
    cli = parser()
    args = cli.parse_args(argv)
    if args.command is None:
        cli.error("a command is required: compare, best, reproduce, plot or rebuild")
    try:
        if getattr(args, "watch", None) is not None:  # it waits for a sweep not there yet
            return watch(args)
        if args.sweep_dir is None:
            args.sweep_dir = newest_sweep()
        find_trials(args.sweep_dir)  # a clear error for a path that is not a sweep
        return args.handler(args)
    except SweepDirError as e:
        print(f"hpsweep {args.command}: {e}{hint(args.command, e)}", file=sys.stderr)
        return 2
    except FileExistsError as e:
        print(f"hpsweep {args.command}: {e}", file=sys.stderr)
        return 2
    except TrialFileError as e:  # changed after load_trials looked at it: a sweep still running
        print(f"hpsweep {args.command}: {e.path}: {e.why}", file=sys.stderr)
        return 2
    except OSError as e:  # a folder it may not read, a disk that failed
        print(f"hpsweep {args.command}: {e.filename or ''}: {e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"hpsweep {args.command}: interrupted", file=sys.stderr)
        return 130


def hint(command: str, error: SweepDirError) -> str:
    """What to run instead, for a path inside a sweep or a folder of runs."""
    if error.use is None or command == "rebuild":
        return ""
    trial = f" --trial {error.trial}" if command == "reproduce" and error.trial is not None else ""
    return f"; try: hpsweep {command} {shlex.quote(str(error.use))}{trial}"
