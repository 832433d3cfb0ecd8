"""Fused trials (`hydra.sweeper.fuse=K`): K MLP trials of one group trained as one batched
model, each with its own optimizer state, batch order and trial record.
"""

from hpsweep.fused._model import FusedMLP, rng_after_init
from hpsweep.fused._steps import (
    FusedAdam,
    FusedSGD,
    clip_grad_norms,
    evaluate,
    train_epoch,
    trial_batches,
    trial_losses,
)
from hpsweep.fused._trials import (
    MAY_DIFFER,
    SPEAKING_FOR,
    fusion_key,
    prepare_member,
    run_fused_trials,
    train_fused,
)

__all__ = [
    "MAY_DIFFER",
    "SPEAKING_FOR",
    "FusedAdam",
    "FusedMLP",
    "FusedSGD",
    "clip_grad_norms",
    "evaluate",
    "fusion_key",
    "prepare_member",
    "rng_after_init",
    "run_fused_trials",
    "train_epoch",
    "train_fused",
    "trial_batches",
    "trial_losses",
]
