"""Fused trials at kernel level: K MLP trials trained as one batched model (hpsweep.fused) vs
the same trials one after another through hpsweep.job.train_one_epoch.

    python benchmarks/fused_trials.py [--quick] [--threads N]

Every trial is a 784-H-10 MLP with Adam (fused=True, as conf/optimizer/adam.yaml sets) and its
own learning rate; all trials see one batch order (a sweep's trials share seed=0), so the fused
first layer is one wide GEMM. Widths 16-64 are all different (the output layer is padded to 64);
the preset's mixed widths come sorted: 5 runs of equal widths, no padding. Synthetic
MNIST-shaped batches; sequential and fused runs alternate repeat by repeat (A B A B); the
table shows trial-samples/s (K x samples / s) and their ratio. Then: where a fused step's time
goes (forward, backward, optimizer; the GEMMs alone), the optimizer variants measured for the
fused update, and the peak RSS of a K=32 group. Writes benchmarks/results/fused_trials.json.
"""

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from common import write_result  # benchmarks/ is on sys.path when run as a script

from hpsweep.fused import FusedAdam, FusedMLP, rng_after_init, train_epoch, trial_losses
from hpsweep.job import make_criterion, train_one_epoch
from hpsweep.models import MLP

PRESET_WIDTHS = (16, 32, 64, 128, 256)  # the `mlp` sweep preset's choices


def widths_for(kind: str, k: int) -> list[int]:
    if kind == "16-64":
        return [16 + (48 * i) // max(k - 1, 1) for i in range(k)]
    # sorted: equal widths adjacent, 5 runs (hpsweep.fused: one unpadded bmm per run)
    return sorted(PRESET_WIDTHS[i % len(PRESET_WIDTHS)] for i in range(k))


def learning_rates(k: int) -> list[float]:
    return [10 ** (-4 + 3 * i / max(k - 1, 1)) for i in range(k)]  # 1e-4 .. 1e-1, log scale


def make_batches(batch_size: int, steps: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(steps * batch_size, 1, 28, 28, generator=gen)
    y = torch.randint(0, 10, (steps * batch_size,), generator=gen)
    return [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(y), batch_size)]


def build(widths: list[int]) -> tuple[list[MLP], list[torch.Generator]]:
    models, gens = [], []
    for seed, width in enumerate(widths):
        torch.manual_seed(seed)
        models.append(MLP((1, 28, 28), 10, width))
        gens.append(rng_after_init())
    return models, gens


def sequential(widths: list[int], batches: list) -> float:
    models, _ = build(widths)
    optimizers = [
        torch.optim.Adam(m.parameters(), lr=lr, fused=True)
        for m, lr in zip(models, learning_rates(len(widths)), strict=True)
    ]
    start = time.perf_counter()
    for model, optimizer in zip(models, optimizers, strict=True):
        train_one_epoch(model, optimizer, make_criterion(10), batches)
    return time.perf_counter() - start


def fused_group(widths: list[int]) -> tuple[FusedMLP, FusedAdam]:
    model = FusedMLP.from_models(*build(widths))
    return model, FusedAdam(model, [{"lr": lr} for lr in learning_rates(len(widths))])


def fused(widths: list[int], batches: list) -> float:
    model, optimizer = fused_group(widths)
    start = time.perf_counter()
    train_epoch(model, optimizer, batches)
    return time.perf_counter() - start


def phases(widths: list[int], batches: list) -> dict[str, float]:
    """Microseconds per fused step in forward (+loss), backward and optimizer (zero_grad
    included), and the first layer's two GEMMs alone (forward, weight gradient): the bulk of
    the arithmetic; the output layer's bmms are ~1% of the flops."""
    model, optimizer = fused_group(widths)
    times = {"forward": 0.0, "backward": 0.0, "optimizer": 0.0, "first_layer_gemms": 0.0}
    for x, y in batches:
        t0 = time.perf_counter()
        optimizer.zero_grad()
        losses = trial_losses(model(x), y)
        t1 = time.perf_counter()
        losses.sum().backward()
        t2 = time.perf_counter()
        optimizer.step()
        t3 = time.perf_counter()
        times["forward"] += t1 - t0
        times["backward"] += t2 - t1
        times["optimizer"] += t3 - t2
    w_in = model.params[0].detach()
    grad = torch.randn(len(w_in), len(batches[0][1]))  # stands in for the first layer's grad
    start = time.perf_counter()
    for x, _ in batches:
        _ = w_in @ x.flatten(1).T  # forward
        _ = grad[:, : len(x)] @ x.flatten(1)  # d w_in
    times["first_layer_gemms"] = time.perf_counter() - start
    return {name: t / len(batches) * 1e6 for name, t in times.items()}


# --- optimizer variants for the fused update (per-trial lr, shared betas) ---


def naive_adam(model: FusedMLP, k: int) -> Callable[[], None]:
    """Adam as elementwise ops on the stacked tensors, per-trial lrs broadcast (addcdiv_
    takes a scalar value only: per-trial step sizes need a separate multiply)."""
    lrs = torch.tensor(learning_rates(k))
    lr = [model.per_trial(lrs, i) for i in range(len(model.params))]
    m = [torch.zeros_like(p) for p in model.params]
    v = [torch.zeros_like(p) for p in model.params]
    step = torch.zeros(())
    b1, b2, eps = 0.9, 0.999, 1e-8

    @torch.no_grad()
    def update() -> None:
        step.add_(1)
        bc1, bc2_sqrt = 1 - b1**step, (1 - b2**step).sqrt()
        for p, m_i, v_i, lr_i in zip(model.params, m, v, lr, strict=True):
            g = p.grad
            m_i.lerp_(g, 1 - b1)
            v_i.mul_(b2).addcmul_(g, g, value=1 - b2)
            denom = (v_i.sqrt() / bc2_sqrt).add_(eps)
            p.sub_(m_i / denom * (lr_i / bc1))

    return update


def foreach_adam(model: FusedMLP, k: int) -> Callable[[], None]:
    """torch._foreach_* with per-trial scalar lists over the per-trial views."""
    lrs = learning_rates(k)
    m = [torch.zeros_like(p) for p in model.params]
    v = [torch.zeros_like(p) for p in model.params]
    views = lambda ts: [t for trial in model.trial_views(ts) for t in trial]  # noqa: E731
    n = len(model.params)
    lr_list = [lrs[j] for j in range(k) for _ in range(n)]
    steps = [0]
    b1, b2, eps = 0.9, 0.999, 1e-8

    @torch.no_grad()
    def update() -> None:
        steps[0] += 1
        bc1, bc2_sqrt = 1 - b1 ** steps[0], (1 - b2 ** steps[0]) ** 0.5
        ps, gs = views([p.detach() for p in model.params]), views([p.grad for p in model.params])
        ms, vs = views(m), views(v)
        torch._foreach_lerp_(ms, gs, 1 - b1)
        torch._foreach_mul_(vs, b2)
        torch._foreach_addcmul_(vs, gs, gs, value=1 - b2)
        denom = torch._foreach_sqrt(vs)
        torch._foreach_div_(denom, bc2_sqrt)
        torch._foreach_add_(denom, eps)
        torch._foreach_addcdiv_(ps, ms, denom, [-lr / bc1 for lr in lr_list])

    return update


def fused_kernel_adam(model: FusedMLP, k: int) -> Callable[[], None]:
    return FusedAdam(model, [{"lr": lr} for lr in learning_rates(k)]).step


def sequential_fused_adam(model: FusedMLP, k: int) -> Callable[[], None]:
    """The reference: one torch.optim.Adam(fused=True) per trial, on per-trial tensors."""
    tensors = [
        [t.detach().clone().requires_grad_() for t in model.unstack(list(model.params), j)]
        for j in range(k)
    ]
    for trial in tensors:
        for t in trial:
            t.grad = torch.randn_like(t)
    optimizers = [
        torch.optim.Adam(ts, lr=lr, fused=True)
        for ts, lr in zip(tensors, learning_rates(k), strict=True)
    ]
    return lambda: [o.step() for o in optimizers] and None


COMPILE_SECONDS: dict[str, float] = {}


def compiled_naive_adam(model: FusedMLP, k: int) -> Callable[[], None]:
    update = torch.compile(naive_adam(model, k))
    start = time.perf_counter()
    update()
    update()
    COMPILE_SECONDS[f"{k}x{model.max_widths[1]}"] = time.perf_counter() - start
    return update


OPTIMIZERS = {
    "per-trial torch.optim.Adam(fused=True), sequential (reference)": sequential_fused_adam,
    "hpsweep.fused_train.FusedAdam: _fused_adam_ per trial on views": fused_kernel_adam,
    "elementwise ops on stacked tensors, per-trial lr tensors": naive_adam,
    "torch._foreach_* with per-trial scalar lists": foreach_adam,
    "torch.compile of the elementwise ops": compiled_naive_adam,
}


def optimizer_table(kind: str, k: int, steps: int, repeats: int) -> list[dict]:
    model = fused_group(widths_for(kind, k))[0]
    gen = torch.Generator().manual_seed(0)
    for p in model.params:
        p.grad = torch.randn(p.shape, generator=gen)
    updates = {name: make(model, k) for name, make in OPTIMIZERS.items()}
    times: dict[str, list[float]] = {name: [] for name in updates}
    for _ in range(repeats):
        for name, update in updates.items():
            start = time.perf_counter()
            for _ in range(steps):
                update()
            times[name].append((time.perf_counter() - start) / steps * 1e6)
    return [
        {"widths": kind, "K": k, "variant": name, "us_per_step": statistics.median(t)}
        for name, t in times.items()
    ]


def exactness(kind: str, k: int, steps: int = 5) -> dict[str, float]:
    """Max |weight difference| after `steps` updates on the same gradients, vs FusedAdam
    (which is bitwise equal to torch.optim.Adam(fused=True): tests/test_fused.py)."""
    results = {}
    reference = None
    for name in ("fused", "naive", "foreach"):
        model = fused_group(widths_for(kind, k))[0]
        make = {"fused": fused_kernel_adam, "naive": naive_adam}.get(name, foreach_adam)
        update = make(model, k)
        for step in range(steps):
            gen = torch.Generator().manual_seed(step)
            for p in model.params:
                p.grad = torch.randn(p.shape, generator=gen)
            update()
        weights = [p.detach().clone() for p in model.params]
        if reference is None:
            reference = weights
        else:
            diff = max((a - b).abs().max().item() for a, b in zip(weights, reference, strict=True))
            results[name] = diff
    return results


def peak_rss_child(kind: str, k: int, batch_size: int) -> None:
    batches = make_batches(batch_size, 10)
    if k:  # baseline (k=0): torch and hpsweep imported, the batches made, nothing trained
        fused(widths_for(kind, k), batches)
    # VmHWM, not ru_maxrss: ru_maxrss survives exec, so a child reports its parent's peak
    status = Path("/proc/self/status").read_text().splitlines()
    print(next(line.split()[1] for line in status if line.startswith("VmHWM")))  # KiB


def peak_rss(kind: str, k: int, batch_size: int, threads: list[str]) -> float:
    out = subprocess.run(
        [sys.executable, __file__, "--rss-child", kind, str(k), str(batch_size), *threads],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout.split()[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and repeats")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--rss-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.rss_child:
        kind, k, batch_size = args.rss_child
        peak_rss_child(kind, int(k), int(batch_size))
        return
    repeats = 1 if args.quick else 3
    rows = []
    for batch_size, steps in ((32, 100), (256, 30)):
        steps = steps // 4 if args.quick else steps
        batches = make_batches(batch_size, steps)
        for kind in ("16-64", "16-256"):
            for k in (8, 32):
                widths = widths_for(kind, k)
                fused(widths, batches[:2])  # warm-up: first calls allocate
                seq_t, fused_t = [], []
                for _ in range(repeats):  # A B A B
                    seq_t.append(sequential(widths, batches))
                    fused_t.append(fused(widths, batches))
                samples = k * steps * batch_size
                seq_rate = samples / statistics.median(seq_t)
                fused_rate = samples / statistics.median(fused_t)
                row = {
                    "batch_size": batch_size,
                    "widths": kind,
                    "K": k,
                    "sequential_trial_samples_per_s": seq_rate,
                    "fused_trial_samples_per_s": fused_rate,
                    "speedup": fused_rate / seq_rate,
                    "sequential_us_per_trial_step": statistics.median(seq_t) / k / steps * 1e6,
                    "fused_us_per_group_step": statistics.median(fused_t) / steps * 1e6,
                }
                if k == 32:
                    row["fused_phases_us_per_step"] = phases(widths, batches)
                rows.append(row)
                print(
                    f"batch {batch_size:>3} widths {kind:>6} K={k:<2}  sequential "
                    f"{seq_rate:>9,.0f}/s  fused {fused_rate:>9,.0f}/s  "
                    f"{fused_rate / seq_rate:5.2f}x",
                    flush=True,
                )
                if "fused_phases_us_per_step" in row:
                    print(
                        "    fused step, us:",
                        {n: round(v) for n, v in row["fused_phases_us_per_step"].items()},
                        flush=True,
                    )
    opt_rows = []
    for kind in ("16-64", "16-256"):
        opt_rows += optimizer_table(kind, 32, 20 if args.quick else 100, repeats)
    for row in opt_rows:
        print(
            f"optimizer, K=32 widths {row['widths']:>6}  {row['variant']:<66} "
            f"{row['us_per_step']:9.1f} us/step",
            flush=True,
        )
    exact = {kind: exactness(kind, 32) for kind in ("16-64", "16-256")}
    print("max |weight diff| vs FusedAdam after 5 steps:", exact)
    threads = ["--threads", str(args.threads)] if args.threads else []
    rss = {
        "baseline: imports and batches, nothing trained": peak_rss("16-256", 0, 256, threads),
        "K=32 group, widths 16-64, batch 256": peak_rss("16-64", 32, 256, threads),
        "K=32 group, widths 16-256, batch 256": peak_rss("16-256", 32, 256, threads),
    }
    for name, mib in rss.items():
        print(f"peak RSS {name}: {mib:.0f} MiB")
    print("torch.compile of the update (compile + first 2 steps):", COMPILE_SECONDS)
    write_result(
        "fused_trials",
        rows,
        quick=args.quick,
        extra={
            "repeats": repeats,
            "optimizer_variants": opt_rows,
            "optimizer_max_abs_diff_vs_fused_adam": exact,
            "compile_seconds": COMPILE_SECONDS,
            "peak_rss_mib": rss,
        },
    )


if __name__ == "__main__":
    main()
