"""`hpsweep-train [key=value ...]` (or `python -m hpsweep.train`): one trial from the command
line. Only this adapter knows about Hydra's entry point; the job is `hpsweep.trial` (prepare,
then train: `run_trial` does both for callers without Hydra).
"""

import contextlib
import logging
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException
from omegaconf import DictConfig, OmegaConf

from hpsweep.config import CONFIG_DIR
from hpsweep.errors import CheckpointError, ConfigError
from hpsweep.record import Status, atomic_write_bytes
from hpsweep.trial import EpochHook, prepare, train
from hydra_plugins.hpsweep_sweeper import current_trial

log = logging.getLogger(__name__)


class ConfigRejected(CompactHydraException):
    """Shown by Hydra as its message alone, without a traceback: the fix is in the config."""


def report_to(trial: Any, objective: str) -> EpochHook:
    """The pruning idiom as an epoch hook: report the objective, stop if the pruner says so."""

    def hook(epoch: int, row: dict[str, float]) -> Status | None:
        try:
            trial.report(row[objective], step=epoch)
            return Status.PRUNED if trial.should_prune() else None
        except Exception as e:  # storage away past its retries: train on, unpruned, for now
            log.warning("epoch %d not reported to the study: %s", epoch, str(e).splitlines()[0])
            return None

    return hook


def save_hydra_record(cfg: DictConfig, trial_dir: Path) -> None:
    """.hydra/config.yaml, hydra.yaml and overrides.yaml, as Hydra writes them at job start.

    train.yaml sets hydra.output_subdir to null, so Hydra leaves this to the job, which writes
    them once the config passed its checks: a refused run (a typo, a resume with another
    config) must not rewrite the record of the run already in its dir."""
    hydra_cfg = HydraConfig.instance().cfg
    assert hydra_cfg is not None
    folder = trial_dir / ".hydra"
    folder.mkdir(parents=True, exist_ok=True)
    for name, node in (
        ("config.yaml", cfg),
        ("hydra.yaml", hydra_cfg),
        ("overrides.yaml", HydraConfig.get().overrides.task),
    ):
        atomic_write_bytes(folder / name, OmegaConf.to_yaml(node).encode())


@hydra.main(config_path=str(CONFIG_DIR), config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    trial_dir = Path(HydraConfig.get().runtime.output_dir)
    trial = current_trial()  # the Optuna trial when hydra/sweeper=hpsweep runs this job
    try:
        run = prepare(cfg, trial_dir)
    except (ConfigError, CheckpointError) as e:
        with contextlib.suppress(OSError):  # Hydra made the dir for this job: if still empty
            trial_dir.rmdir()
        raise ConfigRejected(str(e)) from None
    save_hydra_record(cfg, trial_dir)
    result = train(run, on_epoch_end=None if trial is None else report_to(trial, cfg.objective))
    if result.status is Status.PRUNED:
        import optuna

        raise optuna.TrialPruned(result.reason)
    return result.value


if __name__ == "__main__":
    # Run the importable module's main, not this __main__ copy: launchers that pickle the task
    # function (submitit) can then refer to it by name.
    from hpsweep.train import main as importable_main

    importable_main()
