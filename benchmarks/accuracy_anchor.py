"""Accuracy anchor: the test accuracy on full FashionMNIST of the model a one-hour sweep picks
on validation accuracy, next to published reference points.

    HPSWEEP_DATA_ROOT=../shared/data python benchmarks/accuracy_anchor.py [--seed 0] [--quick]

The sweep is the `fashion` preset exactly as a user starts it (`hpsweep-train -m
sweep=fashion`): TPE over learning rate, weight decay, label smoothing and dropout of the VGG
model with shifts and flips, successive halving from 1 to 27 epochs, 2 workers, no trial
started after 45 minutes. --seed sets the TPE sampler's seed (a second run with another seed
shows how much the pick depends on it). The pick uses validation accuracy only
(hpsweep.results.best_trial); the test set is read once, for that trial's report.
--quick: a 3-minute sweep of 2-epoch trials on 5,000 training images, to try the script.
Writes benchmarks/results/accuracy_anchor[_seedN].json.
"""

import argparse
import os
import sys
import tempfile
from pathlib import Path

from common import run_sweep, write_result
from omegaconf import OmegaConf

from hpsweep.results import best_trial, load_trials

# Fashion-MNIST's benchmark page (github.com/zalandoresearch/fashion-mnist) and its paper
REFERENCES = [
    ("MLP 256-128-100 (Fashion-MNIST benchmark)", 0.883),
    ("2 conv + pooling (Fashion-MNIST benchmark)", 0.916),
    ("2 conv + pooling, < 100K parameters (Fashion-MNIST benchmark)", 0.925),
    ("Google AutoML Vision, 24 compute hours", 0.939),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="the TPE sampler's seed")
    parser.add_argument("--quick", action="store_true", help="a 3-minute sweep to try the script")
    parser.add_argument("--keep", type=Path, help="run the sweep in this folder and keep it")
    args = parser.parse_args()
    if not os.environ.get("HPSWEEP_DATA_ROOT"):
        sys.exit("set HPSWEEP_DATA_ROOT to the folder with FashionMNIST/raw (../shared/data)")
    quick = ["epochs=2", "data.train_size=5000", "hydra.sweeper.timeout=180"] if args.quick else []

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        wall = run_sweep(folder, "sweep=fashion", f"hydra.sweeper.sampler.seed={args.seed}", *quick)
        sweep = folder / "multirun" / "fashion"
        trials = load_trials(sweep)
        picked = best_trial(sweep)
        config = OmegaConf.load(Path(picked["trial_dir"]) / ".hydra" / "config.yaml")

    states = trials["state"].value_counts().to_dict()
    epochs = trials["epochs_run"].dropna()
    params = {
        k.removeprefix("params_"): picked[k].item() if hasattr(picked[k], "item") else picked[k]
        for k in picked.index
        if k.startswith("params_")
    }
    print(
        f"\nsweep: {wall / 60:.1f} min, {len(trials)} trials "
        f"({', '.join(f'{n} {s.lower()}' for s, n in states.items())}), "
        f"{int(epochs.sum())} epochs in all; trials that ran 1 epoch: {int((epochs == 1).sum())}, "
        f"all {config.epochs}: {int((epochs == config.epochs).sum())}"
    )
    print(
        f"picked on val acc: trial {picked['number']} ({int(picked['epochs_run'])} epochs, "
        f"{int(picked['num_params']):,} params, val acc {picked['value']:.4f}), {params}"
    )
    print(f"\n{'model':<64} {'test acc':>8}")
    print(f"{'hpsweep fashion sweep, picked on val acc':<64} {picked['test_acc']:>8.4f}")
    for name, acc in REFERENCES:
        print(f"{name:<64} {acc:>8.4f}")
    write_result(
        f"accuracy_anchor_seed{args.seed}" if args.seed else "accuracy_anchor",
        [
            {
                "trial": int(picked["number"]),
                "params": params,
                "val_acc": float(picked["value"]),
                "test_acc": float(picked["test_acc"]),
                "epochs_run": int(picked["epochs_run"]),
                "num_params": int(picked["num_params"]),
            }
        ],
        quick=args.quick,
        extra={
            "sampler_seed": args.seed,
            "sweep_minutes": wall / 60,
            "max_epochs": int(config.epochs),
            "trials": {s.lower(): int(n) for s, n in states.items()},
            "epochs_in_all": int(epochs.sum()),
            "references": dict(REFERENCES),
        },
    )


if __name__ == "__main__":
    main()
