"""Per-trial optimizers, gradient clipping, losses, train and eval steps for a FusedMLP group.

The optimizers call torch's own fused kernels (`torch._fused_adam_`, `_fused_adamw_`,
`_fused_sgd_`) on per-trial views of the stacked tensors, one call per distinct set of
hyperparameters (one call over the whole stacked tensors when all trials share them): the
kernels take scalar hyperparameters only (a tensor lr must hold one value). Adam and AdamW are
then bitwise equal to torch.optim's fused=True. At K=32 the update is bound by memory traffic,
not dispatch: benchmarks/fused_trials.py measures the alternatives (elementwise ops on the
stacked tensors with per-trial hyperparameter tensors, _foreach_ ops, torch.compile).
"""

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from hpsweep.data import Split, iterate_batches
from hpsweep.fused._model import FusedMLP
from hpsweep.job import EVAL_BATCH_SIZE

ADAM_DEFAULTS = {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0}
SGD_DEFAULTS = {
    "lr": 1e-3,
    "momentum": 0.0,
    "dampening": 0.0,
    "nesterov": False,
    "weight_decay": 0.0,
}


def trial_losses(logits: Tensor, y: Tensor) -> Tensor:
    """Per-trial mean losses (K,) of logits (K, B, C); y is (B,)/(B, 1) shared or (K, B)/(K, B,
    1). Their sum is the loss to backpropagate: each trial's gradients are then its own."""
    k, batch, c = logits.shape
    target = y.reshape(-1, batch).expand(k, batch)
    if c == 1:
        return F.binary_cross_entropy_with_logits(logits[..., 0], target, reduction="none").mean(1)
    # (K, C, B) form: log_softmax over a last dim of 10 took 10x longer here (132 vs 14 us)
    return F.cross_entropy(logits.transpose(1, 2), target, reduction="none").mean(1)


def trial_correct(logits: Tensor, y: Tensor) -> Tensor:
    batch, c = logits.shape[1:]
    if c == 1:
        return ((logits[..., 0] > 0) == (y.reshape(-1, batch) > 0.5)).sum(1)
    # max().indices: the first maximum, as argmax; 10x faster than argmax on this layout
    return (logits.max(2).indices == y.reshape(-1, batch)).sum(1)


def trial_batches(
    split: Split, batch_size: int, generators: Sequence[torch.Generator]
) -> Iterator[tuple[Tensor, Tensor]]:
    """(K, B, ...) batches: trial k's are those iterate_batches(split, batch_size, generators[k])
    yields."""
    n = len(split)
    orders = torch.stack([torch.randperm(n, generator=g) for g in generators]).to(split.x.device)
    for start in range(0, n, batch_size):
        idx = orders[:, start : start + batch_size]
        yield split.x[idx], split.y[idx]


class FusedOptimizer:
    defaults: ClassVar[dict[str, Any]] = {}
    state_names: tuple[str, ...] = ()

    def __init__(self, model: FusedMLP, hparams: Sequence[Mapping[str, Any]]):
        if len(hparams) != model.num_trials:
            raise ValueError(f"{len(hparams)} hyperparameter sets for {model.num_trials} trials")
        unknown = {key for h in hparams for key in h} - set(self.defaults)
        if unknown:
            raise ValueError(f"{type(self).__name__} does not support {sorted(unknown)}")
        self.model = model
        self.hparams = [{**self.defaults, **h} for h in hparams]
        self.classes: dict[tuple, list[int]] = {}
        for k, h in enumerate(self.hparams):
            key = tuple((name, tuple(v) if isinstance(v, list) else v) for name, v in h.items())
            self.classes.setdefault(key, []).append(k)
        self.state = {
            name: [torch.zeros_like(p) for p in model.params] for name in self.state_names
        }
        self.steps = 0
        self._fixed_views: list[dict[str, list[Tensor]]] | None = None

    @classmethod
    def from_optimizers(
        cls, model: FusedMLP, optimizers: Sequence[torch.optim.Optimizer], **kwargs: Any
    ) -> "FusedOptimizer":
        """Hyperparameters, and state if they have any (resumed from checkpoints), read from
        the optimizers the unfused trials would use (AdamW: decoupled=True)."""
        hparams = [{k: o.param_groups[0][k] for k in cls.defaults} for o in optimizers]
        fused = cls(model, hparams, **kwargs)
        states = [[o.state[p] for p in o.param_groups[0]["params"]] for o in optimizers]
        steps = {float(s.get("step", 1)) for trial in states for s in trial if s}
        if not steps:
            return fused  # a new group
        if len(steps) > 1:
            raise ValueError(f"the trials' optimizers stand at different steps: {sorted(steps)}")
        for name, zeros in fused.state.items():  # SGD without momentum keeps no buffer: zeros
            per_trial = [model.unstack(zeros, k) for k in range(model.num_trials)]
            fused.state[name] = model.stack(
                [
                    [s.get(name, z) for s, z in zip(trial, empty, strict=True)]
                    for trial, empty in zip(states, per_trial, strict=True)
                ]
            )
        fused.steps = int(steps.pop())
        fused._copy_counters(fused)
        return fused

    def zero_grad(self) -> None:
        for p in self.model.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        grads = [p.grad for p in self.model.params]
        if any(g is None for g in grads):
            raise RuntimeError("step() without gradients: call backward() first")
        self.steps += 1
        if self._fixed_views is None:
            # params and state keep their storage: their views are made once (~0.2 ms a step
            # at K=32 otherwise); the gradients are new tensors every step.
            tensors = {"params": [p.detach() for p in self.model.params], **self.state}
            self._fixed_views = [
                {name: self._pick(self.model.trial_views(t), trials) for name, t in tensors.items()}
                for trials in self.classes.values()
            ]
        if len(self.classes) == 1:  # one kernel call over the stacked tensors: 35% faster
            key = next(iter(self.classes))
            tensors = {"params": [p.detach() for p in self.model.params], **self.state}
            self._update(dict(key), {"grads": grads, **tensors})  # type: ignore[dict-item]
            return
        grad_views = self.model.trial_views(grads)  # type: ignore[arg-type]
        for (key, trials), fixed in zip(self.classes.items(), self._fixed_views, strict=True):
            self._update(dict(key), {"grads": self._pick(grad_views, trials), **fixed})

    @staticmethod
    def _pick(views: list[list[Tensor]], trials: list[int]) -> list[Tensor]:
        return [t for k in trials for t in views[k]]

    def _update(self, h: dict[str, Any], views: dict[str, list[Tensor]]) -> None:
        raise NotImplementedError

    def select(self, model: FusedMLP, keep: Sequence[int]) -> "FusedOptimizer":
        """This optimizer for `model`, the group `self.model.select(keep)`, state carried over."""
        new = type(self)(model, [self.hparams[k] for k in keep])
        for name, stacked in self.state.items():
            per_trial = [self.model.unstack(stacked, k) for k in keep]
            new.state[name] = model.stack(per_trial)
        new._copy_counters(self)
        return new

    def _copy_counters(self, other: "FusedOptimizer") -> None:
        self.steps = other.steps

    def trial_state_dict(self, k: int) -> dict[str, Any]:
        """Trial k's state in the format of its torch.optim optimizer's state_dict()."""
        tensors = {name: self.model.unstack(s, k) for name, s in self.state.items()}
        state = {
            i: {"step": torch.tensor(float(self.steps))}
            | {name: t[i].clone() for name, t in tensors.items()}
            for i in range(len(self.model.params))
        }
        group = {**self.hparams[k], "params": list(range(len(self.model.params)))}
        return {"state": state, "param_groups": [group]}


class FusedAdam(FusedOptimizer):
    """Adam with per-trial hyperparameters; AdamW with decoupled=True."""

    defaults = ADAM_DEFAULTS
    state_names = ("exp_avg", "exp_avg_sq")

    def __init__(
        self, model: FusedMLP, hparams: Sequence[Mapping[str, Any]], decoupled: bool = False
    ):
        super().__init__(model, hparams)
        self.decoupled = decoupled
        device = model.params[0].device
        self.step_tensor = torch.zeros((), device=device)  # the kernels read the step from it

    def _copy_counters(self, other: FusedOptimizer) -> None:
        super()._copy_counters(other)
        self.step_tensor.fill_(self.steps)

    @classmethod
    def adamw(cls, model: FusedMLP, hparams: Sequence[Mapping[str, Any]]) -> "FusedAdam":
        return cls(model, hparams, decoupled=True)

    @torch.no_grad()
    def step(self) -> None:
        self.step_tensor += 1
        super().step()

    def _update(self, h: dict[str, Any], views: dict[str, list[Tensor]]) -> None:
        kernel = torch._fused_adamw_ if self.decoupled else torch._fused_adam_
        kernel(
            views["params"],
            views["grads"],
            views["exp_avg"],
            views["exp_avg_sq"],
            [],
            [self.step_tensor] * len(views["params"]),
            lr=h["lr"],
            beta1=h["betas"][0],
            beta2=h["betas"][1],
            weight_decay=h["weight_decay"],
            eps=h["eps"],
            amsgrad=False,
            maximize=False,
        )


class FusedSGD(FusedOptimizer):
    defaults = SGD_DEFAULTS
    state_names = ("momentum_buffer",)

    def _update(self, h: dict[str, Any], views: dict[str, list[Tensor]]) -> None:
        torch._fused_sgd_(
            views["params"],
            views["grads"],
            views["momentum_buffer"] if h["momentum"] else [],
            weight_decay=h["weight_decay"],
            momentum=h["momentum"],
            lr=h["lr"],
            dampening=h["dampening"],
            nesterov=h["nesterov"],
            maximize=False,
            is_first_step=self.steps == 1,
        )

    def trial_state_dict(self, k: int) -> dict[str, Any]:
        out = super().trial_state_dict(k)
        for s in out["state"].values():
            del s["step"]  # torch.optim.SGD keeps no step count
        return out


@torch.no_grad()
def clip_grad_norms(model: FusedMLP, max_norm: float) -> Tensor:
    """clip_grad_norm_ per trial: each trial's gradients scaled to a norm <= max_norm.
    Returns the per-trial norms before clipping, (K,)."""
    squares = torch.zeros(model.num_trials, device=model.params[0].device)
    for i, p in enumerate(model.params):
        g = p.grad.square()  # type: ignore[union-attr]
        if i < 2:
            squares.index_add_(0, model.row_trial, g.reshape(len(g), -1).sum(1))
        else:
            squares += g.reshape(model.num_trials, -1).sum(1)
    norms = squares.sqrt()
    coef = (max_norm / (norms + 1e-6)).clamp(max=1.0)  # torch's formula, eps included
    for i, p in enumerate(model.params):
        p.grad.mul_(model.per_trial(coef, i))  # type: ignore[union-attr]
    return norms


def train_epoch(
    model: FusedMLP,
    optimizer: FusedOptimizer,
    batches: Iterable[tuple[Tensor, Tensor]],
    grad_clip_norm: float | None = None,
    per_trial: bool = False,
) -> list[tuple[float, float]]:
    """One pass over `batches` (shared, or (K, B, ...) with per_trial); per-trial (mean train
    loss, train accuracy), as hpsweep.job.train_one_epoch computes them."""
    model.train()
    device = model.params[0].device
    loss_sum = torch.zeros(model.num_trials, device=device)
    correct = torch.zeros(model.num_trials, dtype=torch.long, device=device)
    seen = 0
    for x, y in batches:
        optimizer.zero_grad()
        logits = model(x, per_trial)
        losses = trial_losses(logits, y)
        losses.sum().backward()  # d(sum)/d(loss_k) = 1: each trial gets its own gradients
        if grad_clip_norm is not None:
            clip_grad_norms(model, grad_clip_norm)
        optimizer.step()

        batch = logits.shape[1]
        loss_sum += losses.detach() * batch
        correct += trial_correct(logits.detach(), y)
        seen += batch
    if seen == 0:
        raise ValueError("train_epoch got no batches")
    return [
        (lo / seen, c / seen) for lo, c in zip(loss_sum.tolist(), correct.tolist(), strict=True)
    ]


@torch.no_grad()
def evaluate(
    model: FusedMLP, split: Split, batch_size: int = EVAL_BATCH_SIZE
) -> list[tuple[float, float]]:
    """Per-trial (mean loss, accuracy) over `split` in eval mode; the mode is restored."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros(model.num_trials, device=split.x.device)
    correct = torch.zeros(model.num_trials, dtype=torch.long, device=split.x.device)
    for x, y in iterate_batches(split, batch_size):
        logits = model(x)
        loss_sum += trial_losses(logits, y) * len(y)
        correct += trial_correct(logits, y)
    model.train(was_training)
    n = len(split)
    return [(lo / n, c / n) for lo, c in zip(loss_sum.tolist(), correct.tolist(), strict=True)]
