"""Time per optimizer step of the 784-30-10 MLP vs the compute limit (its matrix products alone),
and the step variants that decide the overhead.

    python benchmarks/step_overhead.py [--quick]

At small batches a step is dominated by fixed framework cost (kernel launches, autograd
bookkeeping, the optimizer's Python loop), not arithmetic. Every variant runs interleaved with
the others, repeat by repeat, on the same data; the table shows microseconds per step and the
ratio to the bare matmul loop. Writes benchmarks/results/step_overhead.json.
"""

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from common import write_result  # benchmarks/ is on sys.path when run as a script

from hpsweep.job import make_criterion, train_one_epoch
from hpsweep.models import MLP


def make_batches(batch_size: int, steps: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(steps * batch_size, 1, 28, 28, generator=gen)
    y = torch.randint(0, 10, (steps * batch_size,), generator=gen)
    return [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(y), batch_size)]


def step_loop(
    optimizer_factory: Callable, metrics: str = "hpsweep", set_to_none: bool = True
) -> Callable:
    """metrics: "hpsweep" runs hpsweep.job.train_one_epoch (on-device sums every step);
    "item" calls loss.item() every step; "none" keeps no metrics."""

    def run(batches: list) -> float:
        torch.manual_seed(0)
        model = MLP((1, 28, 28), 10, hidden_sizes=30)
        optimizer = optimizer_factory(model.parameters())
        criterion = make_criterion(10)
        start = time.perf_counter()
        if metrics == "hpsweep":
            train_one_epoch(model, optimizer, criterion, batches)
            return (time.perf_counter() - start) / len(batches)
        loss_sum = torch.zeros(())
        for x, y in batches:
            optimizer.zero_grad(set_to_none=set_to_none)
            logits = model(x)
            loss = criterion(logits, y)
            loss.backward()
            optimizer.step()
            if metrics == "item":
                loss_sum += loss.item()  # a host sync per step, as many tutorials do
        return (time.perf_counter() - start) / len(batches)

    return run


COMPILE_SECONDS: dict[int, float] = {}  # batch size -> seconds to compile and run 2 steps


def compiled_loop(optimizer_factory: Callable) -> Callable:
    """train_one_epoch on torch.compile(model). The model is compiled once per batch size and
    reused across repeats, so only the steps are timed; the compile time is kept apart."""
    state: dict[str, object] = {}

    def run(batches: list) -> float:
        if state.get("batch_size") != len(batches[0][1]):
            torch.manual_seed(0)
            model = torch.compile(MLP((1, 28, 28), 10, hidden_sizes=30))
            optimizer = optimizer_factory(model.parameters())
            start = time.perf_counter()
            train_one_epoch(model, optimizer, make_criterion(10), batches[:2])  # compiles
            COMPILE_SECONDS[len(batches[0][1])] = time.perf_counter() - start
            state.update(batch_size=len(batches[0][1]), model=model, optimizer=optimizer)
        start = time.perf_counter()
        train_one_epoch(state["model"], state["optimizer"], make_criterion(10), batches)  # type: ignore[arg-type]
        return (time.perf_counter() - start) / len(batches)

    return run


def matmul_loop(batches: list) -> float:
    """The forward and backward matrix products of the same MLP, nothing else."""
    w1, w2 = torch.randn(30, 784), torch.randn(10, 30)
    start = time.perf_counter()
    for x, _ in batches:
        x = x.flatten(1)
        h = x @ w1.T  # forward
        out = h @ w2.T
        g_out = out  # stands in for the loss gradient
        _ = g_out.T @ h  # dW2
        g_h = g_out @ w2  # dh
        _ = g_h.T @ x  # dW1
    return (time.perf_counter() - start) / len(batches)


def variants() -> dict[str, Callable]:
    sgd = lambda **kw: lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9, **kw)  # noqa: E731
    adam = lambda **kw: lambda p: torch.optim.Adam(p, lr=1e-3, **kw)  # noqa: E731
    return {
        "matmuls only (compute limit)": matmul_loop,
        "train_one_epoch, SGD for-loop": step_loop(sgd(foreach=False)),
        "train_one_epoch, SGD foreach": step_loop(sgd(foreach=True)),
        "train_one_epoch, Adam for-loop": step_loop(adam(foreach=False)),
        "train_one_epoch, Adam foreach": step_loop(adam(foreach=True)),
        "train_one_epoch, Adam fused": step_loop(adam(fused=True)),
        "SGD, loss.item() every step": step_loop(sgd(foreach=False), "item"),
        "SGD, zero_grad(set_to_none=False)": step_loop(sgd(foreach=False), "none", False),
        "SGD, no metrics at all": step_loop(sgd(foreach=False), "none"),
        "train_one_epoch, SGD, torch.compile(model)": compiled_loop(sgd(foreach=False)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and repeats")
    args = parser.parse_args()
    steps, repeats = (300, 3) if args.quick else (1500, 5)
    rows = []
    for batch_size in (32, 256):
        batches = make_batches(batch_size, steps)
        runs = variants()
        times: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(repeats):
            for name, run in runs.items():
                times[name].append(run(batches))
        floor = statistics.median(times["matmuls only (compute limit)"])
        for name, samples in times.items():
            us = statistics.median(samples) * 1e6
            rows.append(
                {
                    "batch_size": batch_size,
                    "variant": name,
                    "us_per_step": us,
                    "x_compute_limit": us / (floor * 1e6),
                }
            )
            print(
                f"batch {batch_size:>3}  {name:<36} {us:8.1f} us/step  "
                f"{us / (floor * 1e6):5.1f}x the matmuls",
                flush=True,
            )
    write_result(
        "step_overhead",
        rows,
        quick=args.quick,
        extra={"steps": steps, "repeats": repeats, "compile_seconds": COMPILE_SECONDS},
    )
    for batch_size, seconds in COMPILE_SECONDS.items():
        print(
            f"torch.compile: {seconds:.1f} s to compile and run the first 2 steps at batch "
            f"{batch_size}"
        )


if __name__ == "__main__":
    main()
