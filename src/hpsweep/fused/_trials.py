"""A fused group as a trial job: K MLP trials trained as one FusedMLP, each leaving the files
run_trial leaves (metrics.csv, result.json, curves.png, checkpoints/last.pt and best.pt).

Each trial is built by run_trial's own prepare() (same seeding, init, optimizer), so its init,
batch order and dropout masks are those of its unfused run; its checkpoints are run_trial's, so
a plain run_trial resumes any of them. A trial that is pruned, stops early or diverges leaves
the group (FusedMLP.select) and the others go on.
"""

import functools
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from omegaconf import DictConfig, OmegaConf

from hpsweep.data import Split, iterate_batches
from hpsweep.fused._model import FusedMLP, rng_after_init
from hpsweep.fused._steps import (
    FusedAdam,
    FusedOptimizer,
    FusedSGD,
    evaluate,
    train_epoch,
    trial_batches,
)
from hpsweep.job import (
    EpochHook,
    Run,
    checkpoint,
    diverged,
    end_epoch,
    final_report,
    flatten,
    prepare,
    result_of,
    stop_reason,
)
from hpsweep.models import MLP
from hpsweep.record import Status, TrialResult

log = logging.getLogger("hpsweep.fused")

FUSED_OPTIMIZERS = ("torch.optim.Adam", "torch.optim.AdamW", "torch.optim.SGD")
# Keys the trials of a group may differ in: per-trial hyperparameters FusedMLP and the fused
# optimizers carry, and keys that only change what one trial records. Any other difference
# (batch size, data, epochs, device, ...) would need a different training loop.
MAY_DIFFER = {
    "seed",
    "model.hidden_sizes",
    "model.dropout",
    "optimizer.lr",
    "optimizer.betas",
    "optimizer.eps",
    "optimizer.weight_decay",
    "optimizer.momentum",
    "optimizer.dampening",
    "optimizer.nesterov",
    "objective",
    "checkpoint_every",
    "log_every_s",
    "test_pruned",
}


# The trial a fused group's log record is about (None: the whole group), for log handlers
# that keep each trial's own file (hpsweep.train).
SPEAKING_FOR: ContextVar[str | None] = ContextVar("fused_trial", default=None)
# Called as trial i leaves the group for good, its result.json written: (i, result, the error
# that failed it or None)
TrialEnd = Callable[[int, TrialResult, Exception | None], None]


@dataclass
class Member:
    """One trial of the group: run_trial's Run plus its streams inside the group."""

    run: Run
    hook: EpochHook | None
    dropout: torch.Generator  # the global RNG its unfused run would use (init, then dropout)
    shuffle: torch.Generator  # its batch order (shared by the group when the seeds are equal)
    group_size: int = 1  # trials in its group when the group started

    @property
    def name(self) -> str:
        return self.run.files.dir.name


def prepare_member(cfg: DictConfig, trial_dir: Path, hook: EpochHook | None = None) -> Member:
    """run_trial's prepare() (build, check, resume; nothing written), and the trial's dropout
    stream: prepare() seeds the global RNG and builds the model, or restores a checkpoint's
    RNG, so right now the global stream stands where the unfused run draws its next mask."""
    run = prepare(cfg, trial_dir)
    return Member(run, hook, rng_after_init(run.job.device), run.job.shuffle)


@contextmanager
def speaking_for(member: Member) -> Iterator[None]:
    token = SPEAKING_FOR.set(member.name)
    try:
        yield
    finally:
        SPEAKING_FOR.reset(token)


def run_fused_trials(
    cfgs: Sequence[DictConfig],
    trial_dirs: Sequence[Path],
    on_epoch_end: Sequence[EpochHook | None] | None = None,
) -> list[TrialResult]:
    """Train (or resume) the trials `cfgs` (one per trial dir) as one fused group; returns
    their results."""
    hooks = list(on_epoch_end) if on_epoch_end is not None else [None] * len(cfgs)
    dirs = [Path(d) for d in trial_dirs]
    if not len(cfgs) == len(dirs) == len(hooks) or len({d.resolve() for d in dirs}) < len(dirs):
        raise ValueError(
            f"one distinct trial dir and hook per config; got {len(cfgs)} configs, "
            f"{len(dirs)} dirs, {len(hooks)} hooks"
        )
    check_fusable(cfgs)
    return train_fused([prepare_member(*args) for args in zip(cfgs, dirs, hooks, strict=True)])


def train_fused(
    members: Sequence[Member], on_trial_end: TrialEnd | None = None
) -> list[TrialResult]:
    """Train prepared trials (prepare_member) as one group, from the epoch their checkpoints
    stand at (all the same one); returns their results, in order."""
    start = join_group(members)
    cfg = members[0].run.job.cfg
    models = [cast(MLP, m.run.job.model) for m in members]  # check_fusable: all MLPs
    fused = FusedMLP.from_models(models, [m.dropout for m in members])
    optimizer = fused_optimizer(fused, members)
    results: dict[int, TrialResult] = {}
    active = list(range(len(members)))  # active[slot] = index of the trial in that group slot

    def leave(k: int, ended: tuple[TrialResult, Exception | None]) -> None:
        results[k] = ended[0]
        if on_trial_end is not None:
            on_trial_end(k, *ended)

    if start >= cfg.epochs:  # stopped in the final report: that report alone is left
        active = []
        for k, m in enumerate(members):
            with speaking_for(m):
                leave(k, (finish(m, None, start), None))
    try:
        for epoch in range(start + 1, cfg.epochs + 1):
            rows = group_epoch(members, active, fused, optimizer, epoch)

            # -- record each trial: its row, checkpoints, log line and hook; some leave
            leaving = []
            for slot, (k, row) in enumerate(zip(active, rows, strict=True)):
                with speaking_for(members[k]):
                    ended = record_epoch(members[k], row, fused, optimizer, slot)
                if ended is not None:
                    leave(k, ended)
                    leaving.append(k)

            # -- the trials that ended leave the group: no compute spent on them from here
            if leaving:
                keep = [slot for slot, k in enumerate(active) if k not in leaving]
                active = [active[slot] for slot in keep]
                if not active:
                    break
                smaller = fused.select(keep)
                optimizer = optimizer.select(smaller, keep)
                fused = smaller
    except Exception as e:
        # as run_trial: a trial that was still training records the failure, then it propagates
        for k in (k for k in active if k not in results):
            m, reason = members[k], f"{type(e).__name__}: {e}"
            failed = result_of(
                m.run.job, m.run.progress, Status.FAIL, reason, fused_with=m.group_size
            )
            m.run.files.write_result(failed)
        raise
    return [results[k] for k in range(len(members))]


def join_group(members: Sequence[Member]) -> int:
    """Check the trials can train as one group and let them share what they can (the data; the
    batch order when their seeds are equal); returns the epoch they all resume after."""
    cfgs = [m.run.job.cfg for m in members]
    check_fusable(cfgs)
    done = {m.run.progress.epoch for m in members}
    if len(done) > 1:
        at = ", ".join(f"{m.name} after epoch {m.run.progress.epoch}" for m in members)
        raise ValueError(f"a fused group resumes after one epoch for all trials; these are {at}")
    start = done.pop()
    for m in members:
        m.group_size = len(members)
    for m in members[1:]:  # the same data config: one copy of the data for the group
        m.run.job.splits, m.run.job.train = members[0].run.job.splits, members[0].run.job.train
    if len({cfg.seed for cfg in cfgs}) == 1:  # one batch order: one wide first-layer GEMM a step
        for m in members:
            m.shuffle = members[0].shuffle
    for m in members:
        m.run.files.checkpoints.mkdir(parents=True, exist_ok=True)
        with speaking_for(m):
            log.info(
                "%s: in a fused group of %d trials%s, output %s",
                m.name,
                len(members),
                f", resuming after epoch {start}" if start else "",
                m.run.files.dir.resolve(),
            )
    return start


def group_epoch(
    members: Sequence[Member],
    active: list[int],
    fused: FusedMLP,
    optimizer: FusedOptimizer,
    epoch: int,
) -> list[dict[str, float]]:
    """Train the group's active trials one epoch and evaluate them on validation; returns each
    one's metrics row."""
    cfg, job = members[0].run.job.cfg, members[0].run.job
    train_split, val_split = job.train, job.splits.val
    # check_fusable admits the in-memory image sets only
    assert isinstance(train_split, Split) and isinstance(val_split, Split)
    started = time.perf_counter()
    # -- train: one shared batch order (equal seeds, or overfit_batches), or each trial its own
    same_seed = len({m.run.job.cfg.seed for m in members}) == 1  # join_group shared its order
    shared_order = same_seed or bool(cfg.overfit_batches)
    if shared_order:
        shuffle = None if cfg.overfit_batches else members[0].shuffle
        batches: Any = iterate_batches(train_split, cfg.batch_size, shuffle)
    else:
        gens = [members[k].shuffle for k in active]
        batches = trial_batches(train_split, cfg.batch_size, gens)
    lrs = [members[k].run.job.optimizer.param_groups[0]["lr"] for k in active]
    train = train_epoch(fused, optimizer, batches, cfg.grad_clip_norm, not shared_order)

    # -- evaluate on validation
    val = evaluate(fused, val_split)
    # The group's time is shared equally by its trials: each trial's seconds and wall_time_s
    # are its share, not the time a trial alone would have taken.
    share = (time.perf_counter() - started) / len(active)
    rows = []
    for slot, k in enumerate(active):
        members[k].run.progress.elapsed += share
        (train_loss, train_acc), (val_loss, val_acc) = train[slot], val[slot]
        rows.append(
            {
                "epoch": epoch,
                "train_loss": train_loss,
                "train_acc": train_acc,
                "val_loss": val_loss,
                "val_acc": val_acc,
                "lr": lrs[slot],
                "seconds": share,
            }
        )
    return rows


def record_epoch(
    m: Member, row: dict[str, float], fused: FusedMLP, optimizer: FusedOptimizer, slot: int
) -> tuple[TrialResult, Exception | None] | None:
    """run_trial's bookkeeping of one epoch for one trial of the group; its result (and what
    failed it) if the trial ends here."""
    epoch = int(row["epoch"])
    if not math.isfinite(row["train_loss"]):  # as run_epoch, but the trial fails alone
        error = diverged(row["train_loss"], epoch)
        reason = f"{type(error).__name__}: {error}"
        log.warning("%s: failed: %s", m.name, reason)
        result = result_of(m.run.job, m.run.progress, Status.FAIL, reason, fused_with=m.group_size)
        m.run.files.write_result(result)
        return result, error
    state_of = functools.partial(trial_checkpoint, m, fused, optimizer, slot)
    stop = end_epoch(m.run, row, m.hook, state_of, who=f"{m.name}: ")
    if stop is None and epoch < m.run.job.cfg.epochs:
        return None
    return finish(m, stop, epoch), None


def finish(m: Member, stop: Status | None, epoch: int) -> TrialResult:
    """run_trial's final report: test set once on best.pt, result.json, curves.png."""
    status, reason = (Status.COMPLETE, None) if stop is None else (stop, stop_reason(stop, epoch))
    run = m.run
    return final_report(
        run.job, run.progress, run.files, status, reason, run.meter, m.group_size, f"{m.name}: "
    )


def trial_checkpoint(
    m: Member, fused: FusedMLP, optimizer: FusedOptimizer, slot: int
) -> dict[str, Any]:
    """run_trial's checkpoint of this trial: its own MLP's weights, its optimizer's state in
    torch.optim's format (param_groups those of the optimizer its config builds) and RNGs."""
    job = m.run.job
    state = checkpoint(job, m.run.progress)
    optimizer_state = job.optimizer.state_dict()
    optimizer_state["state"] = optimizer.trial_state_dict(slot)["state"]
    if isinstance(optimizer, FusedSGD) and not job.optimizer.param_groups[0]["momentum"]:
        optimizer_state["state"] = {}  # torch.optim.SGD keeps no buffer without momentum
    rng: dict[str, Any] = {"torch": torch.get_rng_state(), "shuffle": m.shuffle.get_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    # the trial's dropout stream is the global RNG of its unfused run, on the model's device
    if job.device.type == "cuda":
        rng["cuda"][job.device.index or 0] = m.dropout.get_state()
    else:
        rng["torch"] = m.dropout.get_state()
    return state | {"model": fused.trial_state_dict(slot), "optimizer": optimizer_state, "rng": rng}


def fused_optimizer(fused: FusedMLP, members: Sequence[Member]) -> FusedOptimizer:
    optimizers = [m.run.job.optimizer for m in members]
    target = members[0].run.job.cfg.optimizer._target_
    if target == "torch.optim.SGD":
        return FusedSGD.from_optimizers(fused, optimizers)
    return FusedAdam.from_optimizers(fused, optimizers, decoupled=target == "torch.optim.AdamW")


def check_fusable(cfgs: Sequence[DictConfig]) -> None:
    """Refuse a group that one fused loop cannot train, naming the key and its values."""
    if not cfgs:
        raise ValueError("a fused group needs at least one trial")
    flat = [flatten(cast(dict[str, Any], OmegaConf.to_container(c, resolve=True))) for c in cfgs]

    def values(key: str) -> list[Any]:
        return [f.get(key, f.get(f"{key}._target_")) for f in flat]  # a group: its class

    def refuse(key: str, why: str) -> None:
        raise ValueError(f"cannot fuse these trials: {key} {why} (values: {values(key)})")

    if any(v != "hpsweep.data.load_splits" for v in values("data._target_")):
        refuse("data._target_", "must be hpsweep.data.load_splits: the image sets, in memory")
    if any(v is not None for v in values("loss")):
        refuse("loss", "must be null: fused trials train with the task's own loss")
    if any(v != "hpsweep.models.MLP" for v in values("model._target_")):
        refuse("model._target_", "must be hpsweep.models.MLP for every trial")
    if any(v not in FUSED_OPTIMIZERS for v in values("optimizer._target_")):
        refuse("optimizer._target_", f"must be one of {', '.join(FUSED_OPTIMIZERS)}")
    for flag in ("optimizer.amsgrad", "optimizer.maximize"):
        if any(values(flag)):
            refuse(flag, "must be false: the fused kernels take neither")
    if any(c.scheduler is not None for c in cfgs):
        refuse("scheduler", "must be null: fused trials take no scheduler yet")
    # What the fused loop does not do (yet): it trains in fp32, on unaugmented batches, with
    # plain losses
    for key in ("augment.shift", "augment.hflip", "label_smoothing"):
        if any(values(key)):
            refuse(key, "must be 0 (off): fused trials take no augmentation or label smoothing")
    if any(v not in (None, "fp32") for v in values("precision")):
        refuse("precision", "must be fp32: fused trials train in float32")
    depths = {len(v) if isinstance(v, list) else 1 for v in values("model.hidden_sizes")}
    if len(depths) > 1:
        refuse("model.hidden_sizes", "must give every trial the same depth")
    keys = sorted(set().union(*flat), key=lambda k: (not k.endswith("_target_"), k))
    for key in keys:
        if key not in MAY_DIFFER and len({repr(v) for v in values(key)}) > 1:
            refuse(key, "differs")


def fusion_key(cfg: DictConfig) -> str | None:
    """Equal for configs that check_fusable lets train as one group; None for a config that
    cannot be fused at all (a CNN, RMSprop, a scheduler, ...)."""
    try:
        check_fusable([cfg])
    except ValueError:
        return None
    flat = flatten(cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=True)))
    hidden = flat.get("model.hidden_sizes")
    same = {k: v for k, v in flat.items() if k not in MAY_DIFFER}
    depth = len(hidden) if isinstance(hidden, list) else 1
    return repr([*sorted(same.items()), ("depth", depth)])
