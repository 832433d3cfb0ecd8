"""Faults a sweep survives: a journal damaged by a crash, and a storage that goes away.

The storage outages are real: PostgreSQL behind a TCP proxy that the test cuts (new connections
refused, live ones dropped) and restores, as a database restart or a network outage does. The
server itself is never touched.
"""

import contextlib
import errno
import io
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import optuna
import pandas as pd
import pytest
import sqlalchemy
import yaml
from optuna.storages import BaseStorage, JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from hpsweep.cli import main as hpsweep_cli
from hydra_plugins.hpsweep_sweeper import _storage, load_sweep_study, open_sweep_storage
from hydra_plugins.hpsweep_sweeper._names import WAIT_SCALE
from tests.conftest import FAST, run_cli

SWEEP = ("-m", "sweep=mlp", "epochs=1", *FAST)
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def finished(study: optuna.Study) -> int:
    return sum(t.state in FINISHED for t in study.trials)


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().split(b"\n")[:-1]  # the file ends with a newline


# -- the journal: a crash mid-append, a garbage line ------------------------------------------


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory):
    """A finished sweep of 3 trials in a journal; each test damages a copy of it."""
    cwd = tmp_path_factory.mktemp("sweep")
    proc = run_cli(*SWEEP, "hydra.sweeper.n_trials=3", cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return cwd / "multirun"


def resume(finished_sweep, tmp_path, damage, n_trials):
    """Copy the sweep, damage its journal, run the sweep again to n_trials."""
    shutil.copytree(finished_sweep, tmp_path / "multirun")
    journal = tmp_path / "multirun" / "mlp" / "optuna.journal"
    damaged_line = damage(journal)
    proc = run_cli(*SWEEP, f"hydra.sweeper.n_trials={n_trials}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return journal, damaged_line, proc.stdout + proc.stderr


def check_resumed(journal, damaged_line, log, n_trials, capsys):
    sweep = journal.parent
    assert finished(load_sweep_study(sweep, "mlp")) == n_trials
    assert (sweep / "optimization_results.yaml").is_file()
    assert f"line {damaged_line} (" in log and "is repaired" in log
    [backup] = sweep.glob("optuna.journal.bak-*")
    assert f"kept as {backup.name}" in log
    assert all(json.loads(line) for line in lines(journal))  # clean: Optuna alone reads it
    JournalStorage(JournalFileBackend(str(journal)))
    capsys.readouterr()
    columns = "number,state,trial_dir,retry_of"
    assert hpsweep_cli(["compare", str(sweep), "--format", "csv", "--columns", columns]) == 0
    table = pd.read_csv(io.StringIO(capsys.readouterr().out))
    # one row per study trial: every trial dir's last run COMPLETE; a trial the cut journal
    # left RUNNING is a FAIL row, retried in its own dir by the trial whose retry_of names it
    done = table[table["state"] == "COMPLETE"]
    assert len(done) == n_trials and done["trial_dir"].is_unique
    failed = table[table["state"] == "FAIL"]
    assert len(table) == n_trials + len(failed)
    retried = done.dropna(subset=["retry_of"]).set_index("retry_of")["trial_dir"]
    for number, trial_dir in zip(failed["number"], failed["trial_dir"], strict=True):
        assert retried[number] == trial_dir


def test_journal_cut_mid_record_resumes_to_n_trials(finished_sweep, tmp_path, capsys):
    def cut_last_record(journal):
        data = journal.read_bytes()
        journal.write_bytes(data[: data.rindex(b"\n", 0, -1) + 40])  # killed mid-append
        return len(lines(journal)) + 1

    journal, line, log = resume(finished_sweep, tmp_path, cut_last_record, n_trials=3)
    check_resumed(journal, line, log, 3, capsys)
    assert "cut off" in log


def test_journal_with_a_garbage_line_resumes_to_n_trials(finished_sweep, tmp_path, capsys):
    def garbage_in_the_middle(journal):
        records = lines(journal)
        journal.write_bytes(b"\n".join([*records[:5], b"\x00garbage", *records[5:]]) + b"\n")
        return 6

    journal, line, log = resume(finished_sweep, tmp_path, garbage_in_the_middle, n_trials=4)
    check_resumed(journal, line, log, 4, capsys)
    assert "not a record" in log


def killed_writer(journal: Path) -> None:
    """What a writer killed mid-append leaves: the first half of a record, no newline."""
    record = b'{"op_code":8,"worker_id":"dead","trial_id":0,"user_attr":{"note":"never written"}}'
    with open(journal, "ab") as f:
        f.write(record[:30])


def test_append_after_a_cut_record_starts_on_a_line_of_its_own(tmp_path):
    study = optuna.create_study(study_name="s", storage=open_sweep_storage(tmp_path))
    trial = study.ask()
    killed_writer(tmp_path / "optuna.journal")
    study.tell(trial, 0.5)
    *_, cut, told = lines(tmp_path / "optuna.journal")
    assert cut == b'{"op_code":8,"worker_id":"dead'
    assert json.loads(told)["state"] == TrialState.COMPLETE
    assert study.trials[0].state == TrialState.COMPLETE  # read around the cut line
    again = optuna.load_study(study_name="s", storage=open_sweep_storage(tmp_path))
    assert again.trials[0].value == 0.5


def test_record_glued_onto_a_cut_one_is_kept_by_the_repair(tmp_path, caplog):
    # Optuna's own appender glues the next record onto the cut line.
    journal = tmp_path / "optuna.journal"
    study = optuna.create_study(
        study_name="s", storage=JournalStorage(JournalFileBackend(str(journal)))
    )
    trial = study.ask()
    glued_line = len(lines(journal)) + 1
    killed_writer(journal)
    study.tell(trial, 0.5)
    with pytest.raises(ValueError):  # as on main: from the next record on, no read works
        study.set_user_attr("after", 1)
    original = journal.read_bytes()

    with caplog.at_level(logging.WARNING):
        again = optuna.load_study(study_name="s", storage=open_sweep_storage(tmp_path))
    assert again.trials[0].state == TrialState.COMPLETE and again.trials[0].value == 0.5
    assert again.user_attrs == {"after": 1}
    assert f"line {glued_line} (a cut record, with a whole one glued on" in caplog.text
    [backup] = tmp_path.glob("optuna.journal.bak-*")
    assert backup.read_bytes() == original
    assert len(lines(journal)) == glued_line + 1 and b"dead" not in journal.read_bytes()


def test_process_that_read_the_journal_before_a_repair_reads_on(tmp_path):
    first = optuna.create_study(study_name="s", storage=open_sweep_storage(tmp_path))
    first.tell(first.ask(), 1.0)
    with open(tmp_path / "optuna.journal", "ab") as f:
        f.write(b"garbage\n")
    first.tell(first.ask(), 2.0)  # read around the garbage line, still there
    second = optuna.load_study(study_name="s", storage=open_sweep_storage(tmp_path))  # repairs
    assert list(tmp_path.glob("optuna.journal.bak-*"))
    second.tell(second.ask(), 3.0)
    first.tell(first.ask(), 4.0)
    expected = [(0, 1.0), (1, 2.0), (2, 3.0), (3, 4.0)]
    for study in (first, second):
        assert [(t.number, t.value) for t in study.get_trials()] == expected


def test_journal_that_cannot_be_read_stops_the_sweep_with_one_line(tmp_path):
    journal = tmp_path / "multirun" / "mlp" / "optuna.journal"
    journal.parent.mkdir(parents=True)
    journal.write_bytes(b"PK\x03\x04 this is a zip file\n\x00\x01\n")
    proc = run_cli(*SWEEP, "hydra.sweeper.n_trials=1", cwd=tmp_path)
    assert proc.returncode == 1
    assert f"journal {journal} cannot be read" in proc.stderr
    assert "move it away to start the study afresh" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert journal.read_bytes().startswith(b"PK")  # left as it was


def small_journal(sweep: Path) -> Path:
    """A study of three finished trials with two parameters each, in the sweep's journal."""
    study = optuna.create_study(study_name="s", storage=open_sweep_storage(sweep))
    study.set_user_attr("search_space", {"x": "interval"})
    for i in range(3):
        trial = study.ask()
        trial.suggest_float("x", 0, 1)
        trial.suggest_int("n", 0, 9)
        study.tell(trial, float(i))
    return sweep / "optuna.journal"


def op_lines(journal: Path, op: int) -> list[int]:
    return [i for i, line in enumerate(lines(journal)) if json.loads(line)["op_code"] == op]


def test_a_copied_create_trial_line_is_repaired_away_not_replayed(tmp_path, caplog):
    journal = small_journal(tmp_path)
    records = lines(journal)
    second = op_lines(journal, 4)[1]  # trial 1's create, copied just after itself
    journal.write_bytes(b"\n".join([*records[: second + 1], *records[second:]]) + b"\n")

    with caplog.at_level(logging.WARNING):
        study = load_sweep_study(tmp_path, "s")

    # no trial that never was, and every record still on the trial it was written for
    assert [(t.number, t.value, sorted(t.params)) for t in study.trials] == [
        (i, float(i), ["n", "x"]) for i in range(3)
    ]
    assert f"line {second + 2} (a copy of an earlier create-trial line" in caplog.text
    assert lines(journal) == records and list(tmp_path.glob("optuna.journal.bak-*"))


def test_the_same_values_queued_twice_are_two_trials(tmp_path):
    # one process queueing the same values twice writes the same line twice (a queued trial
    # has no start time): both are trials, as a fused group's shared values are
    study = optuna.create_study(study_name="s", storage=open_sweep_storage(tmp_path))
    study.enqueue_trial({"x": 0.5})
    study.enqueue_trial({"x": 0.5})
    journal = tmp_path / "optuna.journal"
    creates = [lines(journal)[i] for i in op_lines(journal, 4)]
    assert len(creates) == 2 and creates[0] == creates[1]
    again = load_sweep_study(tmp_path, "s")
    assert [t.state for t in again.trials] == [TrialState.WAITING] * 2


@pytest.mark.parametrize("moved", ["a parameter", "the search space"])
def test_lines_out_of_order_are_refused_not_dropped_in_silence(tmp_path, moved):
    journal = small_journal(tmp_path)
    records = lines(journal)
    # a record moved before the line that creates what it is about: Optuna's replay alone
    # would drop it without a word (a trial without its x, a study without its space)
    if moved == "a parameter":
        line, before = op_lines(journal, 5)[2], op_lines(journal, 4)[1]
    else:
        line, before = op_lines(journal, 2)[0], op_lines(journal, 0)[0]
    swapped = [*records]
    swapped.insert(before, swapped.pop(line))
    journal.write_bytes(b"\n".join(swapped) + b"\n")

    with pytest.raises(Exception, match="out of order") as refused:
        load_sweep_study(tmp_path, "s")
    assert f"line {before + 1} refers to" in str(refused.value)
    assert "hpsweep rebuild" in str(refused.value)
    assert lines(journal) == swapped  # left as it was, for the user to decide


def test_a_record_of_an_unknown_op_code_is_refused_not_blamed_on_a_crash(tmp_path):
    journal = small_journal(tmp_path)
    with open(journal, "ab") as f:
        f.write(b'{"op_code":42,"worker_id":"newer-optuna","study_id":0}\n')
    with pytest.raises(Exception, match="op code 42, which this Optuna does not know"):
        load_sweep_study(tmp_path, "s")


# -- the retry policy -------------------------------------------------------------------------


def test_retries_outlast_an_outage_of_a_minute(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(_storage.time, "sleep", lambda s: clock.__setitem__(0, clock[0] + s))

    def call_during_outage():
        if clock[0] < 60:
            raise ConnectionRefusedError("connection refused")
        return "answered"

    assert _storage.with_retries(call_during_outage, "asking", "db") == "answered"
    assert sum(_storage.RETRY_DELAYS) >= 120 and max(_storage.RETRY_DELAYS) <= 16


def test_a_storage_answer_is_raised_at_once_not_retried(tmp_path, monkeypatch):
    monkeypatch.setattr(_storage.time, "sleep", lambda s: pytest.fail("retried an answer"))
    storage = _storage.open_storage(f"sqlite:///{tmp_path}/s.db", tmp_path, 10, 60)
    with pytest.raises(KeyError):
        optuna.load_study(study_name="missing", storage=storage)
    study = optuna.create_study(study_name="s", storage=storage)
    trial = study.ask()
    study.tell(trial, 1.0)
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)


@pytest.mark.parametrize(
    ("error", "outage"),
    [
        (ConnectionResetError("server closed the connection unexpectedly"), True),
        (OSError(errno.EIO, "Input/output error"), True),  # a network disk's hiccup
        (OSError(errno.ENOSPC, "No space left on device"), False),  # waiting frees nothing
        (PermissionError(errno.EACCES, "Permission denied"), False),
        (OSError(errno.EROFS, "Read-only file system"), False),
    ],
)
def test_what_is_waited_for_and_what_is_said_at_once(error, outage):
    assert (_storage.outage_cause(error) is not None) == outage
    assert _storage.environment_cause(RuntimeError("x").with_traceback(None)) is None
    chained = RuntimeError("writing the checkpoint failed")
    chained.__cause__ = error
    assert (_storage.environment_cause(chained) is error) == (not outage)


@pytest.mark.parametrize(
    "refusal",
    [
        'connection failed: FATAL:  database "nope" does not exist',
        'connection failed: FATAL:  role "nobody" does not exist',
        'connection failed: FATAL:  password authentication failed for user "u"',
        'FATAL:  no pg_hba.conf entry for host "10.0.0.9", user "u", database "d"',
    ],
)
def test_a_servers_refusal_is_said_at_once_and_its_restarts_waited_for(refusal):
    # a connection error carries no SQLSTATE: the server's words tell a refusal from a restart
    class Refused(Exception):
        sqlstate = None

    refused = sqlalchemy.exc.OperationalError("connect", {}, Refused(refusal))
    assert _storage.outage_cause(refused) is None
    starting = Refused("connection failed: FATAL:  the database system is starting up")
    assert _storage.outage_cause(sqlalchemy.exc.OperationalError("connect", {}, starting))


def test_sqlite_waits_for_a_lock_and_not_for_a_file_it_cannot_open(tmp_path):
    import sqlite3

    locked = sqlite3.OperationalError("database is locked")
    locked.sqlite_errorname = "SQLITE_BUSY"
    cannot_open = sqlite3.OperationalError("unable to open database file")
    cannot_open.sqlite_errorname = "SQLITE_CANTOPEN"
    assert _storage.outage_cause(sqlalchemy.exc.OperationalError("x", {}, locked))
    assert _storage.outage_cause(sqlalchemy.exc.OperationalError("x", {}, cannot_open)) is None
    with pytest.raises(FileNotFoundError, match=r"the folder .*nowhere of the SQLite file"):
        _storage.open_storage(f"sqlite:///{tmp_path}/nowhere/s.db", tmp_path, 10, 60)


@pytest.mark.parametrize("refused", ["database", "role"])
def test_a_database_that_refuses_stops_the_sweep_at_once_in_one_line(
    postgres_url, tmp_path, refused
):
    url = sqlalchemy.engine.make_url(postgres_url)
    if refused == "database":
        url = url.set(database="hpsweep_no_such_database")
    else:
        url = url.set(username="hpsweep_no_such_role")
    proc = run_cli(*SWEEP, f"hydra.sweeper.storage={url.render_as_string()}", cwd=tmp_path)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output
    assert "retrying" not in output and "Traceback" not in output  # said, not waited out
    [line] = [line for line in output.splitlines() if "cannot open study" in line]
    assert f'"hpsweep_no_such_{refused}" does not exist' in line
    assert not (tmp_path / "multirun").exists()


def test_every_storage_call_goes_through_the_retry_policy():
    # A storage method that Optuna adds (or the sweep starts to use) must not bypass it.
    no_io = {"remove_session", "check_trial_is_updatable"}
    public = {n for n in dir(BaseStorage) if not n.startswith("_") and n not in no_io}
    calls = public | {"record_heartbeat", "_get_stale_trial_ids", "_create_new_trial"}
    calls |= {"_set_trial_param", "_get_trials", "_get_best_trial_id"}  # what the cache calls
    own_retries = {"set_trial_state_values", "_create_new_trial"}
    unretried = [
        n
        for n in sorted(calls)
        if n not in own_retries
        and not hasattr(getattr(_storage.RetryingRDBStorage, n), "__wrapped__")
    ]
    assert unretried == []
    assert own_retries <= set(vars(_storage.RetryingRDBStorage))


def answer_lost_once(monkeypatch, name):
    """RDBStorage.`name` does its work, then fails once as a connection lost before the reply."""
    from optuna.storages import RDBStorage

    real, calls = getattr(RDBStorage, name), []

    def call(self, *args, **kwargs):
        result = real(self, *args, **kwargs)
        calls.append(result)
        if len(calls) == 1:
            lost = ConnectionResetError("server closed the connection unexpectedly")
            raise sqlalchemy.exc.OperationalError("COMMIT", {}, lost)
        return result

    monkeypatch.setattr(RDBStorage, name, call)
    monkeypatch.setenv(WAIT_SCALE, "0.01")
    return calls


def test_a_queued_trial_whose_reply_was_lost_is_queued_once(tmp_path, monkeypatch):
    storage = _storage.open_storage(f"sqlite:///{tmp_path}/s.db", tmp_path, 10, 60)
    study = optuna.create_study(study_name="s", storage=storage)
    calls = answer_lost_once(monkeypatch, "_create_new_trial")
    study.enqueue_trial({"x": 1.0})
    assert len(calls) == 1  # the second try found the first one's trial
    assert [t.state for t in study.trials] == [TrialState.WAITING]
    assert study.ask().suggest_float("x", 0, 2) == 1.0
    assert len(study.trials) == 1


def test_a_queued_trial_taken_with_its_reply_lost_runs_and_only_once(tmp_path, monkeypatch):
    storage = _storage.open_storage(f"sqlite:///{tmp_path}/s.db", tmp_path, 10, 60)
    study = optuna.create_study(study_name="s", storage=storage)
    study.enqueue_trial({"x": 1.0})
    calls = answer_lost_once(monkeypatch, "set_trial_state_values")
    trial = study.ask()  # the first try took it off the queue; the second finds it taken
    assert calls[0] is True and trial.number == 0
    assert trial.suggest_float("x", 0, 2) == 1.0
    assert [t.state for t in study.trials] == [TrialState.RUNNING]


def test_a_call_that_gave_up_is_not_retried_again_around_it(monkeypatch):
    # Optuna's storage calls nest (get_all_trials calls _get_trials, both retried): the waits
    # must not multiply.
    sleeps = []
    monkeypatch.setattr(_storage.time, "sleep", sleeps.append)

    def down():
        raise ConnectionRefusedError("connection refused")

    with pytest.raises(_storage.StorageUnavailable, match="127 s"):
        _storage.with_retries(lambda: _storage.with_retries(down, "in", "db"), "out", "db")
    assert sleeps == list(_storage.RETRY_DELAYS)


# -- PostgreSQL through a proxy the test cuts -------------------------------------------------


class Proxy:
    """A TCP forwarder to the database. `cut()` refuses new connections and drops the live
    ones; `restore()` listens again on the same port."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.listener: socket.socket | None = None
        self.links: set[socket.socket] = set()
        self.lock = threading.Lock()

    def restore(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", self.port))  # SO_REUSEADDR
        threading.Thread(target=self.accept, args=(self.listener,), daemon=True).start()

    def cut(self) -> None:
        listener, self.listener = self.listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
            listener.close()
        self.drop()

    def drop(self) -> None:
        with self.lock:
            links, self.links = self.links, set()
        for link in links:
            close(link)

    def accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
                server = socket.create_connection(self.target)
            except OSError:
                if self.listener is not listener:
                    return
                continue
            with self.lock:
                self.links |= {client, server}
            if self.listener is not listener:  # cut while this one was being connected
                self.drop()
                return
            self.forward(client, server)

    def forward(self, client: socket.socket, server: socket.socket) -> None:
        """Carry a connection's bytes both ways, in threads of their own."""
        for source, sink in ((client, server), (server, client)):
            threading.Thread(target=pump, args=(source, sink), daemon=True).start()


def pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    close(source)
    close(sink)


def close(link: socket.socket) -> None:
    with contextlib.suppress(OSError):
        link.shutdown(socket.SHUT_RDWR)
    link.close()


@pytest.fixture
def proxy(postgres_url):
    url = sqlalchemy.engine.make_url(postgres_url)
    proxy = Proxy(url.host or "127.0.0.1", url.port or 5432)
    proxy.restore()
    proxy.url = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    yield proxy
    proxy.cut()


@pytest.fixture
def study_name(postgres_url):
    """A study name of this test's own, its study deleted afterwards."""
    name = f"faults_{uuid.uuid4().hex[:8]}"
    yield name
    with contextlib.suppress(KeyError):
        optuna.delete_study(study_name=name, storage=postgres_url)


def test_pooled_connection_the_server_dropped_is_replaced_unnoticed(proxy, study_name, caplog):
    storage = _storage.open_storage(proxy.url, Path("."), 10, 60)
    study = optuna.create_study(study_name=study_name, storage=storage)
    proxy.drop()  # a restart while the connection idled in the pool, say
    with caplog.at_level(logging.WARNING):
        study.ask()
    assert "storage error" not in caplog.text
    assert len(study.trials) == 1


def test_storage_call_waits_out_an_outage(proxy, study_name, caplog, monkeypatch):
    storage = _storage.open_storage(proxy.url, Path("."), 10, 60)
    study = optuna.create_study(study_name=study_name, storage=storage)
    monkeypatch.setenv(WAIT_SCALE, "0.1")  # waits of 0.1, 0.2, 0.4 s: the same tries, sooner
    proxy.cut()
    threading.Timer(0.5, proxy.restore).start()
    began = time.monotonic()
    with caplog.at_level(logging.WARNING):
        study.tell(study.ask(), 1.0)
    assert time.monotonic() - began >= 0.5
    assert "retrying in 0.1 s" in caplog.text and "retrying in 0.2 s" in caplog.text
    assert [(t.state, t.value) for t in study.trials] == [(TrialState.COMPLETE, 1.0)]


# A sweep that holds one storage call at a gate until the test has cut the storage: the first
# process to reach the call waits for the cut, then makes the call, which meets the outage.
GATED_TRAIN = """
import os, time
from pathlib import Path

import optuna

from hydra_plugins.hpsweep_sweeper import _sweep

gate = Path(os.environ["GATE_DIR"])


def wait_for_the_outage():
    try:
        os.close(os.open(gate / "reached", os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return
    while not (gate / "outage").exists():
        time.sleep(0.01)


def held(owner, name, at_call):
    real, calls = getattr(owner, name), 0

    def call(*args, **kwargs):
        nonlocal calls
        calls += 1
        if calls == at_call:
            wait_for_the_outage()
        return real(*args, **kwargs)

    setattr(owner, name, call)


MOMENTS = {
    "ask": (optuna.Study, "ask", 2),  # a worker's second trial
    "report": (optuna.Trial, "report", 2),  # its trial's second epoch
    "tell": (optuna.Study, "tell", 1),
    "final report": (_sweep, "write_report", 1),
}
held(*MOMENTS[os.environ["GATE_AT"]])

from hpsweep.train import main

main()
"""


def sweep_through_an_outage(tmp_path, proxy, name, moment, seconds, delay_scale=1.0):
    gate = tmp_path / "gate"
    gate.mkdir()
    (tmp_path / "gated_train.py").write_text(GATED_TRAIN)
    args = [
        sys.executable,
        "gated_train.py",
        "-m",
        "sweep=mlp",
        "epochs=3",
        "num_threads=1",
        "hydra/sweeper/pruner=none",
        *FAST,
        f"hydra.sweeper.storage={proxy.url}",
        f"hydra.sweeper.study_name={name}",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.n_jobs=2",
    ]
    env = {**os.environ, "GATE_DIR": str(gate), "GATE_AT": moment}
    env[WAIT_SCALE] = str(delay_scale)
    with open(tmp_path / "out.log", "w") as out:
        sweep = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=out, stderr=out)
        try:
            deadline = time.monotonic() + 300
            while not (gate / "reached").exists():
                assert sweep.poll() is None and time.monotonic() < deadline, moment
                time.sleep(0.01)
            proxy.cut()
            (gate / "outage").touch()
            time.sleep(seconds)
            proxy.restore()
            sweep.wait(timeout=600)
        finally:
            if sweep.poll() is None:
                sweep.kill()
    return sweep.returncode, (tmp_path / "out.log").read_text()


def check_survived(returncode, log, postgres_url, tmp_path, name):
    assert returncode == 0, log
    assert "Traceback" not in log
    assert "retrying in" in log  # the outage was met
    report = yaml.safe_load(
        (tmp_path / "multirun" / name / "optimization_results.yaml").read_text()
    )
    study = optuna.load_study(study_name=name, storage=postgres_url)
    assert finished(study) == 4, [t.state for t in study.trials]
    assert report["states"]["COMPLETE"] == 4


@pytest.mark.slow
def test_sweep_survives_an_outage_in_its_final_report(tmp_path, proxy, study_name, postgres_url):
    # The main process's pooled connection is dropped while the workers run; its report
    # used to die on it.
    returncode, log = sweep_through_an_outage(tmp_path, proxy, study_name, "final report", 4)
    check_survived(returncode, log, postgres_url, tmp_path, study_name)


@pytest.mark.slow
@pytest.mark.parametrize("moment", ["ask", "report", "tell", "final report"])
def test_sweep_survives_an_outage_five_tries_long(
    tmp_path, proxy, study_name, postgres_url, moment
):
    # A tenth of each wait and a tenth of the outage: the tries of a 30 s outage at full
    # scale (1 + 2 + 4 + 8 + 16 s), in 3 s
    began = time.monotonic()
    returncode, log = sweep_through_an_outage(tmp_path, proxy, study_name, moment, 3, 0.1)
    check_survived(returncode, log, postgres_url, tmp_path, study_name)
    assert time.monotonic() - began > 3
    assert "retrying in 1.6 s" in log, log  # the fifth wait: the outage outlasted four


# -- a reply lost: the commit went through, its answer did not ----------------------------------


class ReplyDropper(Proxy):
    """The proxy, which lets the COMMIT of the `nth` transaction that created a trial reach
    the server, then drops the connection before the server's answer gets back: the trial is
    stored, and the client sees an outage."""

    def __init__(self, host: str, port: int, nth: int) -> None:
        super().__init__(host, port)
        self.creates = 0
        self.nth = nth
        self.dropped = threading.Event()

    def forward(self, client: socket.socket, server: socket.socket) -> None:
        muted = threading.Event()  # set: the server's answers go nowhere
        threading.Thread(target=self.watch, args=(client, server, muted), daemon=True).start()
        threading.Thread(target=self.answer, args=(server, client, muted), daemon=True).start()

    def watch(self, client: socket.socket, server: socket.socket, muted: threading.Event) -> None:
        creating = False
        try:
            while data := client.recv(65536):
                creating |= b"INSERT INTO trials " in data
                commit = creating and b"COMMIT" in data
                if commit:
                    creating = False
                    self.creates += 1
                if commit and self.creates == self.nth and not self.dropped.is_set():
                    muted.set()
                    server.sendall(data)
                    time.sleep(0.5)  # the server commits; its answer is swallowed
                    self.dropped.set()
                    break
                server.sendall(data)
        except OSError:
            pass
        close(client)
        close(server)

    def answer(self, server: socket.socket, client: socket.socket, muted: threading.Event) -> None:
        try:
            while data := server.recv(65536):
                if not muted.is_set():
                    client.sendall(data)
        except OSError:
            pass
        close(server)
        close(client)


@pytest.mark.slow
def test_a_trial_whose_create_reply_was_lost_takes_no_slot(postgres_url, study_name, tmp_path):
    url = sqlalchemy.engine.make_url(postgres_url)
    dropper = ReplyDropper(url.host or "127.0.0.1", url.port or 5432, nth=2)
    dropper.restore()
    proxied = url.set(host="127.0.0.1", port=dropper.port).render_as_string(hide_password=False)
    try:
        proc = run_cli(
            *SWEEP,
            "hydra/sweeper/pruner=none",
            f"hydra.sweeper.storage={proxied}",
            f"hydra.sweeper.study_name={study_name}",
            "hydra.sweeper.n_trials=3",
            cwd=tmp_path,
            env={**os.environ, WAIT_SCALE: "0.1"},
        )
    finally:
        dropper.cut()
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log
    assert dropper.dropped.is_set()  # and Optuna's own retry of the create made it again
    study = optuna.load_study(study_name=study_name, storage=postgres_url)
    assert finished(study) == 3, [t.state for t in study.trials]
    assert TrialState.RUNNING not in {t.state for t in study.trials}
    # the create stored before the reply was lost: failed as never started, no slot taken
    [lost] = [t for t in study.trials if t.state == TrialState.FAIL]
    assert lost.user_attrs["never_started"] is True and lost.params == {}
    assert f"trial {lost.number} never started" in log
    assert sorted(p.name for p in (tmp_path / "multirun" / study_name).glob("trial_*")) == [
        f"trial_{t.number:04d}" for t in study.trials if t.state == TrialState.COMPLETE
    ]
