"""The journal file, the default storage: Optuna's file backend, made to survive any crash.

Optuna appends one JSON record per line while it holds the journal's lock. A writer killed
mid-append leaves its line cut short; Optuna's reader skips that last line, but the next append
lands on the same line, and from then on every read of the journal fails ("cannot open study").
Here:
- an append first ends a cut last line, so each record starts on a line of its own;
- a read skips a line that holds no record instead of failing on all that follow;
- on open, a damaged journal is rewritten without its damaged lines, under the journal lock,
  with the original kept next to it (`optuna.journal.bak-<time>`).
Records are numbered by their order among the lines that hold one, which a repair keeps, so a
process that read the journal before another one repaired it reads on where it was.

Lines that replay otherwise than they were written are never applied in silence (Order): a
create-trial line copied (a duplicated line) is read around and repaired away, and a record
that refers to a study or trial before the line that creates it (lines out of order), or one
whose op code this Optuna does not know, stops the reading with a line saying how to recover.
"""

import contextlib
import io
import json
import logging
import os
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock

from hydra_plugins.hpsweep_sweeper import _compat
from hydra_plugins.hpsweep_sweeper._names import wait_scale

log = logging.getLogger(__name__)

# Optuna writes each record as {"op_code":..., ...}; inside a string value the quotes are
# escaped, so this marks where a record begins, also when it was glued onto a cut one.
RECORD_START = b'{"op_code":'
OP_CODES = {int(op) for op in _compat.JournalOperation}


class JournalUnreadable(RuntimeError):
    pass


CREATE_STUDY, DELETE_STUDY, CREATE_TRIAL = (
    _compat.JournalOperation.CREATE_STUDY,
    _compat.JournalOperation.DELETE_STUDY,
    _compat.JournalOperation.CREATE_TRIAL,
)
DUPLICATE = "a copy of an earlier create-trial line (it would make a trial that never was)"


class Order:
    """The study and trial ids Optuna's replay gives as it reads the journal's records in
    order, to find what it would apply otherwise than it was written. A reference to an id
    before the line that creates it can only come from lines out of order: Optuna's replay
    drops such a record without a word (a trial's parameter, the study's search space). A
    create-trial line of a started trial that repeats an earlier one byte for byte (each holds
    its writer and its start time to the microsecond) would add a trial that never ran and
    shift every trial id after it by one."""

    def __init__(self) -> None:
        self.studies: set[str] = set()  # names; a study's id is its place among them
        self.deleted: set[int] = set()
        self.trials = 0
        self.creates: set[bytes] = set()

    def check(self, record: dict[str, Any], line: bytes) -> str | None:
        """DUPLICATE (read the line around), None (apply it); raises JournalUnreadable's
        message as ValueError for a record out of order."""
        op = record["op_code"]
        if op == CREATE_STUDY:
            self.studies.add(str(record.get("study_name")))  # a name again: Optuna ignores it
            return None
        for key, created in (("study_id", len(self.studies)), ("trial_id", self.trials)):
            referred = record.get(key)
            if isinstance(referred, int) and referred >= created:
                raise ValueError(f"refers to {key} {referred} before the line that creates it")
        if op == DELETE_STUDY:
            self.deleted.add(record["study_id"])
        elif op == CREATE_TRIAL and record.get("study_id") not in self.deleted:
            # A queued trial's line (no start time) may well repeat: the same values queued
            # twice by one process (a fused group's shared values) are two trials.
            if record.get("datetime_start") is not None:
                if line in self.creates:
                    return DUPLICATE
                self.creates.add(line)
            self.trials += 1
        return None


def parse_line(line: bytes) -> tuple[dict[str, Any] | None, int, str | None]:
    """(the record in a journal line or None, where it starts in the line, what is wrong with
    the line or None). A line ends with its newline: one without is cut off."""
    if not line.endswith(b"\n"):
        return None, 0, "cut off"
    record = _record(line)
    if record is not None:
        return record, 0, None
    # A record appended onto a cut one (by Optuna itself, before this module) is whole.
    start = line.find(RECORD_START, 1)
    while start != -1:
        record = _record(line[start:])
        if record is not None:
            return record, start, "a cut record, with a whole one glued on: that one is kept"
        start = line.find(RECORD_START, start + 1)
    return None, 0, "not a record"


def _record(text: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except ValueError:  # JSONDecodeError, UnicodeDecodeError
        return None
    # Optuna's replay fails on a record without these: such a line is no record either.
    if isinstance(value, dict) and isinstance(value.get("op_code"), int) and "worker_id" in value:
        return value  # an unknown op code is a record too: read_logs says so (Order)
    return None


LOCK_GRACE_S = 30


class JournalFile(JournalFileBackend):
    """Optuna's JournalFileBackend that never appends onto a cut line and reads around lines
    that hold no record."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # Optuna's own lock, with its default grace (30 s) before a dead writer's lock is taken
        grace = max(1, round(LOCK_GRACE_S * wait_scale()))
        self.lock = JournalFileSymlinkLock(str(path), grace_period=grace)
        super().__init__(str(path), lock_obj=self.lock)
        self._file: tuple[int, int] | None = None  # (device, inode) that _resume is about
        # record number -> (byte offset, line number) of the line after the record before it
        self._resume: dict[int, tuple[int, int]] = {0: (0, 1)}
        self.damaged: dict[int, str] = {}  # line number -> what is wrong with it
        self._order, self._ordered = Order(), 0  # Order as of that record number

    def read_logs(self, log_number_from: int) -> Generator[dict[str, Any], None, None]:
        with open(self.path, "rb") as f:
            stat = os.fstat(f.fileno())
            if (stat.st_dev, stat.st_ino) != self._file:  # first read, or a repair replaced it
                self._file = (stat.st_dev, stat.st_ino)
                self._resume = {0: (0, 1)}
                self.damaged = {}
            number = log_number_from if log_number_from in self._resume else 0
            if number != self._ordered:  # Optuna reads on from where it was: this is rare
                number, self._order = 0, Order()
            offset, line_number = self._resume[number]
            f.seek(offset)
            for line in f:
                record, start, problem = parse_line(line)
                if problem == "cut off":  # being written, or its writer died: not yet a record
                    self.damaged[line_number] = problem
                    return
                offset += len(line)
                if record is not None:
                    problem = self.check(record, line[start:], line_number) or problem
                    record = None if problem == DUPLICATE else record
                if problem is not None and self.damaged.get(line_number) != problem:
                    self.damaged[line_number] = problem
                    log.warning(
                        "journal %s: line %d read around: %s", self.path, line_number, problem
                    )
                line_number += 1
                if record is None:
                    continue
                number += 1
                self._resume[number] = (offset, line_number)
                self._ordered = number
                if number > log_number_from:
                    yield record

    def check(self, record: dict[str, Any], line: bytes, line_number: int) -> str | None:
        if record["op_code"] not in OP_CODES:
            why = f"line {line_number} holds op code {record['op_code']}, which this Optuna "
            raise JournalUnreadable(unreadable(self.path, why + "does not know (a newer one's?)"))
        try:
            return self._order.check(record, line)
        except ValueError as e:
            why = f"line {line_number} {e}: its lines are out of order"
            raise JournalUnreadable(unreadable(self.path, why)) from None

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        data = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in logs).encode()
        self.lock.acquire()
        try:
            with open(self.path, "ab+") as f:
                if f.seek(0, os.SEEK_END) > 0:
                    f.seek(-1, os.SEEK_END)
                    if f.read(1) != b"\n":  # a writer died mid-append: end its line first
                        data = b"\n" + data
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:  # a full disk: say which file (a write's error names none)
            if e.filename is not None or e.errno is None:
                raise
            raise OSError(e.errno, e.strerror, str(self.path)) from e
        finally:
            self.lock.release()


def open_journal(path: Path) -> JournalStorage:
    """The journal at `path` (absolute), repaired first if a crash damaged it."""
    backend = JournalFile(path)
    try:
        storage = JournalStorage(backend)  # reads around damaged lines
    except JournalUnreadable:
        raise
    except Exception as e:  # a record Optuna cannot replay: nothing here can fix that
        raise JournalUnreadable(unreadable(path, f"{type(e).__name__}: {e}")) from None
    if backend.damaged:
        backend.lock.acquire()  # no writer may append while the file is replaced
        try:
            repair(path)
        except OSError as e:  # a read-only sweep dir, say: reading around still works
            log.warning("journal %s: not repaired (%s); its damaged lines are skipped", path, e)
        finally:
            backend.lock.release()
    return storage


def repair(path: Path) -> Path | None:
    """Rewrite the journal with the records of its good lines only (and those glued onto a cut
    one), the original kept as a backup next to it; returns the backup, or None if the journal
    is sound. Call it holding the journal's lock."""
    data = path.read_bytes()
    kept: list[bytes] = []
    problems: list[str] = []
    order = Order()
    for number, line in enumerate(io.BytesIO(data), start=1):
        record, start, problem = parse_line(line)
        if record is not None and order.check(record, line[start:]) == DUPLICATE:
            record, problem = None, DUPLICATE
        if record is not None:
            kept.append(line[start:])
        if problem is not None:
            problems.append(f"line {number} ({problem})")
    if not problems:
        return None  # a line that was being written when it was read is whole now
    if not kept and any(not p.endswith("(cut off)") for p in problems):
        # not one record, yet lines that are not one: no journal (or no longer one)
        raise JournalUnreadable(unreadable(path, "none of its lines is an Optuna record"))
    backup = backup_path(path)
    backup.write_bytes(data)
    temporary = path.with_name(f"{path.name}.repair")
    with open(temporary, "wb") as f:
        f.write(b"".join(kept))
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)  # atomic: a reader sees the old file or the new one
    with contextlib.suppress(OSError):  # make the rename itself survive a power cut
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    log.warning(
        "journal %s was damaged (a writer killed mid-append, or a line copied) and is "
        "repaired, dropping %s; the original is kept as %s",
        path,
        "; ".join(problems),
        backup.name,
    )
    return backup


def backup_path(path: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    backup, n = path.with_name(f"{path.name}.bak-{stamp}"), 1
    while backup.exists():  # repaired twice within a second
        n += 1
        backup = path.with_name(f"{path.name}.bak-{stamp}-{n}")
    return backup


def unreadable(path: Path, why: str) -> str:
    return (
        f"journal {path} cannot be read ({why}); rebuild the study from its trial dirs "
        f"(hpsweep rebuild SWEEP_DIR), put back a backup of it ({path.name}.bak-*) if there "
        "is one, or move it away to start the study afresh"
    )
