"""`hpsweep-train [key=value ...]` (or `python -m hpsweep.train`): one trial from the command
line. Only this adapter knows about Hydra's entry point; the job is `hpsweep.job` (prepare,
then train: `run_trial` does both for callers without Hydra).

`main` reads the command line first (a few mistakes get one clear line), then hands it to
Hydra's `train_job`, which turns Ctrl-C in a single run into one line and exit code 130.
"""

import contextlib
import copy
import logging
import os
import re
import shlex
import shutil
import sys
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import CompactHydraException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, open_dict

from hpsweep.config import CONFIG_DIR, TrainConfig, check_config
from hpsweep.errors import CheckpointError, ConfigError
from hpsweep.loop import report_epoch
from hpsweep.record import (
    OBJECTIVES,
    Status,
    TrialFiles,
    TrialResult,
    finish_drawing,
    start_drawing,
)
from hydra_plugins.hpsweep_sweeper import (
    Done,
    checks_config,
    current_trial,
    declares_direction,
    exit_code,
    fusable,
    stop_on_signals,
    stopped_how,
)

if TYPE_CHECKING:
    from hpsweep.job import EpochHook, Run

# hpsweep.job (torch, the models, the data) is imported where a job runs, not with this module:
# `--help`, `--cfg job`, a refused command and a sweep's start do not pay for it.

log = logging.getLogger(__name__)

# Flags that bring configs from elsewhere: group options are then not only those in CONFIG_DIR
OTHER_CONFIGS = ("--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd")
TOP_LEVEL_OVERRIDE = re.compile(r"\+{0,2}(?P<name>[\w-]+)=(?P<value>.*)")


class ConfigRejected(CompactHydraException):
    """A sweep's job refused: the sweeper records the message as the trial's reason, Hydra
    shows it without a traceback. A single run exits with the message alone."""


def report_to(trial: Any, objective: str, epochs: int) -> "EpochHook":
    """The pruning idiom (hpsweep.loop.report_epoch) as an epoch hook: report the objective,
    stop if the pruner says so."""

    def hook(epoch: int, row: dict[str, float]) -> Status | None:
        return Status.PRUNED if report_epoch(trial, row[objective], epoch, epochs) else None

    return hook


def save_hydra_record(cfg: DictConfig, trial_dir: Path) -> None:
    """.hydra/config.yaml, hydra.yaml and overrides.yaml, as Hydra writes them at job start.

    train.yaml sets hydra.output_subdir to null, so Hydra leaves this to the job, which writes
    them once the config passed its checks: a refused run (a typo, a resume with another
    config) must not rewrite the record of the run already in its dir."""
    hydra_cfg = HydraConfig.instance().cfg
    assert hydra_cfg is not None
    TrialFiles(trial_dir).write_hydra_record(cfg, hydra_cfg, HydraConfig.get().overrides.task)


class DrawCurvesAside(Callback):
    """hydra.callbacks.curves (train.yaml): a sweep's trials hand their curves.png to a drawer
    process (hpsweep.record's start_drawing), drawn while the next trial trains, and the sweep
    waits for it at its end; its drawer first draws what a killed start left undrawn. A single
    run draws its own: it has no next trial to overlap with, and a process to start would
    only delay a refused command's answer."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        start_drawing(Path(config.hydra.sweep.dir))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        finish_drawing(Path(config.hydra.sweep.dir))


# -- Ctrl-C ----------------------------------------------------------------------------------


def continue_command(trial_dir: Path) -> str:
    """The command that continues this run: the same overrides, in this run's dir by name (a
    single run's default dir has the time in it, so the same command would start afresh)."""
    hydra_cfg = HydraConfig.get()
    args = [f"hydra.run.dir={trial_dir.resolve()}"]
    args += [
        o for o in hydra_cfg.overrides.hydra if not o.startswith(("hydra.run.dir=", "hydra.mode="))
    ]
    args += list(hydra_cfg.overrides.task)
    if hydra_cfg.job.config_name != "train":
        args = ["--config-name", str(hydra_cfg.job.config_name), *args]
    for source in hydra_cfg.runtime.config_sources:
        if source.provider == "command-line":  # --config-dir
            args = ["--config-dir", source.path.removeprefix("file://"), *args]
    return " ".join([command_name(), *(shlex.quote(a) for a in args)])


def command_name() -> str:
    """How this command was started: `hpsweep-train` when that is what PATH finds, else its
    path (a venv not activated), or `<python> -m hpsweep.train`."""
    started_as = Path(sys.argv[0])
    if started_as.name != "hpsweep-train":
        return f"{shlex.quote(sys.executable)} -m hpsweep.train"
    found = shutil.which("hpsweep-train")
    if found is not None and Path(found).resolve() == started_as.resolve():
        return "hpsweep-train"
    return shlex.quote(str(started_as))


def interrupted(run: "Run | None", trial_dir: Path, how: str = "interrupted") -> str:
    command = continue_command(trial_dir)
    if run is None:
        return f"{how} before the first epoch; start it again with: {command}"
    done, total, resumable = run.progress.epoch, run.job.cfg.epochs, run.resumable
    if done >= total:
        where = f"{how} after epoch {done} of {total}, in the final report"
        return f"{where}; finish it with: {command}"
    where = f"{how} in epoch {done + 1} of {total}"
    if resumable == 0:
        return f"{where}, before the first checkpoint; start it again with: {command}"
    return f"{where}, resumable after epoch {resumable}; continue with: {command}"


# -- fused groups (hydra.sweeper.fuse=K) ----------------------------------------------------


def group_key(config: DictConfig) -> Hashable | None:
    """Trials with equal keys train as one fused group: configs fused_trials can fuse, whose
    checkpoints (a retry resumes) stand after the same epoch."""
    from hpsweep.fused import fusion_key
    from hpsweep.job import load_resume_state

    cfg = task_config(config)
    key = fusion_key(cfg)
    if key is None:
        return None
    try:
        state = load_resume_state(Path(config.hydra.runtime.output_dir) / "checkpoints")
    except CheckpointError:
        return None  # alone: its run says what is wrong with it
    return key, 0 if state is None else state["epoch"]


def train_group(configs: Sequence[DictConfig], trials: Sequence[Any], done: Done) -> None:
    """The sweeper's job for a group: each trial prepared and recorded as train_job does it,
    then trained together (hpsweep.fused), each told to the study as it leaves."""
    import optuna

    from hpsweep.fused import prepare_member, train_fused

    # Widest last: trials of equal width run side by side (FusedMLP's runs of equal widths).
    def widths(i: int) -> list[int]:
        hidden = configs[i].model.hidden_sizes
        return [hidden] if isinstance(hidden, int) else list(hidden)

    order = sorted(range(len(configs)), key=widths)
    members, index = [], []
    for i in order:
        HydraConfig.instance().set_config(configs[i])  # the record it writes is its own
        cfg, trial_dir = task_config(configs[i]), Path(configs[i].hydra.runtime.output_dir)
        try:
            member = prepare_member(cfg, trial_dir, report_to(trials[i], cfg.objective, cfg.epochs))
        except (ConfigError, CheckpointError) as e:
            with contextlib.suppress(OSError):
                trial_dir.rmdir()
            done(i, ConfigRejected(str(e)))
            continue
        save_hydra_record(cfg, trial_dir)
        members.append(member)
        index.append(i)

    def trial_end(k: int, result: TrialResult, error: Exception | None) -> None:
        if error is not None:
            done(index[k], error)
        elif result.status is Status.PRUNED:
            done(index[k], optuna.TrialPruned(result.reason))
        else:
            done(index[k], result.value)

    if members:
        with trial_log_files([configs[i] for i in index]):
            train_fused(members, trial_end)


def may_differ(parameter: str) -> bool:
    """Whether the trials of a fused group may differ in this searched key (`key.N`: an
    element of a searched list)."""
    from hpsweep.fused import MAY_DIFFER

    return re.sub(r"\.\d+$", "", parameter) in MAY_DIFFER


def task_config(config: DictConfig) -> DictConfig:
    """A job config without its hydra node: what the task function gets (as run_job makes)."""
    cfg = copy.deepcopy(config)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def only_about(trial: str) -> Callable[[logging.LogRecord], bool]:
    """A log filter passing the group's records and those about `trial`."""
    from hpsweep.fused import SPEAKING_FOR

    return lambda record: SPEAKING_FOR.get() in (None, trial)


@contextlib.contextmanager
def trial_log_files(configs: Sequence[DictConfig]) -> Iterator[None]:
    """Hydra's job logging for a group: the console, and each trial's log file in its own dir
    with the group's lines and its own, not those about the other trials of the group."""
    from hydra.core.utils import configure_log

    first = configs[0]
    configure_log(first.hydra.job_logging, first.hydra.verbose)
    root = logging.getLogger()
    files = [h for h in root.handlers if isinstance(h, logging.FileHandler)]
    added = []
    for config in configs[1:]:
        for handler in files:  # the same file name, in this trial's dir
            name = Path(handler.baseFilename).name
            twin = logging.FileHandler(Path(config.hydra.runtime.output_dir) / name, delay=True)
            twin.setFormatter(handler.formatter)
            twin.setLevel(handler.level)
            root.addHandler(twin)
            added.append((twin, config))
    for handler in files:
        added.append((handler, first))
    for handler, config in added:
        handler.addFilter(only_about(Path(config.hydra.runtime.output_dir).name))
    try:
        yield
    finally:
        for handler, _ in added:
            handler.close()
            root.removeHandler(handler)


# -- the command -----------------------------------------------------------------------------


def check_job(config: DictConfig) -> None:
    """What a sweep checks of each value it can give, before its first trial: the config
    checks a single run makes before it loads anything."""
    check_config(task_config(config))


@hydra.main(config_path=str(CONFIG_DIR), config_name="train", version_base="1.3")
@fusable(group_key, train_group, may_differ)
@declares_direction("objective", OBJECTIVES.get)
@checks_config(check_job)
def train_job(cfg: DictConfig) -> float | None:
    trial_dir = Path(HydraConfig.get().runtime.output_dir)
    trial = current_trial()  # the Optuna trial when hydra/sweeper=hpsweep runs this job
    run = None
    try:
        try:
            check_config(cfg)  # before torch is imported: a refused command answers at once
            from hpsweep.job import prepare, train

            run = prepare(cfg, trial_dir)
        except (ConfigError, CheckpointError) as e:
            with contextlib.suppress(OSError):  # Hydra made the dir for this job: if still empty
                trial_dir.rmdir()
            if single_run():
                sys.exit(str(e))  # the line alone; Hydra would add two of its own around it
            raise ConfigRejected(str(e)) from None
        save_hydra_record(cfg, trial_dir)
        hook = None if trial is None else report_to(trial, cfg.objective, cfg.epochs)
        result = train(run, on_epoch_end=hook)
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM / SIGUSR1 (Stopped)
        if not single_run():
            raise  # a sweep's job: the sweeper says what stays resumable and exits
        log.warning(interrupted(run, trial_dir, stopped_how(e)))  # the console and train.log
        sys.exit(exit_code(e))
    if result.status is Status.PRUNED:
        import optuna

        raise optuna.TrialPruned(result.reason)
    return result.value


def single_run() -> bool:
    """Not a job of a sweep (which reports errors and interrupts its own way)."""
    return HydraConfig.get().mode == RunMode.RUN


def main() -> None:
    """hpsweep-train: Hydra's command line, plus a few things Hydra says less clearly."""
    # A user's own modules (`model._target_: mymodels.Net`) are found in the folder the command
    # starts in, as with `python -m hpsweep.train`; a console script's path has only its own.
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    sys.argv[1:] = accept_plus_experiment(sys.argv[1:])
    refuse_unknown_names(sys.argv[1:])
    try:
        with stop_on_signals():  # a scheduler's stop or SLURM's warning: as Ctrl-C
            train_job()
    except KeyboardInterrupt as e:  # while composing, or in a Hydra grid sweep's job
        print(stopped_how(e), file=sys.stderr)
        sys.exit(exit_code(e))


def accept_plus_experiment(args: list[str]) -> list[str]:
    """`+experiment=X`, the spelling from before `experiment` was in train.yaml's defaults (so
    in old commands and trials' overrides.yaml), means `experiment=X`: Hydra refuses to add
    a group that the defaults list already has."""
    if any(a.split("=")[0] in OTHER_CONFIGS for a in args):
        return args  # another primary config: its defaults may not list experiment
    return [a.removeprefix("+") if a.startswith("+experiment=") else a for a in args]


def refuse_unknown_names(args: list[str]) -> None:
    """A top-level key or group option that does not exist (`epochz=3`, `experiment=nope`):
    one line naming what there is, where Hydra prints six to ten, its search path among them.
    And `group=null`, which Hydra answers with a traceback."""
    if any(a.split("=")[0] in OTHER_CONFIGS or "hydra.searchpath" in a for a in args):
        return  # configs from other folders: Hydra checks them
    groups = {d.name for d in CONFIG_DIR.iterdir() if d.is_dir() and d.name != "hydra"}
    keys = [f.name for f in fields(TrainConfig)]
    parser = OverridesParser.create()
    for arg in args:
        match = TOP_LEVEL_OVERRIDE.fullmatch(arg)
        if arg.startswith("-") or match is None or match["name"] == "hydra":
            continue
        name = match["name"]
        try:
            override = parser.parse_override(arg)
            values = (
                list(override.sweep_string_iterator())
                if override.is_sweep_override()
                else [override.value()]
            )
        except Exception:  # not ours to explain: Hydra says what is wrong with it
            continue
        if name not in groups:
            if name not in keys:  # the words check_config uses for `+epochz=3`
                value = values[0] if len(values) == 1 else match["value"]
                sys.exit(
                    str(ConfigError(name, value, f"unknown key; the keys are {', '.join(keys)}"))
                )
            continue
        options = sorted(p.stem for p in (CONFIG_DIR / name).glob("*.yaml"))
        if None in values:  # Hydra: a ValueError with a traceback
            sys.exit(f"{name}=null: to leave the group out, write ~{name}")
        for value in values:
            if isinstance(value, str) and value not in options:
                sys.exit(
                    f"{name}={value}: there is no conf/{name}/{value}.yaml; the options are "
                    f"{', '.join(options)}"
                )


if __name__ == "__main__":
    # Run the importable module's main, not this __main__ copy: launchers that pickle the task
    # function (submitit) can then refer to it by name.
    from hpsweep.train import main as importable_main

    importable_main()
