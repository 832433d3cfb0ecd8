"""End of a sweep: optimization_results.yaml, best_config.yaml and a table of the top trials."""

import logging
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import optuna
from omegaconf import OmegaConf
from optuna.trial import FrozenTrial, TrialState

from hydra_plugins.hpsweep_sweeper._names import OVERRIDES, RETRY_OF, TRIAL_DIR

log = logging.getLogger(__name__)


def write_report(study: optuna.Study, sweep_dir: Path, storage: str, top_k: int) -> dict[str, Any]:
    trials = study.get_trials(deepcopy=False)
    results: dict[str, Any] = {
        "name": study.study_name,
        "storage": storage,
        "directions": [d.name.lower() for d in study.directions],
        "n_trials": len(trials),
        "states": dict(Counter(t.state.name for t in trials)),
    }
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        log.warning("no trial of study %s has completed", study.study_name)
    elif len(study.directions) == 1:
        best = study.best_trial
        results.update(
            best_trial=best.number,
            best_value=best.value,
            best_params=best.params,
            best_trial_dir=best.user_attrs[TRIAL_DIR],  # relative: the sweep dir can move
            best_overrides=best.user_attrs[OVERRIDES],
        )
        if RETRY_OF in best.user_attrs:  # why its dir is named after another number
            results["best_retry_of"] = best.user_attrs[RETRY_OF]
        config = sweep_dir / best.user_attrs[TRIAL_DIR] / ".hydra" / "config.yaml"
        if config.is_file():
            shutil.copyfile(config, sweep_dir / "best_config.yaml")
        log.info(
            "best trial %d: %.6g  %s", best.number, best.value, " ".join(results["best_overrides"])
        )
        log.info("top trials:\n%s", format_table(ranked(complete, study.direction), top_k))
    else:
        front = study.best_trials
        results["pareto_front"] = [
            {
                "trial": t.number,
                "values": t.values,
                "params": t.params,
                "trial_dir": t.user_attrs[TRIAL_DIR],
                "overrides": t.user_attrs[OVERRIDES],
                **({"retry_of": t.user_attrs[RETRY_OF]} if RETRY_OF in t.user_attrs else {}),
            }
            for t in front
        ]
        # hydra-optuna-sweeper's name and shape for the same front, which its users read
        results["solutions"] = [{"params": t.params, "values": t.values} for t in front]
        log.info("pareto front: trials %s", [t.number for t in study.best_trials])
    OmegaConf.save(OmegaConf.create(results), sweep_dir / "optimization_results.yaml")
    return results


def ranked(trials: list[FrozenTrial], direction: optuna.study.StudyDirection) -> list[FrozenTrial]:
    sign = -1 if direction == optuna.study.StudyDirection.MAXIMIZE else 1
    return sorted(trials, key=lambda t: (sign * (t.value or 0.0), t.number))  # all COMPLETE


def format_table(trials: list[FrozenTrial], top_k: int) -> str:
    params = sorted({name for t in trials for name in t.params})
    shown = trials[:top_k]
    # A retry runs in the dir of the trial it retries: the column says which, when one is shown.
    retries = any(RETRY_OF in t.user_attrs for t in shown)
    header = ["trial", "value", *params, "dir", *(["retry_of"] if retries else [])]
    rows = [
        [
            str(t.number),
            f"{t.value:.6g}",
            *(_cell(t.params.get(p)) for p in params),
            t.user_attrs.get(TRIAL_DIR, ""),
            *([str(t.user_attrs.get(RETRY_OF, ""))] if retries else []),
        ]
        for t in shown
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in [header, *rows]
    )


def _cell(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
