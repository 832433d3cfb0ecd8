"""The peer of benchmarks/race.py: what a user writes with Optuna alone, the way Optuna's
examples (optuna-examples/pytorch/pytorch_simple.py) teach it: a torchvision `ToTensor` +
`DataLoader` pipeline, an `objective(trial)` that suggests, trains and reports each epoch with
the three-line pruning idiom, and `study.optimize` with a timeout.

    python benchmarks/race_optuna_peer.py --root DATA_ROOT --timeout 240 --out trials.json

The same search space, model, optimizer and epochs as `hpsweep-train -m sweep=mlp data=mnist`
(an MLP 784-h-10 with ReLU, Adam, 5 epochs; h in 16-256, lr log-uniform in 1e-4-1e-1, batch
size in 32-256), TPE with seed 0 and 10 random start-up trials, the median pruner after 5
trials; validation: 10,000 images held out of the training set. Writes each trial's number,
state, value, params and end time to --out.
"""

import argparse
import json

import optuna
import torch
from torch import nn
from torch.utils.data import DataLoader, random_split
from torchvision import datasets, transforms

EPOCHS = 5


def get_loaders(root: str, batch_size: int) -> tuple[DataLoader, DataLoader]:
    transform = transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))]
    )
    train_set = datasets.MNIST(root, train=True, download=False, transform=transform)
    train, valid = random_split(
        train_set, [50_000, 10_000], generator=torch.Generator().manual_seed(0)
    )
    return (
        DataLoader(train, batch_size=batch_size, shuffle=True),
        DataLoader(valid, batch_size=1000),
    )


def define_model(trial: optuna.Trial) -> nn.Module:
    hidden = trial.suggest_categorical("model.hidden_sizes", [16, 32, 64, 128, 256])
    return nn.Sequential(nn.Flatten(), nn.Linear(784, hidden), nn.ReLU(), nn.Linear(hidden, 10))


def make_objective(root: str):
    def objective(trial: optuna.Trial) -> float:
        model = define_model(trial)
        lr = trial.suggest_float("optimizer.lr", 1e-4, 1e-1, log=True)
        batch_size = trial.suggest_categorical("batch_size", [32, 64, 128, 256])
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        train_loader, valid_loader = get_loaders(root, batch_size)
        criterion = nn.CrossEntropyLoss()

        for epoch in range(EPOCHS):
            model.train()
            for data, target in train_loader:
                optimizer.zero_grad()
                loss = criterion(model(data), target)
                loss.backward()
                optimizer.step()

            model.eval()
            correct = 0
            with torch.no_grad():
                for data, target in valid_loader:
                    correct += (model(data).argmax(dim=1) == target).sum().item()
            accuracy = correct / len(valid_loader.dataset)

            trial.report(accuracy, epoch)
            if trial.should_prune():
                raise optuna.exceptions.TrialPruned()
        return accuracy

    return objective


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="the folder holding MNIST/raw")
    parser.add_argument("--timeout", type=float, default=240)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=10),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0),
    )
    study.optimize(make_objective(args.root), n_trials=100_000, timeout=args.timeout)
    trials = [
        {
            "number": t.number,
            "state": t.state.name,
            "value": t.value,
            "params": t.params,
            "complete": t.datetime_complete.astimezone().isoformat(),
        }
        for t in study.trials
        if t.datetime_complete is not None
    ]
    with open(args.out, "w") as f:
        json.dump(trials, f, indent=1)


if __name__ == "__main__":
    main()
