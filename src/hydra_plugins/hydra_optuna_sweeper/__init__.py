"""hydra-optuna-sweeper's name, answered by hpsweep's sweeper (see optuna_sweeper.py)."""
