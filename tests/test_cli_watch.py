"""`hpsweep compare --watch`: the table again when a running sweep's trial files change, read only
then; a sweep not started yet is waited for; Ctrl-C ends it with exit 0. The watch runs in this
process with its sleep replaced: each tick returns at once, may change the sweep, and the last one
is a Ctrl-C."""

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from hpsweep.cli import _commands as cli
from hpsweep.cli import _compare as tables
from hpsweep.record import TrialFileError
from hpsweep.results import load_trials
from tests.conftest import FAST, run_cli

CLEAR = "\x1b[H\x1b[2J"


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """A 3-trial sweep of one epoch a trial, run once; each test watches a copy of it."""
    root = tmp_path_factory.mktemp("watch")
    proc = run_cli("-m", "sweep=mlp", "hydra.sweeper.n_trials=3", "epochs=1", *FAST, cwd=root)
    assert proc.returncode == 0, proc.stderr
    return root / "multirun" / "mlp"


@pytest.fixture
def copy(sweep, tmp_path) -> Path:
    target = tmp_path / "multirun" / "mlp"
    shutil.copytree(sweep, target)
    return target


def watch(monkeypatch, argv: list[str], ticks: int, changes=None) -> tuple[int, int, list]:
    """main(argv) with a sleep that returns at once, runs changes[n] after the n-th sleep and is
    a Ctrl-C at the `ticks`-th; (exit code, load_trials calls, the seconds each sleep was for)."""
    loads, sleeps = [], []
    real = tables.load_trials
    monkeypatch.setattr(tables, "load_trials", lambda *a, **k: loads.append(a) or real(*a, **k))

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == ticks:
            raise KeyboardInterrupt
        (changes or {}).get(len(sleeps), lambda: None)()

    monkeypatch.setattr(tables, "sleep", sleep)
    return cli.main(argv), len(loads), sleeps


def frames(out: str) -> list[tuple[str, str]]:
    """The (header, table) pairs of piped output, in order."""
    parts = re.split(r"^-- (.*)\n", out, flags=re.MULTILINE)
    assert parts[0] == "", out
    return list(zip(parts[1::2], parts[2::2], strict=True))


def compare(capsys, *args: str) -> str:
    assert cli.main(["compare", *args]) == 0
    return capsys.readouterr().out


def touch(path: Path) -> None:
    """A new mtime, the same content: what a rewrite with nothing new looks like."""
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))


@pytest.mark.parametrize(("option", "seconds"), [(["--watch", "0.05"], 0.05), (["--watch"], 5.0)])
def test_an_unchanged_sweep_is_read_once_and_shown_once(monkeypatch, capsys, copy, option, seconds):
    expected, states = compare(capsys, str(copy)), tables.summary(load_trials(copy))
    code, loads, sleeps = watch(monkeypatch, ["compare", str(copy), *option], ticks=6)
    out, err = capsys.readouterr()
    assert (code, loads, sleeps, err) == (0, 1, [seconds] * 6, "")
    [(header, table)] = frames(out)
    assert re.fullmatch(rf"{re.escape(f'{copy}')} at \d\d:\d\d:\d\d: ", header[: -len(states)])
    assert header.endswith(states)
    assert table == expected and CLEAR not in out


WATCHED = ["result.json", "metrics.csv", ".hydra/overrides.yaml"]


@pytest.mark.parametrize("name", [*WATCHED, "optuna.journal"])
def test_a_touched_file_is_read_again_but_an_equal_table_not_shown_again(
    monkeypatch, capsys, copy, name
):
    path = copy / name if name == "optuna.journal" else copy / "trial_0001" / name
    code, loads, _ = watch(
        monkeypatch, ["compare", str(copy), "--watch", "1"], 6, {3: lambda: touch(path)}
    )
    out, err = capsys.readouterr()
    assert (code, loads, err) == (0, 2, "")
    assert len(frames(out)) == 1


def test_a_new_trial_is_shown_once_piped_without_escape_codes(monkeypatch, capsys, copy, tmp_path):
    (copy / "optuna.journal").unlink()  # the trial dirs alone: a study knows trial 2 already
    shutil.move(copy / "trial_0002", tmp_path / "trial_0002")
    two = tables.summary(load_trials(copy))
    come_back = {2: lambda: shutil.copytree(tmp_path / "trial_0002", copy / "trial_0002")}
    code, loads, _ = watch(monkeypatch, ["compare", str(copy), "--watch", "1"], 6, come_back)
    out, err = capsys.readouterr()
    assert (code, loads, err) == (0, 2, "")
    assert "\x1b" not in out
    (before, old), (after, new) = frames(out)
    assert before.endswith(f": {two}") and two.startswith("2 trials: ")
    assert after.endswith(f": {tables.summary(load_trials(copy))}") and " 3 trials: " in after
    numbers = [[line.split()[0] for line in t.splitlines()[1:]] for t in (old, new)]
    assert sorted(numbers[0]) == ["0", "1"] and sorted(numbers[1]) == ["0", "1", "2"]
    assert new == compare(capsys, str(copy))


def test_on_a_terminal_each_change_redraws_in_place(monkeypatch, capsys, copy):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    result = copy / "trial_0000" / "result.json"
    states = tables.summary(load_trials(copy))
    better = {
        2: lambda: result.write_text(result.read_text().replace('"test_acc": 0.', '"test_acc": 1.'))
    }
    code, loads, _ = watch(monkeypatch, ["compare", str(copy), "--watch", "1"], 5, better)
    out = capsys.readouterr().out
    assert (code, loads) == (0, 2)
    screens = out.split(CLEAR)
    assert screens[0] == "" and len(screens) == 3
    for screen in screens[1:]:
        header = screen.splitlines()[0]
        assert re.fullmatch(rf"{re.escape(f'{copy}')} at \d\d:\d\d:\d\d: .*", header)
        assert header.endswith(f": {states} (Ctrl-C to stop)")
    assert screens[2].splitlines()[1:] == compare(capsys, str(copy)).splitlines()
    assert screens[1] != screens[2]


def test_a_damaged_result_mid_watch_is_shown_and_the_watch_goes_on(monkeypatch, capsys, copy):
    result = copy / "trial_0001" / "result.json"
    whole = result.read_text()
    changes = {
        2: lambda: result.write_text(whole[: len(whole) // 2]),
        4: lambda: result.write_text(whole),
    }
    code, loads, sleeps = watch(monkeypatch, ["compare", str(copy), "--watch", "1"], 7, changes)
    out, err = capsys.readouterr()
    assert (code, loads, len(sleeps), err) == (0, 3, 7, "")
    (_, first), (_, broken), (_, mended) = frames(out)
    assert "problem" in broken.splitlines()[0] and "result.json" in broken
    assert "problem" not in first and mended == first


def test_a_file_changing_as_it_is_read_is_read_again_next_tick(monkeypatch, capsys, copy):
    real, calls = tables.load_trials, []

    def load_trials_in_a_race(sweep):  # what load_trials raises when a file changed under it
        calls.append(sweep)
        if len(calls) == 1:
            raise TrialFileError(sweep / "trial_0001" / "result.json", "cut short")
        return real(sweep)

    monkeypatch.setattr(tables, "load_trials", load_trials_in_a_race)
    code, _, sleeps = watch(monkeypatch, ["compare", str(copy), "--watch", "1"], 4)
    out, err = capsys.readouterr()
    assert (code, len(calls), len(sleeps), err) == (0, 2, 4, "")
    [(_, table)] = frames(out)
    assert table == compare(capsys, str(copy))


OPTIONS = [
    ["--top", "1"],
    ["--sort=-test_acc", "--columns", "number,test_acc,params_*"],
    ["--state", "complete", "--format", "markdown"],
    ["--state", "pruned"],  # an empty selection, said in words
]


@pytest.mark.parametrize("options", OPTIONS, ids=" ".join)
def test_options_apply_as_without_watch(monkeypatch, capsys, copy, options):
    expected = compare(capsys, str(copy), *options)
    code, _, _ = watch(monkeypatch, ["compare", str(copy), *options, "--watch", "1"], 2)
    [(_, table)] = frames(capsys.readouterr().out)
    assert code == 0 and table == expected


@pytest.mark.parametrize("where", ["not made yet", "empty", "no SWEEP_DIR"])
def test_a_sweep_without_trials_yet_is_waited_for(monkeypatch, capsys, sweep, tmp_path, where):
    monkeypatch.chdir(tmp_path)
    target = tmp_path / "multirun" / "mlp"
    if where == "empty":
        target.mkdir(parents=True)
    argv = ["compare", "--watch", "1"] + ([] if where == "no SWEEP_DIR" else [str(target)])
    arrives = {3: lambda: shutil.copytree(sweep, target, dirs_exist_ok=True)}
    code, loads, _ = watch(monkeypatch, argv, 6, arrives)
    out, err = capsys.readouterr()
    assert (code, loads, err) == (0, 1, "")
    waited = target.parent.absolute() if where == "no SWEEP_DIR" else target
    waiting, rest = out.split("\n", 1)
    assert waiting == f"waiting for trials in {waited}"
    [(header, table)] = frames(rest)
    assert header.startswith(f"{Path('multirun/mlp') if where == 'no SWEEP_DIR' else target} at ")
    assert table == compare(capsys, str(target))


@pytest.mark.parametrize("what", ["a file", "a trial dir", "a folder of sweeps"])
def test_what_never_becomes_a_sweep_is_refused_at_once(monkeypatch, capsys, copy, what):
    path = {
        "a file": copy / "optuna.journal",
        "a trial dir": copy / "trial_0001",
        "a folder of sweeps": copy.parent,
    }[what]
    code, loads, sleeps = watch(monkeypatch, ["compare", str(path), "--watch", "1"], 3)
    out, err = capsys.readouterr()
    assert (code, loads, sleeps, out) == (2, 0, [], "")
    assert len(err.splitlines()) == 1 and err.startswith(f"hpsweep compare: {path} ")


REFUSED = [
    (["--watch", "0"], "argument --watch: must be a number of seconds > 0, not '0'"),
    (["--watch", "-1"], "argument --watch: must be a number of seconds > 0, not '-1'"),
    (["--watch", "nan"], "argument --watch: must be a number of seconds > 0, not 'nan'"),
    (["--watch", "--format", "json"], "--watch redraws a table for reading, not a stream of json"),
    (["--format", "csv", "--watch", "2"], "use it with --format table or markdown"),
]


@pytest.mark.parametrize(("options", "message"), REFUSED, ids=[" ".join(o) for o, _ in REFUSED])
def test_a_wrong_watch_is_refused_in_one_line(monkeypatch, capsys, copy, options, message):
    try:
        code, _, sleeps = watch(monkeypatch, ["compare", str(copy), *options], 3)
    except SystemExit as e:  # argparse's refusal
        code, sleeps = e.code, []
    out, err = capsys.readouterr()
    assert (code, sleeps, out) == (2, [], "")
    assert len(err.splitlines()) == 1 and message in err, err


def test_ctrl_c_ends_a_real_watch_with_exit_0_and_no_traceback(copy):
    proc = subprocess.Popen(
        [sys.executable, "-m", "hpsweep.cli", "compare", str(copy), "--watch", "0.1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # a shell's background job ignores SIGINT, and so would the watch it starts
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    header = proc.stdout.readline()
    assert header.startswith(f"-- {copy} at "), (header, proc.stderr.read())
    rows = [proc.stdout.readline() for _ in range(len(load_trials(copy)) + 1)]  # and column names
    assert all(row.endswith("\n") for row in rows), rows
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 0
    assert (proc.stdout.read(), proc.stderr.read()) == ("", "")  # no traceback, no other table
