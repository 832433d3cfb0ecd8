"""A trial's job as the sweeper runs it in its own process (hpsweep_sweeper._job, which
copies the config once) is the job Hydra's run_job runs: the same config and HydraConfig in
the task, the same callbacks' view, working dir, environment, .hydra files, log and
JobReturn, and the same state left behind."""

import copy
import logging
import logging.handlers
import os
import re
import shutil

import pytest
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobStatus, run_job
from hydra.experimental.callback import Callback
from hydra.types import HydraContext
from omegaconf import OmegaConf, open_dict

from hydra_plugins.hpsweep_sweeper import _compat
from hydra_plugins.hpsweep_sweeper._job import run_sweep_job
from tests.conftest import compose_config

# HydraConfig resolves an interpolation of the rest of the config (the JobReturn's copy of
# it, made by run_job, cannot: see the JobReturn's unresolved below)
FROM_CONFIG = "hydra.help.header=lr${optimizer.lr}"
seen: list[tuple] = []  # what the task and the callbacks saw, in order


class Seen(Callback):
    def on_job_start(self, config, *, task_function, **kwargs):
        seen.append(("start", OmegaConf.to_yaml(config), os.getcwd()))

    def on_job_end(self, config, job_return, **kwargs):
        r = job_return
        hydra = OmegaConf.to_yaml(r.hydra_cfg)
        outcome = repr(r._return_value)
        task = OmegaConf.to_yaml(r.cfg)
        seen.append(("end", OmegaConf.to_yaml(config), hydra, task, outcome, r.overrides))
        seen.append(("end", r.working_dir, r.status, r.task_name, os.getcwd()))
        seen.append(("flushed", len(buffered[0].target.records)))


class Kept(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records = []

    def emit(self, record):
        self.records.append(record)


# a handler the task makes, which keeps its lines until flushed: the job flushes every handler
# at its end, before on_job_end (kept here: logging holds handlers weakly)
buffered: list[logging.handlers.MemoryHandler] = []


def task(cfg):
    buffered[:] = [logging.handlers.MemoryHandler(100, logging.CRITICAL, target=Kept())]
    logging.getLogger("the.task.buffered").handlers[:] = buffered
    logging.getLogger("the.task.buffered").warning("kept until flushed")
    logging.getLogger("the.task").info("lr %s, in %s", cfg.optimizer.lr, os.getcwd())
    hydra = OmegaConf.to_yaml(HydraConfig.get(), resolve=True)
    env = os.environ.get("JOB_ENV")
    seen.append(("task", OmegaConf.to_yaml(cfg, resolve=True), hydra, os.getcwd(), env))
    cfg.optimizer.lr = 1.0  # the task's own copy: the job's config keeps its value
    if cfg.epochs == 7:
        raise ValueError("seven epochs")
    return cfg.optimizer.lr * cfg.epochs


def job_config(folder, *overrides):
    """A trial's job config as a worker makes it (_worker_loop.Worker.job_config)."""
    callback = f"+hydra.callbacks.seen._target_={__name__}.Seen"
    # hydra.run.dir: ${now:...} would resolve to another second in the second job
    overrides = ("optimizer.lr=0.01", "hydra.run.dir=outputs/fixed", callback, *overrides)
    config = compose_config(*overrides, return_hydra_config=True)
    with open_dict(config):
        config.hydra.sweep.dir = str(folder)
        config.hydra.sweep.subdir = "trial_0003"
        config.hydra.job.id = "study_3"
        config.hydra.job.num = 3
    return config


def run_and_look(run, config, folder):
    """What a run of the job left: its JobReturn's fields, what was seen, the files written."""
    seen.clear()
    cwd, hydra_config = os.getcwd(), HydraConfig.instance().cfg
    ret = run(HydraContext(config_loader=None, callbacks=_compat.Callbacks(config)), config)
    assert (os.getcwd(), HydraConfig.instance().cfg) == (cwd, hydra_config)
    files = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():  # the log's times differ from run to run
            files[str(path.relative_to(folder))] = re.sub(r"\[[\d :,-]+\]", "", path.read_text())
    looked = (ret.status, repr(ret._return_value), ret.task_name, ret.overrides, ret.working_dir)
    looked += (OmegaConf.to_yaml(ret.cfg), OmegaConf.to_yaml(ret.hydra_cfg))
    shutil.rmtree(folder)
    return looked, list(seen), files, OmegaConf.to_yaml(config)


def hydra_run_job(hydra_context, config):
    return run_job(
        task_function=task,
        config=config,
        job_dir_key="hydra.sweep.dir",
        job_subdir_key="hydra.sweep.subdir",
        hydra_context=hydra_context,
    )


def sweeper_run_job(hydra_context, config):
    return run_sweep_job(hydra_context, task, config)


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:], root.level = handlers, level


@pytest.mark.parametrize(
    "overrides",
    [
        (),  # as hpsweep-train runs: .hydra written by the task (output_subdir null)
        (
            "hydra.output_subdir=.hydra",
            "hydra.job.chdir=true",
            "+hydra.job.env_set.JOB_ENV=x",
            FROM_CONFIG,
        ),
        ("epochs=7", "hydra.output_subdir=records"),  # a task that raises
    ],
    ids=["as-hpsweep-train", "records-chdir-env", "failing-task"],
)
def test_a_trial_job_is_what_hydra_run_job_makes_of_it(
    tmp_path, monkeypatch, restore_logging, overrides
):
    monkeypatch.chdir(tmp_path)  # a sweep dir relative to where the command runs
    folder = tmp_path / "sweep"
    config = job_config("sweep", *overrides)
    ours = run_and_look(sweeper_run_job, copy.deepcopy(config), folder)
    hydras = run_and_look(hydra_run_job, copy.deepcopy(config), folder)
    assert ours == hydras
    (status, outcome, *_), what_was_seen, files, _ = ours
    # the task ran, saw its config, and the callbacks saw it end
    assert [s[0] for s in what_was_seen] == ["start", "task", "end", "end", "flushed"]
    assert what_was_seen[-1] == ("flushed", 1)
    assert "lr 0.01" in files["trial_0003/app.log"]
    if "epochs=7" in overrides:
        assert (status, outcome) == (JobStatus.FAILED, "ValueError('seven epochs')")
        assert set(files) == {"trial_0003/app.log", *(f"trial_0003/records/{n}" for n in (
            "config.yaml", "hydra.yaml", "overrides.yaml"))}  # fmt: skip
    else:
        assert status == JobStatus.COMPLETED
    if "hydra.job.chdir=true" in overrides:
        assert what_was_seen[1][3] == str(folder / "trial_0003")
        assert what_was_seen[1][4] == "x"
        assert "header: lr0.01" in what_was_seen[1][2]
