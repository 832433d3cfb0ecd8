"""The trial job: a config built into data, model and optimizer, trained epoch by epoch with
checkpoints to resume from and to pick the best epoch, and the trial record written as it goes.

Plain PyTorch: callable from a test with a composed config (`run_trial`), no Hydra app needed.
"""

from hpsweep.job._build import Job, build
from hpsweep.job._checkpoint import (
    flatten,
    load_checkpoint,
    load_resume_state,
    save_checkpoint,
)
from hpsweep.job._losses import BCEWithLogitsLoss, CrossEntropyLoss
from hpsweep.job._reproduce import (
    FUSED_TOLERANCE,
    compare_metrics,
    reproduce,
    stopping_epoch,
)
from hpsweep.job._schedules import WarmupCosine
from hpsweep.job._steps import (
    AUTOCAST_DTYPES,
    EVAL_BATCH_SIZE,
    evaluate,
    make_criterion,
    train_one_epoch,
)
from hpsweep.job._trial import (
    EpochHook,
    Run,
    TrainingDiverged,
    checkpoint,
    diverged,
    end_epoch,
    final_report,
    prepare,
    result_of,
    run_trial,
    stop_reason,
    train,
)

__all__ = [
    "AUTOCAST_DTYPES",
    "EVAL_BATCH_SIZE",
    "FUSED_TOLERANCE",
    "BCEWithLogitsLoss",
    "CrossEntropyLoss",
    "EpochHook",
    "Job",
    "Run",
    "TrainingDiverged",
    "WarmupCosine",
    "build",
    "checkpoint",
    "compare_metrics",
    "diverged",
    "end_epoch",
    "evaluate",
    "final_report",
    "flatten",
    "load_checkpoint",
    "load_resume_state",
    "make_criterion",
    "prepare",
    "reproduce",
    "result_of",
    "run_trial",
    "save_checkpoint",
    "stop_reason",
    "stopping_epoch",
    "train",
    "train_one_epoch",
]
