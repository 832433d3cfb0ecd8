"""hpsweep: Hydra + Optuna sweeps where every trial is a self-contained PyTorch training job."""

__version__ = "0.1.0"
