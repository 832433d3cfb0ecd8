"""A trial's curves.png drawn from its files: by a sweep's drawer process (hpsweep.plots'
__main__), and for the figures a killed sweep left undrawn."""

import contextlib
import sys
from pathlib import Path

from hpsweep.plots._common import plot_curves, save_png
from hpsweep.record import Status, TrialFileError, TrialFiles


def draw_trial_curves(
    trial_dir: Path, label_smoothing: float | None = None, only_if_stale: bool = False
) -> Path | None:
    """The trial's curves.png, drawn from metrics.csv and result.json as its job draws it at
    its end; None for a trial without one (no result.json yet, or failed). `label_smoothing`:
    its training loss's, named in the legend (None: read from its .hydra/config.yaml).
    `only_if_stale`: only when curves.png is missing or older than result.json."""
    files = TrialFiles(Path(trial_dir).resolve())  # its title: the sweep's name and its own
    result = files.read_result()
    if result is None or result.status is Status.FAIL:
        return None
    if only_if_stale and not _stale(files):
        return None
    if label_smoothing is None:
        label_smoothing = 0.0
        if result.entry_point is None:  # hpsweep-train's, with its config in .hydra
            with contextlib.suppress(TrialFileError):  # unreadable: the figure without it
                config = files.read_hydra_data("config.yaml", ("label_smoothing",))
                label_smoothing = float(config.get("label_smoothing") or 0.0)
    figure = plot_curves(
        files.read_metrics(),
        result.best_epoch,
        title=f"{files.dir.parent.name}/{files.dir.name}",
        label_smoothing=label_smoothing,
        objective=result.objective,
    )
    return save_png(figure, files.curves)


def _stale(files: TrialFiles) -> bool:
    try:
        return files.curves.stat().st_mtime < files.result.stat().st_mtime
    except FileNotFoundError:
        return True


def stale_trial_dirs(sweep_dir: Path) -> list[Path]:
    """The sweep dir's finished trials whose curves.png is missing or older than their
    result.json (a sweep killed before its drawer drew them); failed ones included, as
    draw_trial_curves decides about them."""
    with contextlib.suppress(FileNotFoundError):
        return [
            trial_dir
            for trial_dir in sorted(Path(sweep_dir).iterdir())
            if (trial_dir / "result.json").is_file() and _stale(TrialFiles(trial_dir))
        ]
    return []


def draw_stale_curves(sweep_dir: Path) -> int:
    """The missing or outdated curves.png of a sweep dir's finished trials; how many were
    drawn. A trial that cannot be read is said in one line and left to `hpsweep compare`,
    which says what is wrong with it."""
    return sum(draw_or_say(d, only_if_stale=True) for d in stale_trial_dirs(sweep_dir))


def draw_or_say(
    trial_dir: Path, label_smoothing: float | None = None, only_if_stale: bool = False
) -> bool:
    try:
        return draw_trial_curves(trial_dir, label_smoothing, only_if_stale) is not None
    except Exception as e:  # a damaged file, a full disk: this figure, not the others
        print(f"curves.png of {trial_dir} not drawn: {type(e).__name__}: {e}", file=sys.stderr)
        return False
