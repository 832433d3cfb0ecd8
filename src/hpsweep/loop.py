"""Your own training loop, recorded as hpsweep-train records its trials: metrics.csv per epoch,
result.json, curves.png and checkpoints in the trial dir (Hydra's output dir), reported to the
sweep's study so that its pruner can stop the trial. `hpsweep compare`, `best`, `plot`,
`rebuild` and `reproduce` then read your sweep as they read hpsweep-train's.

    @hydra.main(config_path="conf", config_name="config", version_base="1.3")
    def main(cfg) -> float:
        with TrialRecord(objective="val_loss") as record:
            state = record.resume()  # your last.pt, or None for a new trial
            for epoch in range(record.epochs_done + 1, cfg.epochs + 1):
                ...  # train, evaluate
                record.log_epoch(train_loss=..., val_loss=..., val_acc=...)  # may prune
                record.save_checkpoint({"model": model.state_dict(), ...})
            return record.finish(test_acc=...)  # the best epoch's val_loss, for the sweeper

Plain Python over the trial record: torch is imported only to save and load checkpoints.
"""

import logging
import math
import os
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from hpsweep.record import (
    OBJECTIVES,
    REPRODUCE_UNTIL,
    Status,
    TrialFiles,
    TrialResult,
    draw_later,
    is_better,
)

log = logging.getLogger("hpsweep.loop")
# the checkpoint key under which the record keeps its own state (epochs, history, best)
RECORD_KEY = "hpsweep_record"
DIRECTIONS = ("maximize", "minimize")


def report_epoch(trial: Any, value: float, epoch: int, epochs: int | None) -> bool:
    """The pruning idiom: report an epoch's objective to the Optuna trial; whether the pruner
    stops the trial.

    Never after the last of the trial's `epochs`: pruning it would save nothing, and would call
    a fully trained trial PRUNED, out of the running for best (a successive-halving rung can
    fall on the last epoch). A study away past its retries leaves the epoch unreported, with a
    warning: the trial trains on, unpruned, for now."""
    try:
        trial.report(value, step=epoch)
        return (epochs is None or epoch < epochs) and trial.should_prune()
    except Exception as e:
        log.warning("epoch %d not reported to the study: %s", epoch, str(e).splitlines()[0])
        return False


class TrialRecord:
    """One trial of a user's loop. `objective`: the logged score that picks the best epoch and
    is returned to the sweeper; `direction`: how it improves, needed unless its name says
    (val_loss, val_acc, val_mse, ...: hpsweep.record.OBJECTIVES). `trial_dir`: Hydra's output
    dir of the job by default."""

    def __init__(
        self,
        objective: str,
        direction: str | None = None,
        trial_dir: str | Path | None = None,
        epochs: int | None = None,
    ):
        direction = direction or OBJECTIVES.get(objective)
        if direction not in DIRECTIONS:
            raise ValueError(
                f"objective {objective!r}: give direction='maximize' or 'minimize' "
                f"(known by name: {', '.join(OBJECTIVES)})"
            )
        self.objective, self.direction, self.epochs = objective, direction, epochs
        self.files = TrialFiles(Path(trial_dir) if trial_dir is not None else _hydra_output_dir())
        self.history: list[dict[str, float]] = []
        self.best: dict[str, float] | None = None
        self.improved = False  # the last logged epoch is the new best
        self.elapsed = 0.0  # seconds in this trial's epochs, across resumes
        self._clock = time.perf_counter()
        self._trial = _sweep_trial()
        if self._trial is not None:
            steers = self._trial.study.direction.name.lower()
            if steers != direction:
                raise ValueError(
                    f"objective {objective!r} is {direction}d but the sweep's study is set to "
                    f"{steers}: set hydra.sweeper.direction={direction}"
                )
        self.files.dir.mkdir(parents=True, exist_ok=True)

    @property
    def epochs_done(self) -> int:
        return int(self.history[-1]["epoch"]) if self.history else 0

    # -- each epoch -------------------------------------------------------------------------

    def log_epoch(self, epoch: int | None = None, **scores: float) -> bool:
        """Record an epoch's scores (plain numbers: train_loss=..., val_acc=..., lr=...):
        metrics.csv, the best epoch, and a report to the study. Returns whether the epoch is
        the new best. Raises optuna.TrialPruned (result.json says PRUNED) when the sweep's
        pruner stops the trial."""
        if self.objective not in scores:
            raise ValueError(
                f"log_epoch got no {self.objective} (the objective); it got {', '.join(scores)}"
            )
        now = time.perf_counter()
        seconds, self._clock = now - self._clock, now
        self.elapsed += seconds
        epoch = self.epochs_done + 1 if epoch is None else epoch
        # train_ scores, then val_ ones, then the rest: the columns hpsweep-train's files have
        ordered = sorted(
            scores, key=lambda k: (not k.startswith("train_"), not k.startswith("val_"))
        )
        row = {"epoch": epoch, **{k: float(scores[k]) for k in ordered}, "seconds": seconds}
        value = row[self.objective]
        best = None if self.best is None else self.best[self.objective]
        self.improved = math.isfinite(value) and is_better(
            value, best, self.objective, self.direction
        )
        if self.improved:
            self.best = row
        self.history.append(row)
        self.files.write_metrics(self.history)
        self._report(epoch, value)
        return self.improved

    def _report(self, epoch: int, value: float) -> None:
        until = os.environ.get(REPRODUCE_UNTIL)  # a re-run of a trial pruned after that epoch
        pruned = until is not None and epoch >= int(until)
        if self._trial is not None:
            pruned = report_epoch(self._trial, value, epoch, self.epochs)
        if pruned:
            import optuna

            reason = f"pruned after epoch {epoch}"
            self._write_result(Status.PRUNED, reason)
            raise optuna.TrialPruned(reason)

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        """`state` (your model's, optimizer's, ... state dicts) as last.pt, and as best.pt
        when the epoch just logged is the new best; each written whole or not at all. Tensors,
        numbers, strings and containers of them: `resume` loads with weights_only=True."""
        from hpsweep.job import save_checkpoint

        state = {**state, RECORD_KEY: self.own_state()}
        paths = [self.files.last] + ([self.files.best] if self.improved else [])
        self.files.checkpoints.mkdir(parents=True, exist_ok=True)
        save_checkpoint(state, *paths)

    def own_state(self) -> dict[str, Any]:
        """What a checkpoint keeps of the record, under RECORD_KEY."""
        return {"history": self.history, "best": self.best, "elapsed": self.elapsed}

    def restore(self, own: dict[str, Any]) -> None:
        """The record as own_state() saved it; metrics.csv cut back to it (the epochs after
        the checkpoint run again)."""
        self.history, self.best = list(own.get("history", [])), own.get("best")
        self.elapsed = own.get("elapsed", 0.0)
        self.files.write_metrics(self.history)

    def resume(self) -> dict[str, Any] | None:
        """The state last saved (last.pt; best.pt if last.pt is damaged), with this record
        back where it was then; None for a new trial. Load your state dicts from it."""
        from hpsweep.job import load_resume_state

        state = load_resume_state(self.files.checkpoints)
        if state is None:
            return None
        self.restore(state.pop(RECORD_KEY, {}))
        return state

    # -- the end ----------------------------------------------------------------------------

    def finish(self, **test_scores: float) -> float:
        """result.json (COMPLETE) and curves.png; `test_scores`: test_acc=..., test_loss=...
        of your best checkpoint, if you evaluate it. Returns the best epoch's objective: what
        the task function returns to the sweeper."""
        if self.best is None:
            raise ValueError(f"finish: no epoch logged a finite {self.objective}")
        self._write_result(Status.COMPLETE, None, {k: float(v) for k, v in test_scores.items()})
        self._draw()
        return self.best[self.objective]

    def _write_result(
        self, status: Status, reason: str | None, test: dict[str, float] | None = None
    ) -> None:
        best, test = self.best or {}, test or {}
        scores = {k: v for k, v in best.items() if k.startswith("val_")} | test
        self.files.write_result(
            TrialResult(
                status=status,
                reason=reason,
                objective=self.objective,
                direction=self.direction,
                value=best.get(self.objective),
                best_epoch=int(best["epoch"]) if best else None,
                best_val_acc=best.get("val_acc"),
                best_val_loss=best.get("val_loss"),
                test_acc=test.get("test_acc"),
                test_loss=test.get("test_loss"),
                epochs_run=len(self.history),
                epochs=self.epochs or len(self.history),
                wall_time_s=self.elapsed,
                num_params=None,
                seed=None,
                torch_version=_torch_version(),
                device=None,
                num_threads=None,
                scores=scores or None,
                entry_point=entry_point(),
            )
        )

    def _draw(self) -> None:
        if draw_later(self.files.dir):  # the command's drawer process draws it
            return
        from hpsweep.plots import plot_curves, save_png

        title = f"{self.files.dir.parent.name}/{self.files.dir.name}"
        best_epoch = None if self.best is None else int(self.best["epoch"])
        figure = plot_curves(self.history, best_epoch, title=title, objective=self.objective)
        save_png(figure, self.files.curves)

    def __enter__(self) -> "TrialRecord":
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """An exception out of the loop leaves result.json saying FAIL and why (a pruned
        trial's says PRUNED already; an interrupt leaves the trial to be continued)."""
        if error is None or not isinstance(error, Exception):
            return
        if type(error).__name__ == "TrialPruned":
            return
        self._write_result(Status.FAIL, f"{type(error).__name__}: {error}")


def entry_point() -> str:
    """The script or module this process runs, as `hpsweep reproduce` starts it again."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name:
        return f"-m {spec.name.removesuffix('.__main__')}"
    return str(Path(sys.argv[0]).resolve())


def _hydra_output_dir() -> Path:
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        raise ValueError("TrialRecord outside a Hydra job: give trial_dir=")
    return Path(HydraConfig.get().runtime.output_dir)


def _sweep_trial() -> Any:
    """The Optuna trial when hydra/sweeper=hpsweep runs this job, else None."""
    from hydra_plugins.hpsweep_sweeper import current_trial

    return current_trial()


def _torch_version() -> str | None:
    torch = sys.modules.get("torch")
    return getattr(torch, "__version__", None)
