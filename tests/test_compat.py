"""The private Hydra and Optuna APIs the sweeper uses (all in _compat) still have the shape it
relies on. A failure here means Hydra or Optuna moved: re-check _compat.py against the new
version, fix what moved, then name that version in _compat.CHECKED_WITH."""

import copy
import importlib.metadata
import inspect
import json
import re
import warnings
from enum import IntEnum

import optuna
import pytest
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import OmegaConf
from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState, create_trial
from packaging.version import Version

from hydra_plugins.hpsweep_sweeper import _compat
from hydra_plugins.hpsweep_sweeper._journal import OP_CODES, RECORD_START
from tests.conftest import compose_config

RECHECK = "re-check src/hydra_plugins/hpsweep_sweeper/_compat.py against it"


@pytest.mark.parametrize("package", sorted(_compat.CHECKED_WITH))
def test_the_installed_versions_are_the_checked_ones(package):
    installed = Version(importlib.metadata.version(package))
    checked = Version(_compat.CHECKED_WITH[package])
    # patch releases keep private APIs as they were; anything else may have moved them
    same_series = installed.release[:2] == checked.release[:2] and installed >= checked
    assert same_series, (
        f"{package} {installed} is installed, _compat was checked with {checked}: {RECHECK}, "
        "then name it in CHECKED_WITH"
    )


# -- Hydra ----------------------------------------------------------------------------------


recorded: list[tuple[str, object]] = []  # what Recorder was called with


class Recorder(Callback):
    def on_job_start(self, config, *, task_function, **kwargs):
        recorded.append(("start", task_function))

    def on_job_end(self, config, job_return, **kwargs):
        recorded.append(("end", job_return.return_value))


def test_hydra_job_callbacks_are_built_from_a_config_and_called_one_job_at_a_time():
    config = OmegaConf.create(
        {"hydra": {"callbacks": {"rec": {"_target_": f"{__name__}.Recorder"}}}}
    )
    recorded.clear()
    callbacks = _compat.Callbacks(config)

    def task(cfg):
        return None

    callbacks.on_job_start(config=config, task_function=task)
    done = JobReturn(status=JobStatus.COMPLETED)
    done.return_value = 0.5
    callbacks.on_job_end(config=config, job_return=done)
    assert recorded == [("start", task), ("end", 0.5)], RECHECK


def test_overrides_are_applied_to_a_composed_config_as_a_composition_ends():
    signature = inspect.signature(_compat.ConfigLoaderImpl._apply_overrides_to_config)
    assert list(signature.parameters) == ["overrides", "cfg"], RECHECK
    config = OmegaConf.create({"a": 1, "b": {"c": "x"}})
    overrides = OverridesParser.create().parse_overrides(["a=2", "b.c=y"])
    _compat.apply_overrides(overrides, config)
    assert config == {"a": 2, "b": {"c": "y"}}, RECHECK


def test_the_override_dirname_is_hydras():
    overrides = OverridesParser.create().parse_overrides(["lr=0.1", "epochs=3", "seed=1"])
    dirname = _compat.get_overrides_dirname(
        overrides=overrides, kv_sep="-", item_sep="_", exclude_keys=["seed"]
    )
    assert dirname == "epochs-3_lr-0.1", RECHECK


def test_hydra_config_shares_a_job_configs_hydra_node_as_set_config_copies_it(tmp_path):
    config = compose_config("optimizer.lr=0.5", "hydra.help.header=${optimizer.lr}",
                            return_hydra_config=True)  # fmt: skip
    before = HydraConfig.instance().cfg
    try:
        look_at_hydra_config(config, tmp_path)
    finally:
        HydraConfig.instance().cfg = before


def look_at_hydra_config(config, tmp_path):
    other = copy.deepcopy(config)  # each its own: set_config makes its node read-only too
    HydraConfig.instance().set_config(other)
    copied = HydraConfig.instance().cfg
    _compat.use_hydra_config(config)
    shared = HydraConfig.instance().cfg
    assert shared._get_node("hydra") is config._get_node("hydra"), RECHECK
    assert copied._get_node("hydra") is not other._get_node("hydra"), RECHECK
    # a read-only node whose interpolations see the config
    for cfg, parent in ((copied, other), (shared, config)):
        assert cfg.hydra._get_parent() is parent and OmegaConf.is_readonly(cfg.hydra), RECHECK
    assert OmegaConf.to_yaml(shared) == OmegaConf.to_yaml(copied), RECHECK
    assert HydraConfig.get().help.header == "0.5"
    task = _compat.copy_without_hydra(config)
    assert "hydra" not in task and config.hydra._get_parent() is config, RECHECK
    task.optimizer.lr = 0.25  # a copy: the job's config keeps its value
    assert (config.optimizer.lr, HydraConfig.get().help.header) == (0.5, "0.5"), RECHECK
    _compat.save_config(HydraConfig.get().overrides.task, "overrides.yaml", tmp_path / "rec")
    assert (tmp_path / "rec/overrides.yaml").read_text() == "- optimizer.lr=0.5\n", RECHECK
    assert list(inspect.signature(_compat.flush_loggers).parameters) == [], RECHECK


def test_a_jobs_outcome_is_read_without_a_word_on_stderr(capfd):
    pruned = optuna.TrialPruned("epoch 2")
    failed = JobReturn(overrides=["x=1"], status=JobStatus.FAILED)
    failed.return_value = pruned
    assert "_return_value" in {f.name for f in JobReturn.__dataclass_fields__.values()}, RECHECK
    assert _compat.job_outcome(failed) is pruned
    assert capfd.readouterr().err == ""


# -- Optuna ---------------------------------------------------------------------------------


def test_the_journals_records_are_as_the_repair_reads_them(tmp_path):
    assert issubclass(_compat.JournalOperation, IntEnum), RECHECK
    path = tmp_path / "optuna.journal"
    storage = JournalStorage(JournalFileBackend(str(path)))
    study = optuna.create_study(study_name="s", storage=storage)
    trial = study.ask()
    trial.suggest_float("x", 0, 1)
    trial.set_user_attr("trial_dir", "trial_0000")
    study.tell(trial, 1.0)
    lines = path.read_bytes().splitlines(keepends=True)
    assert lines and all(line.startswith(RECORD_START) for line in lines), RECHECK
    records = [json.loads(line) for line in lines]
    assert all(r["op_code"] in OP_CODES and "worker_id" in r for r in records), RECHECK


def test_one_trial_is_read_by_its_ids():
    study = optuna.create_study(study_name="ids")
    trial = study.ask()
    storage = _compat.storage_of(study)
    assert isinstance(storage, optuna.storages.BaseStorage), RECHECK
    assert _compat.study_id(study) == storage.get_study_id_from_name("ids"), RECHECK
    frozen = storage.get_trial(_compat.trial_id(trial))
    assert frozen.number == trial.number and _compat.trial_id(frozen) == _compat.trial_id(trial)
    found = storage.get_trial_id_from_study_id_trial_number(_compat.study_id(study), 0)
    assert found == _compat.trial_id(trial), RECHECK


def test_the_private_calls_optuna_makes_on_an_rdb_storage_are_the_ones_listed():
    from optuna.storages import _cached_storage, _heartbeat

    called = set(re.findall(r"_backend\.(_\w+)\(", inspect.getsource(_cached_storage)))
    called |= set(re.findall(r"storage\.(_\w+)\(", inspect.getsource(_heartbeat)))
    assert called <= set(_compat.RDB_CACHE_CALLS), f"Optuna now calls {called}: {RECHECK}"
    for name in _compat.RDB_CACHE_CALLS:
        assert callable(getattr(RDBStorage, name, None)), f"RDBStorage.{name}: {RECHECK}"


def test_a_retry_carries_the_attributes_optunas_own_retries_carry():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study = optuna.create_study()
        trial = study.ask()
        study.tell(trial, state=TrialState.FAIL)
        RetryHeartbeatStaleTrialCallback()(study, study.trials[0])  # Optuna's own retry
        theirs = study.trials[1].system_attrs
        ours = create_trial(state=TrialState.WAITING, system_attrs=_compat.retry_system_attrs([0]))
        assert ours.system_attrs == theirs, RECHECK
        again = create_trial(
            state=TrialState.WAITING, system_attrs=_compat.retry_system_attrs([0, 3])
        )
        assert RetryHeartbeatStaleTrialCallback.retry_history(again) == [0, 3], RECHECK
        assert RetryHeartbeatStaleTrialCallback.retried_trial_number(again) == 0, RECHECK
    assert _compat.retry_history(again) == [0, 3]


def test_a_queued_trials_values_are_read_where_enqueue_trial_puts_them():
    study = optuna.create_study()
    study.enqueue_trial({"x": 3, "y": "a"})
    trial = study.ask()  # asked, and no parameter suggested yet
    frozen = study.trials[0]
    assert frozen.params == {} and _compat.queued_params(frozen) == {"x": 3, "y": "a"}, RECHECK
    assert trial.suggest_int("x", 0, 9) == 3, RECHECK
    assert _compat.queued_params(study.trials[0]) == {"x": 3, "y": "a"}, RECHECK
    study.ask()
    assert _compat.queued_params(study.trials[1]) is None


def test_the_grid_samplers_ids_and_marks_are_read_as_it_gives_them():
    grid = {"b": [1, 2], "a": [0.5, 0.25, 0.125]}
    points = _compat.grid_points(grid, seed=3)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.GridSampler(grid, seed=3))
    study.optimize(lambda t: t.suggest_float("a", 0, 1) + t.suggest_int("b", 1, 2), n_trials=6)
    assert len(points) == 6
    for trial in study.trials:
        attrs = _compat.grid_system_attrs(grid, trial.system_attrs["grid_id"])
        assert {k: trial.system_attrs[k] for k in attrs} == attrs, RECHECK
        assert points[attrs["grid_id"]] == (trial.params["a"], trial.params["b"]), RECHECK
