"""A user having a bad day: each input below is refused with a message naming the key or file,
a non-zero exit and no traceback, and every file already on disk stays byte-identical.

All cases run in a copy of one workspace holding a finished single run (runs/a) and a finished
2-trial sweep (multirun/mlp), so a refusal that touched either would show.
"""

import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import pytest

from tests.conftest import FAST, TRAIN_CMD, run_cli
from tests.warm_start import run_command

SWEEP = ("-m", "sweep=mlp", "epochs=1", *FAST)  # the workspace's sweep, as it was started
HPSWEEP = [sys.executable, "-m", "hpsweep.cli"]


class Case(NamedTuple):
    id: str
    command: list[str]
    expected: tuple[str, ...]  # each must appear in the output
    damage: Callable[[Path], None] | None = None  # applied to the workspace copy first


def train(*args: str) -> list[str]:
    return [*TRAIN_CMD, "hydra.run.dir=runs/new", *FAST, *args]


def resume(*args: str) -> list[str]:
    return [*TRAIN_CMD, "hydra.run.dir=runs/a", *FAST, *args]


def sweep(*args: str) -> list[str]:
    return [*TRAIN_CMD, *SWEEP, *args]


def hpsweep(*args: str) -> list[str]:
    return [*HPSWEEP, *args]


OWN_CODE = """\
import torch
from hpsweep.data import Split, Splits

def a_list():
    return [1, 2, 3]

def a_dict():
    return {"train": torch.zeros(3, 2)}

def empty_val():
    x, y = torch.randn(20, 4), torch.arange(20) % 3
    return Splits(Split(x, y), Split(x[:0], y[:0]), Split(x, y))
"""


def own_files(root: Path) -> None:
    """A user's table and module in the folder the command starts in."""
    rows = ["a,b,kind,price"] + [f"{i},{i % 7},{'xy'[i % 2]},{i * 1.5}" for i in range(40)]
    (root / "t.csv").write_text("\n".join(rows) + "\n")
    (root / "gaps.csv").write_text("a,b,price\n1,2,3.0\n4,,6.0\n7,8,9.0\n" * 5)
    (root / "mycode.py").write_text(OWN_CODE)


def table(*args: str) -> list[str]:
    return [*TRAIN_CMD, "hydra.run.dir=runs/new", "data=table", "data.target=price", *args]


def own_data(target: str) -> list[str]:
    return [*TRAIN_CMD, "hydra.run.dir=runs/new", "~data", f"+data._target_=mycode.{target}"]


def break_checkpoints(root: Path) -> None:
    last = root / "runs" / "a" / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])
    (root / "runs" / "a" / "checkpoints" / "best.pt").unlink()


CASES = [
    # -- the trial job: values, types, names
    Case("lr negative", train("optimizer.lr=-1"), ("optimizer.lr=-1", "must be > 0")),
    Case("lr inf", train("optimizer.lr=inf"), ("optimizer.lr=inf", "finite")),
    Case("lr nan", train("optimizer.lr=nan"), ("optimizer.lr=nan", "finite")),
    Case("lr text", train("optimizer.lr=fast"), ("optimizer.lr='fast'", "a number")),
    Case("batch size 0", train("batch_size=0"), ("batch_size=0", ">= 1")),
    Case("batch size float", train("batch_size=1.5"), ("batch_size", "1.5")),
    Case("epochs negative", train("epochs=-3"), ("epochs=-3", ">= 1")),
    Case("epochs text", train("epochs=three"), ("epochs", "three")),
    Case("typo", train("epochz=3"), ("epochz",)),
    Case("typo with +", train("+epochz=3"), ("epochz", "unknown key")),
    Case("val size too big", train("data.val_size=10000"), ("data.val_size=10000",)),
    Case("val size negative", train("data.val_size=-1"), ("data.val_size=-1",)),
    Case("unknown task", train("data.task=parity"), ("data.task='parity'", "multiclass, lt3")),
    Case("unknown dataset", train("data=imagenet"), ("data/imagenet", "mnist")),
    Case("dataset missing", train("data=mnist", "data.root=/nowhere"), ("MNIST not found",)),
    Case("unknown model", train("model=transformer"), ("model/transformer", "cnn", "mlp")),
    Case("hidden size 0", train("model.hidden_sizes=0"), ("model.hidden_sizes",)),
    Case("dropout above 1", train("model.dropout=1.5"), ("model.dropout",)),
    Case("activation", train("model.activation=swish"), ("model.activation='swish'", "relu")),
    Case("unknown optimizer", train("optimizer=lbfgs"), ("optimizer/lbfgs", "sgd")),
    Case("momentum", train("optimizer=sgd", "optimizer.momentum=-0.5"), ("momentum=-0.5",)),
    Case("adam betas", train("optimizer.betas=[2,0.999]"), ("optimizer", "beta")),
    Case("unknown scheduler", train("scheduler=nope"), ("scheduler/nope", "cosine")),
    Case("device", train("device=tpu"), ("device='tpu'", "auto, cpu, cuda")),
    Case("no such cuda", train("device=cuda:99"), ("device='cuda:99'",)),
    Case("threads 0", train("num_threads=0"), ("num_threads=0", ">= 1")),
    Case("clip negative", train("grad_clip_norm=-1"), ("grad_clip_norm=-1", "> 0")),
    Case("clip inf", train("grad_clip_norm=inf"), ("grad_clip_norm=inf", "finite")),
    Case("checkpoint every 0", train("checkpoint_every=0"), ("checkpoint_every=0",)),
    Case("overfit negative", train("overfit_batches=-1"), ("overfit_batches=-1",)),
    Case("test set objective", train("objective=test_acc"), ("objective='test_acc'", "val_ or")),
    # -- your own data: tables, data targets, a model of the wrong width
    Case(
        "table column",
        table("data.path=t.csv", "data.target=cost"),
        ("data.target='cost'", "no such column", "a, b, kind, price"),
        damage=own_files,
    ),
    Case(
        "table text target",
        table("data.path=t.csv", "data.target=kind", "data.task=regression"),
        ("data.target='kind'", "a regression target must be numeric"),
        damage=own_files,
    ),
    Case(
        "table gaps",
        table("data.path=gaps.csv"),
        ("column 'b'", "empty cells"),
        damage=own_files,
    ),
    Case(
        "table empty split",
        table("data.path=t.csv", "data.val_size=0.001"),
        ("val split has no rows",),
        damage=own_files,
    ),
    Case("table file", table("data.path=none.csv"), ("data.path='none.csv'", "no such file")),
    Case(
        "3 classes, 10 logits",
        table("data.path=t.csv", "data.target=b", "+model.num_outputs=10"),
        ("model=", "(2, 10)", "multiclass, 7 classes", "needs (2, 7)"),
        damage=own_files,
    ),
    Case(
        "regression objective",
        table("data.path=t.csv", "objective=val_acc"),
        ("objective='val_acc'", "regression", "val_mse"),
        damage=own_files,
    ),
    Case(
        "data returns a list",
        own_data("a_list"),
        ("data._target_='mycode.a_list'", "returned a list", "hpsweep.data.Splits"),
        damage=own_files,
    ),
    Case(
        "data returns a dict",
        own_data("a_dict"),
        ("data._target_='mycode.a_dict'", "returned a dict", "hpsweep.data.Splits"),
        damage=own_files,
    ),
    Case("data empty split", own_data("empty_val"), ("its val split is empty",), damage=own_files),
    Case("seed text", train("seed=abc"), ("seed", "abc")),
    # -- the trial job on an existing trial dir
    Case("resume other lr", resume("optimizer.lr=0.01"), ("another config", "optimizer.lr")),
    Case("resume other model", resume("model=cnn"), ("another config", "model")),
    Case(
        "damaged checkpoint",
        resume("epochs=2"),
        ("last.pt is unreadable", "no best.pt"),
        damage=break_checkpoints,
    ),
    # -- the sweeper: settings, names, spaces, storage
    Case("n_trials 0", sweep("hydra.sweeper.n_trials=0"), ("hydra.sweeper.n_trials=0",)),
    Case("n_jobs 0", sweep("hydra.sweeper.n_jobs=0"), ("hydra.sweeper.n_jobs=0",)),
    Case("timeout negative", sweep("hydra.sweeper.timeout=-1"), ("hydra.sweeper.timeout",)),
    Case("timeout inf", sweep("hydra.sweeper.timeout=inf"), ("hydra.sweeper.timeout=inf",)),
    Case("failure rate", sweep("hydra.sweeper.max_failure_rate=1.5"), ("max_failure_rate",)),
    Case("retries", sweep("hydra.sweeper.max_retries=-1"), ("hydra.sweeper.max_retries=-1",)),
    Case("epoch budget", sweep("hydra.sweeper.epoch_budget=0"), ("epoch_budget=0",)),
    Case("direction", sweep("hydra.sweeper.direction=up"), ("hydra.sweeper.direction='up'",)),
    Case(
        "direction vs objective",
        sweep("objective=val_loss", "hydra.sweeper.direction=maximize"),
        ("objective=val_loss is minimized",),
    ),
    Case("name escapes", sweep("hydra.sweeper.study_name=../../x"), ("study_name='../../x'",)),
    Case("name absolute", sweep("hydra.sweeper.study_name=/tmp/x"), ("study_name='/tmp/x'",)),
    Case("bounds order", sweep("optimizer.lr=interval(1,0)"), ("optimizer.lr=interval(1,0)",)),
    Case("log from 0", sweep("optimizer.lr=tag(log,interval(0,1))"), ("log scale needs low > 0",)),
    Case("empty range", sweep("batch_size=range(64,32)"), ("batch_size=range(64,32)", "empty")),
    Case("infinite bound", sweep("optimizer.lr=interval(0,inf)"), ("not a finite number",)),
    Case("changed space", sweep("epochs=3"), ("another search space", "allow_space_change")),
    Case("storage url", sweep("hydra.sweeper.storage=nosuchdb://x/y"), ("cannot open study",)),
    Case(
        "sqlite folder",
        sweep("hydra.sweeper.storage=sqlite:///nowhere/s.db"),
        ("the folder nowhere", "does not exist"),
    ),
    Case("name dot", sweep("hydra.sweeper.study_name=."), ("study_name='.'", "plain name")),
    Case("failure rate 2", sweep("hydra.sweeper.max_failure_rate=2"), ("max_failure_rate=2.0",)),
    Case(
        "another study in the dir",
        sweep("hydra.sweeper.study_name=other", "hydra.sweep.dir=multirun/mlp"),
        ("holds the sweep of study mlp", "hydra.sweeper.study_name=mlp"),
    ),
    Case(
        "empty journal",
        sweep(),
        ("optuna.journal is empty", "hpsweep rebuild multirun/mlp"),
        damage=lambda root: (root / "multirun" / "mlp" / "optuna.journal").write_bytes(b""),
    ),
    Case(
        "journal gone",
        sweep(),
        ("holds no such study", "hpsweep rebuild multirun/mlp"),
        damage=lambda root: (root / "multirun" / "mlp" / "optuna.journal").unlink(),
    ),
    # -- the sweeper: values its jobs would refuse, found before any trial
    Case("sweep batch size 0", sweep("batch_size=0"), ("batch_size=0: must be >= 1",)),
    Case("sweep choice text", sweep("batch_size=choice(1,a,2.5)"), ("batch_size=a", "Integer")),
    Case("sweep group mismatch", sweep("model=cnn"), ("model.hidden_sizes", "not in struct")),
    Case("sweep lr below 0", sweep("optimizer.lr=interval(-1,1)"), ("optimizer.lr=-1.0",)),
    Case(
        "sweep queued value",
        sweep("+hydra.sweeper.enqueue=[{batch_size:0}]"),
        ("a trial with batch_size=0 would fail",),
    ),
    Case("unknown sampler", sweep("hydra/sweeper/sampler=bogus"), ("sampler/bogus", "tpe")),
    Case(
        "sweep dir under a file",
        sweep("hydra.sweeper.study_name=elsewhere", "hydra.sweep.dir=runs/a/result.json/x"),
        ("runs/a/result.json/x",),
    ),
    # -- the hpsweep command
    Case("compare nowhere", hpsweep("compare", "nowhere"), ("nowhere is not a folder",)),
    Case("compare a file", hpsweep("compare", "runs/a/result.json"), ("not a folder",)),
    Case("compare not a sweep", hpsweep("compare", "runs/a"), ("not a sweep dir",)),
    Case("sort column", hpsweep("compare", "multirun/mlp", "--sort", "nope"), ("'nope'",)),
    Case("columns", hpsweep("compare", "multirun/mlp", "--columns", "nope"), ("'nope'",)),
    Case("state", hpsweep("compare", "multirun/mlp", "--state", "bogus"), ("--state", "bogus")),
    Case("top text", hpsweep("compare", "multirun/mlp", "--top", "abc"), ("--top", "abc")),
    Case("format", hpsweep("compare", "multirun/mlp", "--format", "xml"), ("--format", "xml")),
    Case("no trial", hpsweep("reproduce", "multirun/mlp", "--trial", "99"), ("no trial 99",)),
    Case(
        "reproduce into a full dir",
        hpsweep("reproduce", "multirun/mlp", "--out", "runs/a"),
        ("runs/a exists and is not empty",),
    ),
    Case("no command", hpsweep(), ("command",)),
    Case("unknown command", hpsweep("explain"), ("explain",)),
]


# A case costs a process start with torch (about 5 s here): these run in the default suite, one
# or two of each kind; the rest are marked slow and run in CI.
QUICK = {
    "lr inf",
    "lr text",
    "typo with +",
    "unknown dataset",
    "resume other lr",
    "damaged checkpoint",
    "direction vs objective",
    "name escapes",
    "bounds order",
    "changed space",
    "compare nowhere",
    "no trial",
    "table column",
    "3 classes, 10 logits",
    "empty journal",
    "another study in the dir",
    "sweep batch size 0",
    "sweep choice text",
    "data returns a list",
}
PARAMS = [pytest.param(c, id=c.id, marks=() if c.id in QUICK else pytest.mark.slow) for c in CASES]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("workspace")
    for args in (("hydra.run.dir=runs/a", "epochs=1", *FAST), (*SWEEP, "hydra.sweeper.n_trials=2")):
        proc = run_cli(*args, cwd=root)
        assert proc.returncode == 0, proc.stderr
    return root


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_the_table_is_long_enough_and_its_names_unique():
    assert len(CASES) >= 40 and len({c.id for c in CASES}) == len(CASES)
    assert {c.id for c in CASES} >= QUICK


@pytest.mark.parametrize("case", PARAMS)
def test_hostile_input_is_refused_cleanly_and_changes_nothing(case, workspace, tmp_path):
    root = tmp_path / "ws"
    shutil.copytree(workspace, root, symlinks=True)
    if case.damage is not None:
        case.damage(root)
    before = snapshot(root)
    proc = run_command(case.command, cwd=root, timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    for text in case.expected:
        assert text in output, (text, output)
    assert "Traceback" not in output, output
    assert "Error in call to target" not in output, output  # Hydra's wrapper of 3 lines
    after = snapshot(root)
    changed = [name for name, data in before.items() if after.get(name) != data]
    assert not changed, changed
