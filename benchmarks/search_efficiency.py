"""Search efficiency on a fixed budget of training epochs: random search, TPE, TPE + median
pruning, TPE + Hyperband, and a plain Hydra grid (BasicSweeper), over the `mlp` preset's space on
mnist_mini (hidden size 16-256, learning rate 1e-4 to 1e-1 on a log scale, batch size 32-256;
5 epochs a trial at most). The grid covers that space the way one writes it by hand: every
width and batch size, learning rates a decade apart: 5 x 4 x 4 = 80 trials, 400 epochs.

    python benchmarks/search_efficiency.py [--quick]

Every method gets the grid's epoch budget (hydra.sweeper.epoch_budget; pruned trials count the
epochs they ran). Trials count in the order they started, and the curve is the best validation
accuracy reached against epochs (and seconds) spent. Seeds vary the samplers; the grid is the
same every time. --quick: one seed, 3 epochs a trial, and a smaller space for every method
(widths 16/64/256, batch 32/256: a 24-trial grid, 72 epochs). Writes
benchmarks/results/search_efficiency.json.
"""

import argparse
import statistics
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

import yaml
from common import load_study, run_sweep, write_result

from hpsweep.record import TrialFiles
from hydra_plugins.hpsweep_sweeper import TRIAL_DIR

WIDTHS, BATCH_SIZES, LRS = (16, 32, 64, 128, 256), (32, 64, 128, 256), (0.0001, 0.001, 0.01, 0.1)
QUICK_WIDTHS, QUICK_BATCH_SIZES = (16, 64, 256), (32, 256)


class Trial(NamedTuple):
    epochs: int  # epochs it ran (a pruned trial: until it was stopped)
    value: float  # its best val acc
    seconds: float  # its training time (result.json wall_time_s)
    params: Any


def joined(values: tuple) -> str:
    return ",".join(map(str, values))


def curve(trials: list[Trial], budget: int) -> list[tuple[int, float, float]]:
    """(epochs spent, seconds spent, best so far) after each trial, within the budget."""
    points, spent, seconds, best = [], 0, 0.0, 0.0
    for t in trials:
        if spent + t.epochs > budget:
            break
        spent, seconds, best = spent + t.epochs, seconds + t.seconds, max(best, t.value)
        points.append((spent, seconds, best))
    return points


def optuna_trials(folder: Path, name: str, *overrides: str) -> tuple[list[Trial], float]:
    wall = run_sweep(folder, "sweep=mlp", f"hydra.sweeper.study_name={name}", *overrides)
    sweep = folder / "multirun" / name
    trials = []
    for t in sorted(load_study(sweep, name).trials, key=lambda t: t.datetime_start):
        result = TrialFiles(sweep / t.user_attrs[TRIAL_DIR]).read_result()
        trials.append(Trial(result.epochs_run, result.value, result.wall_time_s, t.params))
    return trials, wall


def grid_trials(
    folder: Path, epochs: int, widths: tuple, batch_sizes: tuple
) -> tuple[list[Trial], float]:
    grid = [
        f"model.hidden_sizes={joined(widths)}",
        f"optimizer.lr={joined(LRS)}",
        f"batch_size={joined(batch_sizes)}",
    ]
    wall = run_sweep(folder, *grid, f"epochs={epochs}", "hydra.sweep.dir=grid")
    # BasicSweeper's job dirs are numbered in launch order
    dirs = sorted((folder / "grid").glob("*/result.json"), key=lambda p: int(p.parent.name))
    trials = []
    for path in dirs:
        r = TrialFiles(path.parent).read_result()
        params = yaml.safe_load((path.parent / ".hydra" / "overrides.yaml").read_text())
        trials.append(Trial(r.epochs_run, r.value, r.wall_time_s, params))
    return trials, wall


def summary(
    method: str,
    seed: int | None,
    trials: list[Trial],
    wall: float,
    budget: int,
    grid_best: float | None = None,
) -> dict:
    points = curve(trials, budget)
    best = points[-1][2]
    within = trials[: len(points)]
    return {
        "method": method,
        "seed": seed,
        "best_val_acc": best,
        "epochs": points[-1][0],
        "train_seconds": points[-1][1],
        "process_seconds": wall,
        # for the grid itself: when it found its own best
        "epochs_to_grid_best": next((e for e, _, b in points if b >= (grid_best or best)), None),
        "trials": len(points),
        "best_params": max(within, key=lambda t: t.value).params,
        "curve": points,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one seed, 3 epochs a trial")
    args = parser.parse_args()
    seeds, epochs = ([0], 3) if args.quick else ([0, 1, 2], 5)
    widths, batch_sizes = (QUICK_WIDTHS, QUICK_BATCH_SIZES) if args.quick else (WIDTHS, BATCH_SIZES)
    budget = len(widths) * len(batch_sizes) * len(LRS) * epochs  # what the grid spends
    # the Optuna methods search the preset's space, narrowed to the grid's widths and batches
    space = [
        f"model.hidden_sizes=choice({joined(widths)})",
        f"batch_size=choice({joined(batch_sizes)})",
    ]
    methods = {
        "random": ["hydra/sweeper/sampler=random", "hydra/sweeper/pruner=none"],
        "tpe": ["hydra/sweeper/pruner=none"],
        "tpe + median": ["hydra/sweeper/pruner=median"],
        "tpe + hyperband": ["hydra/sweeper/pruner=hyperband"],
    }
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        trials, wall = grid_trials(folder, epochs, widths, batch_sizes)
        rows.append(summary("grid (BasicSweeper)", None, trials, wall, budget))
        grid_best = rows[0]["best_val_acc"]
        print(
            f"{'grid (BasicSweeper)':<20}         best {grid_best:.4f}  "
            f"reached after {rows[0]['epochs_to_grid_best']} of {budget} epochs",
            flush=True,
        )
        for method, overrides in methods.items():
            for seed in seeds:
                name = f"{method.replace(' + ', '_')}_{seed}"
                trials, wall = optuna_trials(
                    folder,
                    name,
                    *overrides,
                    *space,
                    f"epochs={epochs}",
                    f"hydra.sweeper.sampler.seed={seed}",
                    f"hydra.sweeper.epoch_budget={budget}",
                    f"hydra.sweeper.n_trials={budget}",  # the budget ends the sweep first
                )
                rows.append(summary(method, seed, trials, wall, budget, grid_best))
                print(
                    f"{method:<20} seed {seed}  best {rows[-1]['best_val_acc']:.4f}  grid's best "
                    f"reached after {rows[-1]['epochs_to_grid_best']} of {budget} epochs",
                    flush=True,
                )
    target = 0.4 * budget
    print("\nmethod               best val acc (mean +- sd)   epochs to the grid's best, per seed")
    for method in ["grid (BasicSweeper)", *methods]:
        mine = [r for r in rows if r["method"] == method]
        best = [r["best_val_acc"] for r in mine]
        sd = statistics.stdev(best) if len(best) > 1 else 0.0
        reach = [r["epochs_to_grid_best"] for r in mine]
        within = sum(e is not None and e <= target for e in reach)
        print(
            f"{method:<20} {statistics.mean(best):.4f} +- {sd:.4f}        {reach}"
            f"  (<= {target:.0f}, 40% of the budget: {within} of {len(reach)})"
        )
    write_result(
        "search_efficiency",
        rows,
        quick=args.quick,
        extra={"budget_epochs": budget, "grid_best": grid_best},
    )


if __name__ == "__main__":
    main()
