"""A user's own @hydra.main training loop, swept by hpsweep's sweeper and recorded with
hpsweep.loop.TrialRecord, so that `hpsweep compare | best | plot | reproduce` read its sweep.

    python spiral.py                  one run (outputs/<date>/<time>/)
    python spiral.py -m               the sweep in conf/config.yaml (multirun/spiral/)
    hpsweep compare multirun/spiral   best first: the lowest validation loss

Three interleaved spirals in 2-D, 3 classes: plain PyTorch, nothing of hpsweep in the loop but
the record.
"""

import math

import hydra
import torch
from omegaconf import DictConfig
from torch import nn

from hpsweep.loop import TrialRecord


def spirals(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    r = torch.rand(n, generator=g)
    angle = 3.5 * r + y * (2 * math.pi / 3) + 0.15 * torch.randn(n, generator=g)
    return torch.stack([r * torch.cos(angle), r * torch.sin(angle)], dim=1), y


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    model.eval()
    with torch.no_grad():
        logits = model(x)
    model.train()
    loss = nn.functional.cross_entropy(logits, y).item()
    return loss, (logits.argmax(1) == y).float().mean().item()


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    torch.manual_seed(cfg.seed)
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = (
        spirals(n, seed) for n, seed in ((3000, 0), (1000, 1), (1000, 2))
    )
    model = nn.Sequential(
        nn.Linear(2, cfg.width), nn.ReLU(), nn.Linear(cfg.width, cfg.width), nn.ReLU(),
        nn.Linear(cfg.width, 3),
    )  # fmt: skip
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    shuffle = torch.Generator().manual_seed(cfg.seed)

    with TrialRecord(objective="val_loss", epochs=cfg.epochs) as record:
        state = record.resume()  # a sweep's retry, or the same command again: go on from there
        if state is not None:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            shuffle.set_state(state["shuffle"])
        for _ in range(record.epochs_done + 1, cfg.epochs + 1):
            # -- train: a fresh shuffle per epoch
            order = torch.randperm(len(y_train), generator=shuffle)
            for start in range(0, len(order), cfg.batch_size):
                idx = order[start : start + cfg.batch_size]
                optimizer.zero_grad()
                loss = nn.functional.cross_entropy(model(x_train[idx]), y_train[idx])
                loss.backward()
                optimizer.step()
            # -- evaluate and record (the sweep's pruner may stop the trial here)
            train_loss, train_acc = evaluate(model, x_train, y_train)
            val_loss, val_acc = evaluate(model, x_val, y_val)
            record.log_epoch(
                train_loss=train_loss, train_acc=train_acc, val_loss=val_loss, val_acc=val_acc
            )
            record.save_checkpoint(
                {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "shuffle": shuffle.get_state()}  # fmt: skip
            )
        # -- the test set, once, on the best epoch's weights
        best = torch.load(record.files.best, weights_only=True)
        model.load_state_dict(best["model"])
        test_loss, test_acc = evaluate(model, x_test, y_test)
        return record.finish(test_loss=test_loss, test_acc=test_acc)


if __name__ == "__main__":
    main()
