"""Training samples/second of the conv models in float32 and under bf16 autocast, in NCHW and
channels-last memory order: what `precision=bf16` and `channels_last=true` buy.

    python benchmarks/conv_precision.py [--quick] [--threads 1]

One thread by default: a sweep's 2 workers each train on one core. Same model init, data and
step function (hpsweep.job.train_one_epoch) for every variant; the variants run
interleaved, repeat by repeat, so a busy machine slows them alike; quote the ratios to fp32.
bf16 pays on CPUs with avx512_bf16 or AMX (oneDNN's bf16 kernels) and on recent GPUs; an older
CPU emulates it and gets slower. Writes benchmarks/results/conv_precision.json.
"""

import argparse
import statistics
import time

import torch
from common import write_result  # benchmarks/ is on sys.path when run as a script

from hpsweep.job import AUTOCAST_DTYPES, make_criterion, train_one_epoch
from hpsweep.models import CNN, VGG

MODELS = {
    "vgg 16/32/64 (model=vgg)": lambda: VGG((1, 28, 28), 10),
    "cnn 16/32 + BN (model=cnn)": lambda: CNN((1, 28, 28), 10, channels=16, batch_norm=True),
}
VARIANTS = [("fp32", False), ("bf16", False), ("fp32", True), ("bf16", True)]


def samples_per_second(model_name: str, precision: str, channels_last: bool, batches) -> float:
    torch.manual_seed(0)
    model = MODELS[model_name]()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    train_one_epoch(
        model, optimizer, make_criterion(10), batches[:2], None, AUTOCAST_DTYPES[precision]
    )
    start = time.perf_counter()
    train_one_epoch(model, optimizer, make_criterion(10), batches, None, AUTOCAST_DTYPES[precision])
    return sum(len(y) for _, y in batches) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 repeat, fewer steps")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[128, 256])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    repeats, samples = (1, 1024) if args.quick else (args.repeats, 6144)

    rows = []
    for model_name in MODELS:
        for batch_size in args.batch_sizes:
            gen = torch.Generator().manual_seed(0)
            x = torch.randn(samples, 1, 28, 28, generator=gen)
            y = torch.randint(0, 10, (samples,), generator=gen)
            batches = [
                (x[i : i + batch_size], y[i : i + batch_size])
                for i in range(0, samples, batch_size)
            ]
            rates: dict[tuple[str, bool], list[float]] = {v: [] for v in VARIANTS}
            for _ in range(repeats):
                for precision, channels_last in VARIANTS:
                    rates[(precision, channels_last)].append(
                        samples_per_second(model_name, precision, channels_last, batches)
                    )
            base = statistics.median(rates[("fp32", False)])
            for (precision, channels_last), values in rates.items():
                rate = statistics.median(values)
                row = {
                    "model": model_name,
                    "batch_size": batch_size,
                    "precision": precision,
                    "channels_last": channels_last,
                    "samples_per_s": rate,
                    "vs_fp32": rate / base,
                }
                rows.append(row)
                layout = "channels-last" if channels_last else "NCHW"
                print(
                    f"{model_name:<28} batch {batch_size:>4}  {precision} {layout:<13} "
                    f"{rate:>7,.0f} samples/s  {rate / base:4.2f}x",
                    flush=True,
                )
    write_result(
        "conv_precision",
        rows,
        quick=args.quick,
        extra={"repeats": repeats, "threads": args.threads},
    )


if __name__ == "__main__":
    main()
