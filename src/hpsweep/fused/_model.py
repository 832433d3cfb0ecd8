"""Fused trials: K small MLP trials of a sweep trained as one batched model.

A 784-30-10 step costs about 5x its own matrix products (BENCHMARKS.md section 2); stacked, the
K trials share every dispatch. Layout (K trials):

- first layer: the trials' weights concatenated, (sum of widths, in): on a shared batch one
  wide GEMM serves all trials, with no padding;
- later layers: stored as (K, out_max, in_max), zero-padded; run either padded, as one bmm over
  all trials, or per run of equal widths, one unpadded bmm per run (see MAX_RUNS);
- activations are feature-major, (K, width, batch), so each trial's block is contiguous.

Padded units are exactly zero: the first layer's outputs are gathered into the padded layout
from an appended zero row, and later layers are multiplied by a unit mask. Padded weights get
zero gradients, so they and their optimizer state stay zero.

Optimizers, clipping, train and eval steps: fused._steps.
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hpsweep.models import MLP

# layout="auto" runs the later layers per run of equal widths (one unpadded bmm each) when
# there are at most MAX_RUNS runs, of 4 trials or more on average, and padding would more than
# double the activations; else all are padded to the widest, one bmm. Measured at K=32, one
# thread: widths 16-256 in 5 runs 4-8% faster by runs; 32 different widths 16-64 1.5x slower.
MAX_RUNS = 8
TrialTensors = list[Tensor]  # one trial's tensors in MLP parameter order: W1, b1, W2, b2, ...


def rng_after_init(device: torch.device | str = "cpu") -> torch.Generator:
    """A generator holding the global RNG's state now: call it right after building a trial's
    model, and it draws the dropout masks the unfused trial would draw."""
    device = torch.device(device)
    gen = torch.Generator(device)
    if device.type == "cuda":
        gen.set_state(torch.cuda.get_rng_state(device))
    else:
        gen.set_state(torch.get_rng_state())
    return gen


def _describe(model: MLP) -> tuple[list[str], list[nn.Linear], nn.Module, float]:
    names, linears, activations, drop = [], [], [], 0.0
    for name, module in model.named_children():
        if isinstance(module, nn.Linear):
            names.append(name)
            linears.append(module)
        elif isinstance(module, nn.Dropout):
            drop = module.p
        elif not isinstance(module, nn.Flatten):
            activations.append(module)
    return names, linears, activations[0], drop


def _first_layer_rows(h1: list[int], device: torch.device) -> tuple[list[int], Tensor, Tensor]:
    """The concatenated first layer of trials of h1[k] units: offsets (trial k's rows are
    offsets[k]:offsets[k + 1]), pad_rows and row_trial (each row's trial)."""
    offsets = torch.tensor([0, *h1]).cumsum(0)
    # pad_rows[k * h1_max + j]: row j of trial k in the concatenated first layer, or the
    # appended zero row (index sum(h1)) where trial k has no unit j.
    j = torch.arange(max(h1))
    rows = torch.where(j < torch.tensor(h1)[:, None], offsets[:-1, None] + j, offsets[-1])
    row_trial = torch.repeat_interleave(torch.arange(len(h1)), torch.tensor(h1))
    return offsets.tolist(), rows.flatten().to(device), row_trial.to(device)


def _unit_masks(
    widths: list[list[int]], max_widths: list[int], device: torch.device
) -> list[Tensor]:
    """unit_masks[i]: (K, widest at width index i, 1), 1 where trial k has that unit."""
    return [
        (torch.arange(m) < torch.tensor([w[i] for w in widths])[:, None])
        .float()[:, :, None]
        .to(device)
        for i, m in enumerate(max_widths)
    ]


def _equal_width_runs(widths: list[list[int]]) -> list[list[int]]:
    """[first trial, count] of each run of consecutive trials of the same widths."""
    runs: list[list[int]] = []
    for k, w in enumerate(widths):
        if runs and widths[runs[-1][0]] == w:
            runs[-1][1] += 1
        else:
            runs.append([k, 1])
    return runs


class FusedMLP(nn.Module):
    def __init__(
        self,
        trials: Sequence[TrialTensors],
        activation: nn.Module,
        dropouts: Sequence[float],
        generators: Sequence[torch.Generator | None],
        keys: Sequence[list[str]],
        layout: str = "auto",
    ):
        super().__init__()
        if not trials:
            raise ValueError("a fused group needs at least one trial")
        self.num_trials = len(trials)
        # widths[k] = (in, h1, ..., C) of trial k
        self.widths = [[t[0].shape[1]] + [w.shape[0] for w in t[0::2]] for t in trials]
        depths = {len(w) for w in self.widths}
        if len(depths) != 1 or len({(w[0], w[-1]) for w in self.widths}) != 1:
            raise ValueError("fused trials need the same depth, input size and outputs")
        self.max_widths = [max(w[i] for w in self.widths) for i in range(len(self.widths[0]))]
        self.activation = activation
        self.dropouts = list(dropouts)
        self.generators = list(generators)
        if any(p > 0 and g is None for p, g in zip(dropouts, generators, strict=True)):
            raise ValueError("a trial with dropout needs its generator (rng_after_init)")
        self.keys = [list(k) for k in keys]
        self.params = nn.ParameterList(nn.Parameter(t) for t in self.stack(trials))
        device = self.params[0].device
        h1 = [w[1] for w in self.widths]
        self.offsets, self.pad_rows, self.row_trial = _first_layer_rows(h1, device)
        self.unit_masks = _unit_masks(self.widths, self.max_widths, device)
        self._dropout_index: dict[tuple[int, int], Tensor] = {}
        # runs: consecutive trials of the same widths. A run's activations are a view of the
        # concatenated first layer, so its later layers are one bmm without padding; padding
        # all trials to the widest instead moves (K, widest, B) tensors through every step.
        self.runs = _equal_width_runs(self.widths)
        padded_waste = self.num_trials * self.max_widths[1] > 2 * sum(h1)
        long_runs = self.num_trials >= 4 * len(self.runs)  # K=8 in 5 runs: padded was faster
        auto = len(self.runs) <= MAX_RUNS and padded_waste and long_runs
        if layout not in ("auto", "runs", "padded"):
            raise ValueError(f"layout must be auto, runs or padded, got {layout!r}")
        self.layout = layout
        self.use_runs = layout == "runs" or (layout == "auto" and auto)

    @classmethod
    def from_models(
        cls,
        models: Sequence[MLP],
        generators: Sequence[torch.Generator | None] | None = None,
        layout: str = "auto",
    ) -> "FusedMLP":
        described = [_describe(m) for m in models]
        kinds = {(type(d[2]), repr(d[2])) for d in described}
        if len(kinds) != 1:
            raise ValueError(f"fused trials need one activation, got {kinds}")
        trials = [
            [t for lin in d[1] for t in (lin.weight.detach(), lin.bias.detach())] for d in described
        ]
        return cls(
            [[t.clone() for t in trial] for trial in trials],
            activation=described[0][2],
            dropouts=[d[3] for d in described],
            generators=generators or [None] * len(models),
            keys=[d[0] for d in described],
            layout=layout,
        )

    # --- layout: per-trial tensors <-> stacked tensors (params, grads, optimizer state) ---

    def stack(self, trials: Sequence[TrialTensors]) -> list[Tensor]:
        out = [torch.cat([t[0] for t in trials]), torch.cat([t[1] for t in trials])]
        for i in range(2, len(trials[0])):
            shape = [self.max_widths[i // 2 + 1]] + (
                [self.max_widths[i // 2]] if i % 2 == 0 else []
            )
            stacked = trials[0][i].new_zeros([len(trials), *shape])
            for k, t in enumerate(trials):
                stacked[k][tuple(slice(0, n) for n in t[i].shape)] = t[i]
            out.append(stacked)
        return out

    def unstack(self, stacked: Sequence[Tensor], k: int) -> TrialTensors:
        w = self.widths[k]
        a, b = self.offsets[k], self.offsets[k + 1]
        out = [stacked[0][a:b], stacked[1][a:b]]
        for i in range(2, len(stacked)):
            out.append(
                stacked[i][k, : w[i // 2 + 1], : w[i // 2]]
                if i % 2 == 0
                else stacked[i][k, : w[i // 2 + 1]]
            )
        return out

    def trial_views(self, stacked: Sequence[Tensor]) -> list[TrialTensors]:
        """Contiguous views of every trial for elementwise updates; later layers keep their
        (zero) padding, which an elementwise update leaves at zero. split/unbind make the K
        views in one call each: slicing them one by one cost ~0.2 ms a step at K=32."""
        h1 = [w[1] for w in self.widths]
        per_tensor = [
            stacked[0].split(h1),
            stacked[1].split(h1),
            *(s.unbind(0) for s in stacked[2:]),
        ]
        return [list(views) for views in zip(*per_tensor, strict=True)]

    def per_trial(self, values: Tensor, i: int) -> Tensor:
        """Per-trial values (K,) broadcast against stacked tensor i."""
        if i < 2:
            rows = values[self.row_trial]
            return rows[:, None] if i == 0 else rows
        return values.view(-1, 1, 1) if i % 2 == 0 else values.view(-1, 1)

    def trial_state_dict(self, k: int) -> dict[str, Tensor]:
        tensors = self.unstack([p.detach() for p in self.params], k)
        names = [f"{key}.{kind}" for key in self.keys[k] for kind in ("weight", "bias")]
        return {n: t.clone() for n, t in zip(names, tensors, strict=True)}

    @torch.no_grad()
    def load_trial_state_dict(self, k: int, state: dict[str, Tensor]) -> None:
        names = [f"{key}.{kind}" for key in self.keys[k] for kind in ("weight", "bias")]
        for view, name in zip(self.unstack(list(self.params), k), names, strict=True):
            view.copy_(state[name])

    def select(self, keep: Sequence[int]) -> "FusedMLP":
        """A new group of the trials `keep` (e.g. without the pruned ones): weights, dropout
        generators and padding recomputed for the remaining widths."""
        tensors = [self.unstack([p.detach() for p in self.params], k) for k in keep]
        return FusedMLP(
            [[t.clone() for t in trial] for trial in tensors],
            self.activation,
            [self.dropouts[k] for k in keep],
            [self.generators[k] for k in keep],
            [self.keys[k] for k in keep],
            layout=self.layout,
        )

    # --- forward ---

    def forward(self, x: Tensor, per_trial: bool = False) -> Tensor:
        """x: (B, ...) one batch for all trials, or (K, B, ...) with per_trial. -> (K, B, C)"""
        if not self.use_runs:
            return self._forward_padded(x, per_trial)
        w_in, b_in, *rest = self.params
        # split(), not slicing: a slice's backward writes a zero tensor of the whole input per
        # run (5 x 3 MB a step at K=32, batch 256); split's backward is one cat.
        counts = [n for _, n in self.runs]
        rows = [self.offsets[first + n] - self.offsets[first] for first, n in self.runs]
        if per_trial:
            blocks = zip(w_in.split(rows), b_in.split(rows), x.split(counts), strict=True)
        else:
            h_all = self.activation(torch.addmm(b_in[:, None], w_in, x.flatten(1).T))
            h_all_blocks = h_all.split(rows)
        rest_blocks = [t.split(counts) for t in rest]
        outs = []
        for r, (first, n) in enumerate(self.runs):
            widths = self.widths[first]
            if per_trial:
                w, b, xr = next(blocks)
                xt = xr.flatten(2).transpose(1, 2)
                h = self.activation(torch.baddbmm(b.view(n, -1, 1), w.view(n, widths[1], -1), xt))
            else:
                h = h_all_blocks[r].view(n, widths[1], -1)
            h = self._dropout_run(h, first, 1)
            for i in range(0, len(rest) - 2, 2):
                layer = i // 2 + 2
                w = rest_blocks[i][r][:, : widths[layer], : widths[layer - 1]]
                h = torch.baddbmm(rest_blocks[i + 1][r][:, : widths[layer], None], w, h)
                h = self._dropout_run(self.activation(h), first, layer)
            w = rest_blocks[-2][r][:, :, : widths[-2]]
            outs.append(torch.baddbmm(rest_blocks[-1][r][:, :, None], w, h))
        # (K, C, B) returned as a (K, B, C) view: see _forward_padded
        return torch.cat(outs).transpose(1, 2)

    def _dropout_run(self, h: Tensor, first: int, layer: int) -> Tensor:
        n, width, batch = h.shape
        drops = self.dropouts[first : first + n]
        if not self.training or not any(p > 0 for p in drops):
            return h
        # Each trial draws a contiguous (B, width) tensor from its own generator, as nn.Dropout
        # does from the global one; a non-contiguous target draws different numbers.
        noise = h.new_ones(n, batch, width)
        scale = h.new_ones(n)
        for j, p in enumerate(drops):
            if p > 0:
                noise[j].bernoulli_(1 - p, generator=self.generators[first + j])
                scale[j] = torch.ones((), device=h.device).div_(1 - p)  # nn.Dropout's 1/(1-p)
        return h * (noise.transpose(1, 2) * scale.view(-1, 1, 1))

    def _forward_padded(self, x: Tensor, per_trial: bool) -> Tensor:
        w_in, b_in, *rest = self.params
        if per_trial:
            # Each trial its own batch: the first layer's weights are gathered into the padded
            # layout (a copy per step) and run as one bmm.
            w = F.pad(w_in, (0, 0, 0, 1)).index_select(0, self.pad_rows)
            w = w.view(self.num_trials, -1, w_in.shape[1])
            b = F.pad(b_in, (0, 1)).index_select(0, self.pad_rows).view(self.num_trials, -1, 1)
            h = self.activation(torch.baddbmm(b, w, x.flatten(2).transpose(1, 2)))
            h = h * self.unit_masks[1]  # padded units are act(0), which is 0.5 for sigmoid
        else:
            h = self.activation(torch.addmm(b_in[:, None], w_in, x.flatten(1).T))
            h = F.pad(h, (0, 0, 0, 1)).index_select(0, self.pad_rows)
            h = h.view(self.num_trials, -1, h.shape[1])
        h = self._dropout(h, 1)
        for i in range(0, len(rest) - 2, 2):
            h = torch.baddbmm(rest[i + 1][:, :, None], rest[i], h)
            h = self._dropout(self.activation(h) * self.unit_masks[i // 2 + 2], i // 2 + 2)
        # Computed as (K, C, B), returned as a (K, B, C) view: the backward then needs no
        # transposing copies, and the loss's log_softmax runs over a strided dim of 10, which
        # is 10x faster here than over a contiguous last dim of 10.
        return torch.baddbmm(rest[-1][:, :, None], rest[-2], h).transpose(1, 2)

    def _dropout(self, h: Tensor, layer: int) -> Tensor:
        if not self.training or not any(p > 0 for p in self.dropouts):
            return h
        batch = h.shape[2]
        index = self._dropout_index.get((layer, batch))
        if index is None:
            index = self._dropout_index[(layer, batch)] = self._make_dropout_index(layer, batch)
        # Each trial draws a contiguous (B, width) tensor from its own generator, as nn.Dropout
        # does from the global one; a non-contiguous target draws different numbers.
        flat = h.new_ones(batch * sum(w[layer] for w in self.widths) + 1)
        scale = h.new_ones(self.num_trials)
        start = 0
        for k, (p, w) in enumerate(zip(self.dropouts, self.widths, strict=True)):
            n = batch * w[layer]
            if p > 0:
                flat[start : start + n].bernoulli_(1 - p, generator=self.generators[k])
                scale[k] = torch.ones((), device=h.device).div_(1 - p)  # nn.Dropout's 1/(1-p)
            start += n
        return h * (flat.take(index) * scale.view(-1, 1, 1))

    def _make_dropout_index(self, layer: int, batch: int) -> Tensor:
        # index[k, j, b] -> the flat draw of trial k's (b, j) element; padding -> the last
        # element, a 1 (padded units are zero anyway).
        widths = torch.tensor([w[layer] for w in self.widths])
        starts = torch.cat([torch.zeros(1, dtype=torch.long), (widths * batch).cumsum(0)[:-1]])
        j = torch.arange(self.max_widths[layer])[None, :, None]
        b = torch.arange(batch)[None, None, :]
        index = starts[:, None, None] + b * widths[:, None, None] + j
        index = torch.where(j < widths[:, None, None], index, int(batch * widths.sum()))
        return index.to(self.params[0].device)
