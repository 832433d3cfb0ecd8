"""The trial record: what a trial dir holds, and the one place that writes and reads it.

    <trial dir>/metrics.csv     one row per epoch, METRIC_COLUMNS
    <trial dir>/result.json     a TrialResult: status, the best epoch's numbers, test scores
    <trial dir>/curves.png      train and validation curves (drawn by hpsweep.plots, by the
                                command's drawer process when it has one: see _drawing)
    <trial dir>/checkpoints/    last.pt and best.pt (hpsweep.job)
    <trial dir>/.hydra/         Hydra's: config.yaml, hydra.yaml, overrides.yaml (read here too)

Light on purpose (no torch, pandas or Hydra): the CLI, the results and the config schema
import it.
"""

from hpsweep.errors import TrialFileError
from hpsweep.record._drawing import draw_later, finish_drawing, start_drawing
from hpsweep.record._files import (
    METRIC_COLUMNS,
    METRIC_DIRECTIONS,
    OBJECTIVES,
    REPRODUCE_UNTIL,
    SPLIT_METRICS,
    Launch,
    Status,
    TrialFiles,
    TrialResult,
    atomic_write_bytes,
    is_better,
)

__all__ = [
    "METRIC_COLUMNS",
    "METRIC_DIRECTIONS",
    "OBJECTIVES",
    "REPRODUCE_UNTIL",
    "SPLIT_METRICS",
    "Launch",
    "Status",
    "TrialFileError",
    "TrialFiles",
    "TrialResult",
    "atomic_write_bytes",
    "draw_later",
    "finish_drawing",
    "is_better",
    "start_drawing",
]
