"""What the sweep counts of its study, read incrementally: a refresh reads the trials in flight,
not the whole study (see Tally)."""

import threading
from collections import Counter
from collections.abc import Sequence
from datetime import datetime

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from hydra_plugins.hpsweep_sweeper import _compat
from hydra_plugins.hpsweep_sweeper._names import NEVER_STARTED, TRIAL_DIR


class Tally:
    """The study's trials as the sweep counts them: the budget, failures and epochs it checks
    before each trial, and the states, best and timing of the progress line after each.

    The first `refresh` reads all the study's trials; later ones read only what can have
    changed since: the trials created since (found by number) and those unfinished then. A
    finished trial never changes (storages refuse to update it), so the counts stay exact
    whoever adds or finishes trials (other workers, other processes), with no periodic
    recount, and a refresh costs the trials in flight, not the study's size: reading every
    trial after each one made a 10,000-trial sweep pay 10,000 reads of 10,000 trials.
    Trials a retry continues and trials that never started (`uncounted`) are left out of every
    count but epochs.
    """

    def __init__(self, directions: Sequence[StudyDirection], since: datetime) -> None:
        self.signs = [1 if d == StudyDirection.MAXIMIZE else -1 for d in directions]
        self.since = since  # the progress line times the trials finished since then
        self.lock = threading.Lock()  # launcher threads share one connection, hence one tally
        self.loaded = False
        self.trials: list[FrozenTrial] = []  # by number, as last read
        self.unfinished: set[int] = set()  # read again by each refresh
        self.uncounted: set[int] = set()  # continued by a retry, or never started
        self.newest: dict[str, int] = {}  # trial dir -> the newest trial number in it
        self.states: Counter[TrialState] = Counter()  # finished trials, uncounted ones not
        self.finished_epochs = 0
        self.timed_seconds, self.timed = 0.0, 0
        self.best: FrozenTrial | None = None  # one objective
        self.front: list[FrozenTrial] = []  # several: the trials no other one dominates

    def refresh(self, study: optuna.Study) -> None:
        with self.lock:
            if not self.loaded:
                self.fold(study.get_trials(deepcopy=False))
                self.loaded = True
                return
            storage, study_id = _compat.storage_of(study), _compat.study_id(study)
            # everything read before anything is folded: a storage error leaves the tally whole
            changed = [
                storage.get_trial(_compat.trial_id(self.trials[n])) for n in sorted(self.unfinished)
            ]
            number = len(self.trials)
            while True:
                try:
                    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, number)
                except KeyError:  # no such trial yet
                    break
                changed.append(storage.get_trial(trial_id))
                number += 1
            self.fold(changed)

    def fold(self, trials: Sequence[FrozenTrial]) -> None:
        """Take in trials read anew: new ones (in number order) or unfinished ones again."""
        for trial in trials:
            self._place(trial)  # before it is stored: what it replaces is what was counted
            if trial.number == len(self.trials):
                self.trials.append(trial)
            else:
                self.trials[trial.number] = trial
            self.unfinished.discard(trial.number)
            if not trial.state.is_finished():
                self.unfinished.add(trial.number)
                continue
            self.finished_epochs += len(trial.intermediate_values)
            if trial.number not in self.uncounted:
                self._count(trial, 1)

    def _place(self, trial: FrozenTrial) -> None:
        if trial.user_attrs.get(NEVER_STARTED):
            self._uncount(trial.number)
            return
        trial_dir = trial.user_attrs.get(TRIAL_DIR)
        if trial_dir is None:  # not yet claimed, or not run by this sweeper
            return
        newest = self.newest.get(trial_dir, trial.number)
        if newest < trial.number:
            self._uncount(newest)
        elif newest > trial.number:
            self._uncount(trial.number)
        self.newest[trial_dir] = max(newest, trial.number)

    def _uncount(self, number: int) -> None:
        if number in self.uncounted:
            return
        self.uncounted.add(number)
        if number < len(self.trials) and self.trials[number].state.is_finished():
            self._count(self.trials[number], -1)

    def _count(self, trial: FrozenTrial, sign: int) -> None:
        self.states[trial.state] += sign
        start, complete = trial.datetime_start, trial.datetime_complete
        if start is not None and complete is not None and complete >= self.since:
            self.timed_seconds += sign * (complete - start).total_seconds()
            self.timed += sign
        if trial.state != TrialState.COMPLETE or trial.values is None:
            return
        ranked = [*self.front, *([self.best] if self.best is not None else [])]
        if sign > 0:
            self._rank(trial)
        elif any(t.number == trial.number for t in ranked):
            self._rank_again()

    def _rank_again(self) -> None:
        # A best trial continued by a retry: rare, and the only pass over every trial.
        self.best, self.front = None, []
        for t in self.trials:
            complete = t.state == TrialState.COMPLETE and t.values is not None
            if complete and t.number not in self.uncounted:
                self._rank(t)

    def _rank(self, trial: FrozenTrial) -> None:
        if len(self.signs) == 1:
            if self.best is None or self._key(trial) > self._key(self.best):
                self.best = trial
        elif not any(self._dominates(t, trial) for t in self.front):
            self.front = [t for t in self.front if not self._dominates(trial, t)] + [trial]

    def _key(self, trial: FrozenTrial) -> tuple[float, int]:
        return self.signs[0] * trial.values[0], -trial.number  # ties: the earlier trial

    def _dominates(self, a: FrozenTrial, b: FrozenTrial) -> bool:
        pairs = [(s * x, s * y) for s, x, y in zip(self.signs, a.values, b.values, strict=True)]
        return all(x >= y for x, y in pairs) and any(x > y for x, y in pairs)

    @property
    def budget_used(self) -> int:
        """Trials that count toward n_trials: all but the uncounted ones."""
        return len(self.trials) - len(self.uncounted)

    @property
    def failed(self) -> int:
        return self.states[TrialState.FAIL]

    @property
    def waiting(self) -> bool:
        return any(self.trials[n].state == TrialState.WAITING for n in self.unfinished)

    @property
    def running(self) -> int:
        return sum(
            self.trials[n].state == TrialState.RUNNING and n not in self.uncounted
            for n in self.unfinished
        )

    def running_trials(self) -> list[FrozenTrial]:
        return [
            self.trials[n]
            for n in sorted(self.unfinished)
            if self.trials[n].state == TrialState.RUNNING
        ]

    @property
    def epochs(self) -> int:
        """Epochs the study's jobs have reported, running and uncounted trials included."""
        unfinished = sum(len(self.trials[n].intermediate_values) for n in self.unfinished)
        return self.finished_epochs + unfinished
