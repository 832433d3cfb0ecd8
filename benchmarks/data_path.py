"""Samples/second of one training epoch on full MNIST: our in-memory tensor path vs the classic
torchvision `ToTensor` + `DataLoader(shuffle=True)` pipeline, without and with augmentation
(shifts of up to 2 pixels: hpsweep.data.Augment on the batch tensor vs `RandomCrop(28, padding=2)`
per sample), and for the data path alone (batches drawn, no model). Without augmentation also
hpsweep's Dataset path: the same torchvision dataset as a Dataset split, served by hpsweep's
DataLoader (hpsweep.data.iterate_batches) with 0 and 2 workers.

    HPSWEEP_DATA_ROOT=../shared/data python benchmarks/data_path.py [--quick]

Same model, optimizer, batch size and step function (hpsweep.job.train_one_epoch) on both
sides; only where the batches come from differs. The two run interleaved, repeat by repeat, so
a busy machine slows both alike; the ratio is the number to quote. Writes
benchmarks/results/data_path.json.
"""

import argparse
import os
import statistics
import time

import torch
from common import write_result  # benchmarks/ is on sys.path when run as a script
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from hpsweep.data import Augment, iterate_batches, load_splits
from hpsweep.job import make_criterion, train_one_epoch
from hpsweep.models import CNN, MLP

MODELS = {
    "mlp 784-30-10": lambda: MLP((1, 28, 28), 10, hidden_sizes=30),
    "cnn 16/32": lambda: CNN((1, 28, 28), 10, channels=16, hidden_size=128),
}
DATA_ONLY = "data path only"
# hpsweep's own Dataset path (a Dataset split through its DataLoader), without augmentation
LOADER_WORKERS = (0, 2)
SHIFT = 2


def classic_batches(root: str, batch_size: int, augment: bool) -> DataLoader:
    crop = [transforms.RandomCrop(28, padding=SHIFT)] if augment else []
    transform = transforms.Compose(
        [*crop, transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))]
    )
    dataset = datasets.MNIST(root, train=True, download=False, transform=transform)
    return DataLoader(dataset, batch_size=batch_size, shuffle=True)


def dataset_batches(root: str, batch_size: int, workers: int):
    """hpsweep's Dataset path: a map-style Dataset (the same torchvision MNIST with ToTensor and
    Normalize) served by hpsweep.data.iterate_batches' DataLoader, from the trial's generator."""
    transform = transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))]
    )
    dataset = datasets.MNIST(root, train=True, download=False, transform=transform)
    gen = torch.Generator().manual_seed(0)
    return iterate_batches(dataset, batch_size, gen, num_workers=workers)


def our_batches(splits, batch_size: int, augment: bool):
    gen = torch.Generator().manual_seed(0)
    batches = iterate_batches(splits.train, batch_size, gen)
    if not augment:
        return batches
    return Augment(fill=splits.blank, shift=SHIFT).batches(batches, gen)


def samples_per_second(model_name: str, batches, n_samples: int) -> float:
    start = time.perf_counter()
    if model_name == DATA_ONLY:
        for x, _ in batches:
            x.sum()  # touch the batch, as a first layer would
    else:
        torch.manual_seed(0)
        model = MODELS[model_name]()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        train_one_epoch(model, optimizer, make_criterion(10), batches)
    return n_samples / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 repeat, MLP only")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 256])
    args = parser.parse_args()
    root = os.environ.get("HPSWEEP_DATA_ROOT", "data")
    repeats = 1 if args.quick else args.repeats
    models = ["mlp 784-30-10"] if args.quick else list(MODELS)

    splits = load_splits("mnist", root=root, val_size=10_000)
    classic_n = len(datasets.MNIST(root, train=True, download=False))
    cases = [(model, False) for model in models]
    cases += [(DATA_ONLY, True), ("mlp 784-30-10", True)]  # with shifts, on both sides
    rows = []
    for model_name, augment in cases:
        for batch_size in args.batch_sizes:
            ours, classic = [], []
            loader: dict[int, list[float]] = {w: [] for w in LOADER_WORKERS}
            for _ in range(repeats):
                ours.append(
                    samples_per_second(
                        model_name, our_batches(splits, batch_size, augment), len(splits.train)
                    )
                )
                classic.append(
                    samples_per_second(
                        model_name, classic_batches(root, batch_size, augment), classic_n
                    )
                )
                for workers in LOADER_WORKERS if not augment else ():
                    loader[workers].append(
                        samples_per_second(
                            model_name, dataset_batches(root, batch_size, workers), classic_n
                        )
                    )
            row = {
                "model": model_name,
                "augment": f"shift {SHIFT}" if augment else "none",
                "batch_size": batch_size,
                "ours_samples_per_s": statistics.median(ours),
                "classic_samples_per_s": statistics.median(classic),
            }
            for workers, rates in loader.items():
                if rates:
                    row[f"dataset_workers{workers}_samples_per_s"] = statistics.median(rates)
            row["speedup"] = row["ours_samples_per_s"] / row["classic_samples_per_s"]
            rows.append(row)
            ours_rate, classic_rate = row["ours_samples_per_s"], row["classic_samples_per_s"]
            dataset = "".join(
                f"  Dataset w{w} {row[f'dataset_workers{w}_samples_per_s']:>8,.0f}/s"
                for w in LOADER_WORKERS
                if f"dataset_workers{w}_samples_per_s" in row
            )
            print(
                f"{model_name:<14} augment {row['augment']:<7} batch {batch_size:>4}  "
                f"ours {ours_rate:>9,.0f}/s  classic {classic_rate:>8,.0f}/s  "
                f"speedup {row['speedup']:5.1f}x{dataset}",
                flush=True,
            )

    write_result("data_path", rows, quick=args.quick, extra={"repeats": repeats})


if __name__ == "__main__":
    main()
