from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class HpsweepSweeper(Sweeper):
    """Optuna sweeper: asynchronous parallel trials, pruning, resumable studies."""

    def __init__(self, **settings: Any) -> None:
        from hydra_plugins.hpsweep_sweeper._sweep import Sweep  # Optuna: only when sweeping

        self.sweep_impl = Sweep(**settings)

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.sweep_impl.setup(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> None:
        self.sweep_impl.sweep(arguments)
