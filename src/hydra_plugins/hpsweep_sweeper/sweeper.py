from typing import TYPE_CHECKING, Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

if TYPE_CHECKING:
    from hydra_plugins.hpsweep_sweeper._settings import JobContext

# Hydra imports this module at every start-up: the sweeper's code (and Optuna) is imported only
# when it is used, from _settings and _sweep.


class HpsweepSweeper(Sweeper):
    """Optuna sweeper: asynchronous parallel trials, pruning, resumable studies."""

    def __init__(self, **settings: Any) -> None:
        # Checked in setup: an error raised here reaches the user wrapped in three lines of
        # Hydra's ("Error in call to target ...").
        self.raw_settings = settings
        self.context: JobContext | None = None  # from setup, which Hydra calls before sweep

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        from hydra_plugins.hpsweep_sweeper._settings import job_context, read_settings

        self.settings = read_settings(self.raw_settings)  # a wrong value fails before any trial
        self.context = job_context(hydra_context, task_function, config, self.settings)

    def sweep(self, arguments: list[str]) -> None:
        from hydra_plugins.hpsweep_sweeper._sweep import Sweep

        if self.context is None:
            raise RuntimeError("HpsweepSweeper.sweep was called before setup")
        Sweep(self.settings, self.context, arguments).run()
