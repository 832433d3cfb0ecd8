"""A PyTorch Lightning callback that keeps hpsweep's trial record (hpsweep.loop.TrialRecord)
of a LightningModule's training: the epoch's logged metrics into metrics.csv, reports to the
sweep's study (its pruner may stop the fit), checkpoints as last.pt / best.pt, result.json and
curves.png at the end. Needs the `lightning` package (pip install "hpsweep[lightning]").

    callback = TrialCallback(objective="val_loss")
    trainer = lightning.Trainer(max_epochs=cfg.epochs, callbacks=[callback], ...)
    trainer.fit(model, datamodule, ckpt_path=callback.resume_from)  # None for a new trial
    trainer.test(model, datamodule)                                # optional: test_* scores
    return callback.finish()
"""

from pathlib import Path
from typing import Any

import lightning.pytorch as pl

from hpsweep.loop import RECORD_KEY, TrialRecord


class TrialCallback(pl.Callback):
    """Everything the LightningModule logs per epoch (self.log("val_loss", ...)) becomes a
    metrics.csv column; `objective` must be one of them. `direction` and `trial_dir` as
    TrialRecord takes them."""

    def __init__(
        self, objective: str, direction: str | None = None, trial_dir: str | Path | None = None
    ):
        self.record = TrialRecord(objective, direction, trial_dir)
        self.test_scores: dict[str, float] = {}

    @property
    def resume_from(self) -> str | None:
        """last.pt when the trial has one (trainer.fit(..., ckpt_path=...) continues it)."""
        last = self.record.files.last
        return str(last) if last.exists() else None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.record.epochs = trainer.max_epochs

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """After the epoch's validation, with the epoch's train and validation metrics: the
        row, the report to the study (may raise optuna.TrialPruned, which Lightning lets
        through after its teardown), last.pt, and best.pt when it improved."""
        if trainer.sanity_checking:
            return
        scores = _numbers(trainer.callback_metrics)
        if trainer.optimizers:
            scores.setdefault("lr", trainer.optimizers[0].param_groups[0]["lr"])
        self.record.log_epoch(trainer.current_epoch + 1, **scores)
        files = self.record.files
        files.checkpoints.mkdir(parents=True, exist_ok=True)
        paths = [files.last] + ([files.best] if self.record.improved else [])
        for path in paths:  # Lightning's own format, whole or not at all
            temporary = path.with_name(f".{path.name}.tmp")
            trainer.save_checkpoint(temporary, weights_only=False)  # all of it: to resume
            temporary.replace(path)

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint[RECORD_KEY] = self.record.own_state()

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if trainer.state.fn != "fit":
            return  # trainer.test(ckpt_path=best.pt) loads an earlier epoch's record
        self.record.restore(checkpoint.get(RECORD_KEY, {}))

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.test_scores = {
            k: v for k, v in _numbers(trainer.callback_metrics).items() if k.startswith("test_")
        }

    def finish(self) -> float:
        """result.json and curves.png (with the test scores, if trainer.test ran); returns the
        best epoch's objective, for the task function to return to the sweeper."""
        return self.record.finish(**self.test_scores)


def _numbers(metrics: dict[str, Any]) -> dict[str, float]:
    """Lightning's logged metrics (tensors) as floats; `_step` metrics (per batch) left out."""
    return {
        k: float(v)
        for k, v in metrics.items()
        if not k.endswith("_step") and getattr(v, "numel", lambda: 1)() == 1
    }
