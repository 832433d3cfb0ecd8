"""Checkpoints: one plain dict holding everything needed to resume, written atomically.

A checkpoint dict has: model, optimizer and scheduler state, epoch, rng (torch CPU, CUDA and the
shuffle generator), history (metrics rows so far), best (the best epoch's row), elapsed seconds
and config (the resolved config as plain containers). Only tensors and plain containers, so
`torch.load(..., weights_only=True)` reads it without running any pickled code.
"""

import io
import logging
from pathlib import Path
from typing import Any

import torch

from hpsweep.errors import CheckpointError
from hpsweep.record import atomic_write_bytes

log = logging.getLogger("hpsweep.job")

# Keys that may differ between a checkpoint and the config resuming it: they change where or
# how long a run goes, not what it computes.
RESUMABLE_CHANGES = {
    "epochs",
    "device",
    "num_threads",
    "checkpoint_every",
    "data.root",
    "data.download",
}


# Keys added after checkpoints were first written, with the value that computes what such a
# checkpoint computed: a checkpoint without them compares as if it had these.
ADDED_KEYS = {
    "label_smoothing": 0.0,
    "precision": "fp32",
    "channels_last": False,
    "augment._target_": "hpsweep.data.Augment",
    "augment.shift": 0,
    "augment.hflip": False,
}

# `_target_`s whose class moved when the flat modules became subpackages: a checkpoint or a
# saved config that names the old path still resumes and reproduces.
MOVED_TARGETS = {
    "hpsweep.augment.Augment": "hpsweep.data.Augment",
    "hpsweep.schedules.WarmupCosine": "hpsweep.job.WarmupCosine",
}


def save_checkpoint(state: dict[str, Any], *paths: Path) -> None:
    """Serialize once, write to each path (typically last.pt, and best.pt when it improved).
    Not synced: the trial's result.json is written after its checkpoints are (TrialFiles)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    for path in paths:
        atomic_write_bytes(path, buffer.getvalue(), sync=False)


def load_checkpoint(path: Path) -> dict[str, Any]:
    # Always onto the CPU: RNG states must be CPU tensors, and load_state_dict moves the
    # weights and optimizer state to the model's device anyway.
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for a damaged zip; all mean the same
        raise CheckpointError(f"{path} is unreadable (truncated or corrupt): {e}") from e


def load_resume_state(checkpoint_dir: Path) -> dict[str, Any] | None:
    """The state to resume from: last.pt, or best.pt if last.pt is damaged; None for a new trial.

    A damaged last.pt is renamed to last.pt.corrupt, never deleted. Resuming from best.pt
    re-runs the epochs after the best one, which gives the same results (training is
    deterministic on a given device) at the cost of the time they take.
    """
    last, best = checkpoint_dir / "last.pt", checkpoint_dir / "best.pt"
    if not last.exists():
        return load_checkpoint(best) if best.exists() else None
    try:
        return load_checkpoint(last)
    except CheckpointError as damaged:
        if not best.exists():
            raise CheckpointError(
                f"{damaged}. There is no best.pt to fall back to. Nothing was changed; delete "
                f"{checkpoint_dir} to train this trial from scratch."
            ) from damaged
        state = load_checkpoint(best)
        last.rename(last.with_name("last.pt.corrupt"))
        log.warning(
            "%s; moved it to last.pt.corrupt and resuming from best.pt (epoch %d)",
            damaged,
            state["epoch"],
        )
        return state


def capture_rng(shuffle: torch.Generator) -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "shuffle": shuffle.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any], shuffle: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    shuffle.set_state(state["shuffle"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def config_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """`key: old -> new` for each key that differs, except those a resume may change."""
    flat_old, flat_new = (current_targets(ADDED_KEYS | flatten(c)) for c in (old, new))
    return [
        f"{key}: {flat_old.get(key)!r} -> {flat_new.get(key)!r}"
        for key in sorted(flat_old.keys() | flat_new.keys())
        if key not in RESUMABLE_CHANGES and flat_old.get(key) != flat_new.get(key)
    ]


def current_targets(flat: dict[str, Any]) -> dict[str, Any]:
    """A flattened config with each moved `_target_` under its current name."""
    return {
        key: MOVED_TARGETS.get(value, value) if key.endswith("_target_") else value
        for key, value in flat.items()
    }


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
