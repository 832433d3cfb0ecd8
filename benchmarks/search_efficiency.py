"""Search efficiency on a fixed budget of training epochs: random search, TPE, TPE + median
pruning, TPE + Hyperband, and a plain Hydra grid (BasicSweeper), over the `mlp` space on
mnist_mini (the `mlp` preset: hidden size, log learning rate, batch size; 5 epochs a trial at
most). The grid: 3 hidden sizes x 4 learning rates at batch 64, 12 trials.

    python benchmarks/search_efficiency.py [--quick]

Each method gets the same epoch budget; trials count in the order they started, and the curve
is the best validation accuracy reached against epochs (and seconds) spent. Seeds vary the
samplers; the grid is the same every time. Writes benchmarks/results/search_efficiency.json.
"""

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from common import load_study, run_sweep, write_result

EPOCHS = 5
GRID = ["model.hidden_sizes=32,128,256", "optimizer.lr=0.0003,0.001,0.003,0.01"]  # 12 trials


def curve(trials: list[tuple[int, float, float]], budget: int) -> list[tuple[int, float, float]]:
    """(epochs spent, seconds spent, best so far) after each trial, within the budget."""
    points, spent, seconds, best = [], 0, 0.0, 0.0
    for epochs, value, wall in trials:
        if spent + epochs > budget:
            break
        spent, seconds, best = spent + epochs, seconds + wall, max(best, value)
        points.append((spent, seconds, best))
    return points


def optuna_trials(folder: Path, name: str, *overrides: str) -> tuple[list, float]:
    wall = run_sweep(folder, "sweep=mlp", f"hydra.sweeper.study_name={name}", *overrides)
    sweep = folder / "multirun" / name
    trials = []
    for t in sorted(load_study(sweep, name).trials, key=lambda t: t.datetime_start):
        result = json.loads((sweep / t.user_attrs["trial_dir"] / "result.json").read_text())
        trials.append((result["epochs_run"], result["value"], result["wall_time_s"]))
    return trials, wall


def grid_trials(folder: Path) -> tuple[list, float]:
    wall = run_sweep(folder, *GRID, "batch_size=64", f"epochs={EPOCHS}", "hydra.sweep.dir=grid")
    results = [json.loads(p.read_text()) for p in (folder / "grid").glob("*/result.json")]
    trials = [(r["epochs_run"], r["value"], r["wall_time_s"]) for r in results]
    return trials, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one seed")
    args = parser.parse_args()
    seeds = [0] if args.quick else [0, 1, 2]
    budget = 12 * EPOCHS  # what the 12-point grid spends
    methods = {
        "random": ["hydra/sweeper/sampler=random", "hydra/sweeper/pruner=none"],
        "tpe": ["hydra/sweeper/pruner=none"],
        "tpe + median": ["hydra/sweeper/pruner=median"],
        "tpe + hyperband": ["hydra/sweeper/pruner=hyperband"],
    }
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        trials, wall = grid_trials(folder)
        grid_best = curve(trials, budget)[-1][2]
        rows.append(
            {
                "method": "grid (BasicSweeper)",
                "seed": None,
                "best_val_acc": grid_best,
                "epochs": sum(t[0] for t in trials),
                "process_seconds": wall,
                "epochs_to_grid_best": sum(t[0] for t in trials),
            }
        )
        print(f"grid (BasicSweeper)  best {grid_best:.4f} with {budget} epochs", flush=True)
        for method, overrides in methods.items():
            for seed in seeds:
                name = f"{method.replace(' + ', '_')}_{seed}"
                # enough trials to spend the budget even if most are pruned after one epoch
                n_trials = budget if "+" in method else budget // EPOCHS
                trials, wall = optuna_trials(
                    folder,
                    name,
                    *overrides,
                    f"epochs={EPOCHS}",
                    f"hydra.sweeper.sampler.seed={seed}",
                    f"hydra.sweeper.n_trials={n_trials}",
                )
                points = curve(trials, budget)
                reach = next((e for e, _, b in points if b >= grid_best), None)
                rows.append(
                    {
                        "method": method,
                        "seed": seed,
                        "best_val_acc": points[-1][2],
                        "epochs": points[-1][0],
                        "train_seconds": points[-1][1],
                        "process_seconds": wall,
                        "epochs_to_grid_best": reach,
                        "trials": len(points),
                        "curve": points,
                    }
                )
                print(
                    f"{method:<20} seed {seed}  best {points[-1][2]:.4f}  "
                    f"grid's best reached after {reach} of {budget} epochs",
                    flush=True,
                )
    print("\nmethod               best val acc (mean +- sd)   epochs to reach the grid's best")
    for method in ["grid (BasicSweeper)", *methods]:
        mine = [r for r in rows if r["method"] == method]
        best = [r["best_val_acc"] for r in mine]
        sd = statistics.stdev(best) if len(best) > 1 else 0.0
        reach = [r["epochs_to_grid_best"] for r in mine]
        print(f"{method:<20} {statistics.mean(best):.4f} +- {sd:.4f}        {reach}")
    write_result(
        "search_efficiency",
        rows,
        quick=args.quick,
        extra={"budget_epochs": budget, "grid_best": grid_best},
    )


if __name__ == "__main__":
    main()
