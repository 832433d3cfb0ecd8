"""hydra-optuna-sweeper's `_target_`, so that its users' configs run unchanged but for
`override hydra/sweeper: hpsweep`: many of them (lightning-hydra-template's, for one) also set
`hydra.sweeper._target_: hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper`.

Hydra finds plugins by scanning hydra_plugins and knows each class by its module and name, so
the old name needs a class defined here. That plugin pins optuna<3 and cannot be installed
beside hpsweep, so nothing else answers to this name.
"""

from hydra_plugins.hpsweep_sweeper.sweeper import HpsweepSweeper


class OptunaSweeper(HpsweepSweeper):
    """hpsweep's sweeper under hydra-optuna-sweeper's name."""
