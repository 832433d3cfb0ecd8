"""What rebuild_study takes from the task's side and gives back: plain records, no Optuna."""

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class TrialFound:
    """A trial dir as its task's files tell it, for the rebuilt study."""

    dir: str  # its name, relative to the sweep dir as the sweeper records it
    number: int | None  # the newest trial in it: hydra.yaml's job number (None: unreadable)
    first: int | None  # the trial it was made for: the number its name ends with
    state: str = "FAIL"  # a TrialState name: RUNNING (its worker is gone), COMPLETE, PRUNED, FAIL
    value: float | None = None
    overrides: list[str] = field(default_factory=list)  # .hydra/overrides.yaml
    intermediate: dict[int, float] = field(default_factory=dict)  # step -> reported value
    fail_reason: str | None = None


@dataclass
class Rebuilt:
    """What `rebuild_study` wrote, for the CLI to say."""

    study_name: str
    storage: str  # where, its password masked
    states: dict[str, int]  # state name -> trials
    backup: Path | None  # the journal that was there, moved aside
    # the sweep command's arguments after its program (the task's own script or entry point),
    # which continue the study
    arguments: str
    notes: list[str] = field(default_factory=list)  # what could not be rebuilt as it was
