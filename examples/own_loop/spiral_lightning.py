"""The spirals of spiral.py as a LightningModule, recorded by hpsweep.lightning.TrialCallback:
the same trial dirs, so `hpsweep compare | best | plot | reproduce` read this sweep too.

    python spiral_lightning.py -m     (pip install "hpsweep[lightning]")
"""

import hydra
import lightning.pytorch as pl
import torch
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from hpsweep.lightning import TrialCallback
from spiral import spirals


class Spirals(pl.LightningModule):
    def __init__(self, width: int, lr: float):
        super().__init__()
        self.lr = lr
        self.net = nn.Sequential(
            nn.Linear(2, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 3)
        )

    def step(self, batch: tuple[torch.Tensor, torch.Tensor], split: str) -> torch.Tensor:
        x, y = batch
        logits = self.net(x)
        loss = nn.functional.cross_entropy(logits, y)
        acc = (logits.argmax(1) == y).float().mean()
        self.log_dict({f"{split}_loss": loss, f"{split}_acc": acc}, on_step=False, on_epoch=True)
        return loss

    def training_step(self, batch, batch_idx):
        return self.step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self.step(batch, "val")

    def test_step(self, batch, batch_idx):
        self.step(batch, "test")

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)


@hydra.main(config_path="conf", config_name="lightning", version_base="1.3")
def main(cfg: DictConfig) -> float:
    pl.seed_everything(cfg.seed, workers=True)
    loaders = [
        DataLoader(TensorDataset(*spirals(n, seed)), batch_size=cfg.batch_size, shuffle=shuffle)
        for n, seed, shuffle in ((3000, 0, True), (1000, 1, False), (1000, 2, False))
    ]
    callback = TrialCallback(objective="val_loss")
    trainer = pl.Trainer(
        max_epochs=cfg.epochs,
        callbacks=[callback],
        deterministic=True,
        logger=False,
        enable_checkpointing=False,  # the callback keeps last.pt and best.pt
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    model = Spirals(cfg.width, cfg.lr)
    trainer.fit(model, loaders[0], loaders[1], ckpt_path=callback.resume_from)
    trainer.test(model, loaders[2], ckpt_path=str(callback.record.files.best), verbose=False)
    return callback.finish()


if __name__ == "__main__":
    main()
