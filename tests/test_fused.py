import copy

import pytest
import torch
from torch import Tensor

from hpsweep.data import Split, iterate_batches, load_splits
from hpsweep.fused import (
    FusedAdam,
    FusedMLP,
    FusedSGD,
    clip_grad_norms,
    evaluate,
    rng_after_init,
    train_epoch,
    trial_batches,
    trial_losses,
)
from hpsweep.job import evaluate as evaluate_one
from hpsweep.job import make_criterion, train_one_epoch
from hpsweep.models import MLP

# Measured: first-step losses differ by <= 5e-7 and gradients by <= 6e-8 (abs) from the
# unfused ones (different GEMM shapes sum in a different order); asserted with ~10x margin.
LOSS_TOL, GRAD_TOL = 5e-6, 1e-6

WIDTHS = [16, 32, 64, 128, 17, 30, 100, 24, 48, 256]
# The two layouts of the later layers: all padded to the widest (one bmm), or one unpadded
# bmm per run of equal widths.
RUN_WIDTHS = [16, 16, 32, 32, 32, 64, 128, 128, 256, 256]
LAYOUTS = {"padded": WIDTHS, "runs": RUN_WIDTHS}
DROPOUTS = [0.0, 0.2, 0.5, 0.0, 0.1, 0.3, 0.0, 0.25, 0.0, 0.4]


def fuse(models, gens, layout):
    fused = FusedMLP.from_models(models, gens, layout=layout)
    assert fused.use_runs == (layout == "runs")
    return fused


def build_trials(widths, dropouts, seeds=None, activation="relu", num_outputs=10):
    """Each trial built as build.py builds it: seed, then the model; then the dropout stream."""
    models, generators = [], []
    for k, (w, p) in enumerate(zip(widths, dropouts, strict=True)):
        torch.manual_seed(k if seeds is None else seeds[k])
        models.append(MLP((1, 28, 28), num_outputs, w, activation, p))
        generators.append(rng_after_init())
    return models, generators


def synthetic(n=96, num_outputs=10, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 28, 28, generator=gen)
    if num_outputs == 1:
        return Split(x, (torch.rand(n, 1, generator=gen) > 0.5).float())
    return Split(x, torch.randint(0, 10, (n,), generator=gen))


def padded_entries(model: FusedMLP) -> list[Tensor]:
    """Every stacked tensor's entries that belong to no trial (padding)."""
    real = [torch.zeros_like(p, dtype=torch.bool) for p in model.params]
    for k in range(model.num_trials):
        for view in model.unstack(real, k):
            view.fill_(True)
    return [~r for r in real]


def test_auto_layout_runs_only_long_runs_of_very_different_widths():
    def auto(widths):
        return FusedMLP.from_models(build_trials(widths, [0.0] * len(widths))[0]).use_runs

    preset = sorted([16, 32, 64, 128, 256] * 6 + [16, 32])
    assert auto(preset)  # 32 trials in 5 runs: no padding
    assert not auto(preset[::4])  # 8 trials in 5 runs
    assert not auto(list(range(16, 64, 3)))  # 16 different widths
    assert not auto([64] * 16 + [32] * 16)  # padding only doubles


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def mini():
    return load_splits("mnist_mini", val_size=1000, train_size=2000)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("per_trial", [False, True])
@pytest.mark.parametrize(
    ("hidden", "activation", "num_outputs"),
    [(None, "relu", 10), ("deep", "sigmoid", 10), (None, "tanh", 1)],
)
def test_first_step_loss_and_gradients_equal_unfused(
    layout, per_trial, hidden, activation, num_outputs
):
    base = LAYOUTS[layout]
    widths = base if hidden is None else [[w, 8 + w // 4] for w in base]
    models, gens = build_trials(widths, DROPOUTS, activation=activation, num_outputs=num_outputs)
    unfused = [copy.deepcopy(m) for m in models]
    unfused_gens = [copy.deepcopy(g) for g in gens]
    fused = fuse(models, gens, layout)
    split = synthetic(32, num_outputs)
    if per_trial:  # every trial its own batch order, as with swept seeds
        orders = [torch.Generator().manual_seed(s) for s in range(len(WIDTHS))]
        x, y = next(trial_batches(split, 32, orders))
    else:
        x, y = split.x, split.y
    logits = fused(x, per_trial)
    losses = trial_losses(logits, y)
    losses.sum().backward()
    criterion = make_criterion(num_outputs)
    for k, model in enumerate(unfused):
        torch.set_rng_state(unfused_gens[k].get_state())  # the global stream after init
        xk, yk = (x[k], y[k]) if per_trial else (x, y)
        loss = criterion(model(xk), yk)
        loss.backward()
        assert abs(loss.item() - losses[k].item()) <= LOSS_TOL
        grads = fused.unstack([p.grad for p in fused.params], k)
        for g, p in zip(grads, model.parameters(), strict=True):
            assert g.shape == p.shape
            assert (g - p.grad).abs().max().item() <= GRAD_TOL
    # the dropout trials did drop units: without dropout their logits differ
    no_dropout = fused.eval()(x, per_trial)
    for k, p in enumerate(DROPOUTS):
        assert ((no_dropout[k] - logits[k]).abs().max().item() > 1e-3) == (p > 0)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_padding_stays_exactly_zero_after_steps(layout):
    # sigmoid(0) = 0.5: a padded unit would be non-zero without the unit mask
    widths = [[w, 8 + w // 4] for w in LAYOUTS[layout]]
    models, gens = build_trials(widths, DROPOUTS, activation="sigmoid")
    fused = fuse(models, gens, layout)
    lrs = [{"lr": 10 ** (-1 - k / 5), "weight_decay": 0.01} for k in range(len(WIDTHS))]
    optimizer = FusedAdam.adamw(fused, lrs)
    split = synthetic(96)
    train_epoch(fused, optimizer, iterate_batches(split, 32, torch.Generator().manual_seed(0)))
    masks = padded_entries(fused)
    assert sum(m.sum().item() for m in masks) > 10_000
    for i, mask in enumerate(masks):
        state = [s[i] for s in optimizer.state.values()]
        for t in (fused.params[i], fused.params[i].grad, *state):
            assert t[mask].abs().max().item() == 0.0 if mask.any() else True
    # while the real entries trained
    start = fuse(build_trials(widths, DROPOUTS, activation="sigmoid")[0], gens, layout)
    for i, (a, b, mask) in enumerate(zip(fused.params, start.params, masks, strict=True)):
        moved = (a - b)[~mask] != 0
        assert moved.float().mean().item() > 0.99, (i, moved.float().mean().item())


def run_unfused(models, gens, optimizers, splits, epochs, batch_size):
    results = []
    for model, gen, make_opt in zip(models, gens, optimizers, strict=True):
        torch.set_rng_state(gen.get_state())
        optimizer = make_opt(model.parameters())
        shuffle = torch.Generator().manual_seed(0)
        criterion = make_criterion(10)
        for _ in range(epochs):
            train = train_one_epoch(
                model, optimizer, criterion, iterate_batches(splits.train, batch_size, shuffle)
            )
        train_scores = (train["loss"], train["acc"])
        val = evaluate_one(model, criterion, splits.val)
        results.append((*train_scores, val["loss"], val["acc"]))
    return results


def run_fused(fused, optimizer, splits, epochs, batch_size):
    shuffle = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        train = train_epoch(fused, optimizer, iterate_batches(splits.train, batch_size, shuffle))
    val = evaluate(fused, splits.val)
    return [(*t, *v) for t, v in zip(train, val, strict=True)]


LRS = [3e-4, 1e-3, 3e-3, 1e-2, 2e-3, 5e-4, 7e-3, 1.5e-3, 4e-3, 8e-4]


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_epochs_of_ten_trials_end_near_the_unfused_runs(mini, layout):
    # Measured over these 10 trials x 3 epochs (and 5 epochs at batch 32), one thread: train
    # and val losses within 5e-7 of the unfused runs, accuracies identical. Asserted with
    # margin: losses within 2e-5, accuracies within 2 images.
    models, gens = build_trials(LAYOUTS[layout], DROPOUTS)
    fused = fuse(models, [copy.deepcopy(g) for g in gens], layout)
    hparams = [{"lr": lr, "weight_decay": 1e-4 * (k % 2)} for k, lr in enumerate(LRS)]
    got = run_fused(fused, FusedAdam(fused, hparams), mini, 3, 64)
    makers = [lambda p, h=h: torch.optim.Adam(p, **h, fused=True) for h in hparams]
    want = run_unfused(models, gens, makers, mini, 3, 64)
    for g, w in zip(got, want, strict=True):
        assert abs(g[0] - w[0]) <= 2e-5 and abs(g[1] - w[1]) <= 2 / 2000  # train loss, acc
        assert abs(g[2] - w[2]) <= 2e-5 and abs(g[3] - w[3]) <= 2 / 1000  # val loss, acc
    assert min(w[3] for w in want) > 0.5  # they learned


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_rerunning_a_group_is_bitwise_identical(layout):
    def run():
        models, gens = build_trials(LAYOUTS[layout], DROPOUTS)
        fused = fuse(models, gens, layout)
        optimizer = FusedSGD(fused, [{"lr": lr, "momentum": 0.9} for lr in LRS])
        split = synthetic(96)
        train_epoch(fused, optimizer, iterate_batches(split, 32, torch.Generator().manual_seed(0)))
        return [p.detach().clone() for p in fused.params]

    assert all(torch.equal(a, b) for a, b in zip(run(), run(), strict=True))


def test_trial_state_dict_loads_into_a_plain_mlp_and_back():
    models, gens = build_trials(WIDTHS, DROPOUTS)
    fused = FusedMLP.from_models(models, gens)
    train_epoch(fused, FusedAdam(fused, [{"lr": 1e-2}] * 10), [(synthetic(32).x, synthetic(32).y)])
    fused.eval()
    x = synthetic(50).x
    logits = fused(x)
    for k in (0, 4, 9):
        plain = MLP((1, 28, 28), 10, WIDTHS[k], dropout=DROPOUTS[k]).eval()
        plain.load_state_dict(fused.trial_state_dict(k))
        assert (plain(x) - logits[k]).abs().max().item() <= 1e-5
        assert not torch.equal(plain.state_dict()["1.weight"], models[k].state_dict()["1.weight"])
    # resume: a trial's weights loaded back into another group slot
    fused.load_trial_state_dict(1, models[1].state_dict())
    assert torch.equal(fused.trial_state_dict(1)["1.weight"], models[1].state_dict()["1.weight"])


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_removing_trials_leaves_the_others_unchanged(layout):
    split = synthetic(128)
    batches = list(iterate_batches(split, 32, torch.Generator().manual_seed(0)))

    widths = LAYOUTS[layout]

    def group():
        models, gens = build_trials(widths, DROPOUTS)
        fused = fuse(models, gens, layout)
        return fused, FusedAdam(fused, [{"lr": lr} for lr in LRS])

    full, full_opt = group()
    train_epoch(full, full_opt, batches)
    part, part_opt = group()
    train_epoch(part, part_opt, batches[:2])
    keep = [0, 1, 2, 3, 5, 6, 7, 8]  # a widest (256) and another leave
    part = part.select(keep)
    part_opt = part_opt.select(part, keep)
    assert part.max_widths[1] == max(widths[k] for k in keep)
    train_epoch(part, part_opt, batches[2:])
    # measured: bitwise equal (the GEMMs sum each unit's products in the same order)
    for new, old in enumerate(keep):
        a, b = full.trial_state_dict(old), part.trial_state_dict(new)
        assert max((a[n] - b[n]).abs().max().item() for n in a) <= 1e-6


def make_grads(fused, seed):
    gen = torch.Generator().manual_seed(seed)
    for p in fused.params:
        p.grad = torch.randn(p.shape, generator=gen)
    for mask, p in zip(padded_entries(fused), fused.params, strict=True):
        p.grad[mask] = 0  # what backward leaves there


def copy_grads(fused, k, model):
    for p, g in zip(
        model.parameters(), fused.unstack([q.grad for q in fused.params], k), strict=True
    ):
        p.grad = g.clone()


@pytest.mark.parametrize(
    ("fused_opt", "torch_opt", "hparams"),
    [
        (FusedAdam, torch.optim.Adam, {"betas": (0.8, 0.99), "weight_decay": 0.1}),
        (FusedAdam.adamw, torch.optim.AdamW, {"eps": 1e-6, "weight_decay": 0.1}),
        (FusedSGD, torch.optim.SGD, {"momentum": 0.9, "weight_decay": 1e-3}),
        (FusedSGD, torch.optim.SGD, {"momentum": 0.8, "nesterov": True, "dampening": 0.0}),
        (FusedSGD, torch.optim.SGD, {}),
        # one set of hyperparameters for all: one kernel call over the stacked tensors
        (FusedAdam, torch.optim.Adam, {"lr": 3e-3, "weight_decay": 0.1}),
        (FusedSGD, torch.optim.SGD, {"lr": 3e-3, "momentum": 0.9}),
    ],
)
def test_fused_optimizers_match_torch_on_the_same_gradients(fused_opt, torch_opt, hparams):
    models, gens = build_trials(WIDTHS[:5], DROPOUTS[:5])
    fused = FusedMLP.from_models(models, gens)
    per_trial = [{"lr": lr, **hparams} for lr in LRS[:5]]
    optimizer = fused_opt(fused, per_trial)
    fused_kw = {"fused": True} if torch_opt is not torch.optim.SGD else {}
    references = [
        torch_opt(m.parameters(), **h, **fused_kw) for m, h in zip(models, per_trial, strict=True)
    ]
    for step in range(4):
        make_grads(fused, step)
        optimizer.step()
        for k, (model, ref) in enumerate(zip(models, references, strict=True)):
            copy_grads(fused, k, model)
            ref.step()
            got = fused.unstack(list(fused.params), k)
            diff = max(
                (a - b).abs().max().item() for a, b in zip(got, model.parameters(), strict=True)
            )
            # Measured: bitwise equal for Adam/AdamW (the same fused kernel); SGD's fused kernel
            # vs torch's for-loop default: <= 3.7e-9 (1 float32 ulp of these weights).
            assert diff <= (0.0 if fused_kw else 2e-8), (step, k, diff)
    state = optimizer.trial_state_dict(2)
    references[2].load_state_dict(state)  # torch.optim reads it
    for key, value in state["state"][0].items():
        assert torch.equal(references[2].state_dict()["state"][0][key], value)


def test_grad_clipping_per_trial_matches_clip_grad_norm():
    models, gens = build_trials(WIDTHS[:4], DROPOUTS[:4])
    fused = FusedMLP.from_models(models, gens)
    make_grads(fused, 0)
    for k, model in enumerate(models):
        copy_grads(fused, k, model)
    norms = clip_grad_norms(fused, 5.0)
    for k, model in enumerate(models):
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        assert abs(norm.item() - norms[k].item()) <= 1e-4 * norm.item()
        got = fused.unstack([p.grad for p in fused.params], k)
        assert (
            max(
                (a - p.grad).abs().max().item()
                for a, p in zip(got, model.parameters(), strict=True)
            )
            < 1e-7
        )
    assert all(n > 5.0 for n in norms.tolist())  # every trial was clipped
