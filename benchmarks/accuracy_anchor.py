"""Accuracy anchor: the test accuracy on full FashionMNIST of the config a time-boxed sweep
picks on validation accuracy, next to published reference points.

    HPSWEEP_DATA_ROOT=../shared/data python benchmarks/accuracy_anchor.py [--minutes 45] [--quick]

The sweep is the `cnn` preset as a user would start it (TPE over channels, BatchNorm, dropout
and learning rate; Hyperband pruning), 10 epochs a trial at most, 2 workers. `--minutes` is its
timeout: no trial starts after it, the running ones finish, so the whole run takes a few
minutes more. The pick uses validation accuracy only (hpsweep.results.best_trial); the test set
is read once, for that trial's report. --quick: a 2-minute sweep of 3-epoch trials.
Writes benchmarks/results/accuracy_anchor.json.
"""

import argparse
import os
import sys
import tempfile
from pathlib import Path

from common import run_sweep, write_result

from hpsweep.results import best_trial, load_trials

# Fashion-MNIST's benchmark page (github.com/zalandoresearch/fashion-mnist) and its paper
REFERENCES = [
    ("MLP 256-128-100 (Fashion-MNIST benchmark)", 0.883),
    ("2 conv + pooling (Fashion-MNIST benchmark)", 0.916),
    ("Google AutoML Vision, 24 compute hours", 0.939),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=45.0, help="the sweep's timeout")
    parser.add_argument("--quick", action="store_true", help="a 2-minute sweep, 3 epochs a trial")
    parser.add_argument("--keep", type=Path, help="run the sweep in this folder and keep it")
    args = parser.parse_args()
    minutes, epochs = (2.0, 3) if args.quick else (args.minutes, 10)
    if not os.environ.get("HPSWEEP_DATA_ROOT"):
        sys.exit("set HPSWEEP_DATA_ROOT to the folder with FashionMNIST/raw (../shared/data)")

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        wall = run_sweep(
            folder,
            "sweep=cnn",
            "data=fashion_mnist",
            f"epochs={epochs}",
            "hydra.sweeper.study_name=fashion_cnn",
            f"hydra.sweeper.timeout={minutes * 60}",
            "hydra.sweeper.n_trials=1000",  # the timeout ends the sweep first
            "hydra.sweeper.n_jobs=2",
        )
        sweep = folder / "multirun" / "fashion_cnn"
        trials = load_trials(sweep)
        picked = best_trial(sweep)

    states = trials["state"].value_counts().to_dict()
    params = {
        k.removeprefix("params_"): picked[k].item() if hasattr(picked[k], "item") else picked[k]
        for k in picked.index
        if k.startswith("params_")
    }
    print(
        f"\nsweep: {wall / 60:.1f} min ({minutes:g} min timeout), {len(trials)} trials "
        f"({', '.join(f'{n} {s.lower()}' for s, n in states.items())}), {epochs} epochs at most"
    )
    print(f"picked on val acc: trial {picked['number']}, {params}")
    print(f"\n{'model':<48} {'test acc':>8}")
    print(f"{'hpsweep cnn sweep, picked on val acc':<48} {picked['test_acc']:>8.4f}")
    for name, acc in REFERENCES:
        print(f"{name:<48} {acc:>8.4f}")
    write_result(
        "accuracy_anchor",
        [
            {
                "trial": int(picked["number"]),
                "params": params,
                "val_acc": float(picked["value"]),
                "test_acc": float(picked["test_acc"]),
                "epochs_run": int(picked["epochs_run"]),
            }
        ],
        quick=args.quick,
        extra={
            "sweep_minutes": wall / 60,
            "timeout_minutes": minutes,
            "max_epochs": epochs,
            "trials": {s.lower(): int(n) for s, n in states.items()},
            "references": dict(REFERENCES),
        },
    )


if __name__ == "__main__":
    main()
