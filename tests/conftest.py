"""Fixtures and helpers shared by the test modules (which import nothing from each other)."""

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from hpsweep.config import CONFIG_DIR  # importing it registers the config schema
from hpsweep.record import TrialFiles, TrialResult
from tests.warm_start import WARM, run_command

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
FAST = ("data.train_size=2000", "data.val_size=500")  # trials of a second or so


@pytest.fixture(autouse=True, scope="session")
def read_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tests' own read cache (hpsweep.read_cache), shared by the session and the
    processes it starts, never the user's ~/.cache."""
    folder = tmp_path_factory.mktemp("read-cache")
    os.environ["HPSWEEP_CACHE_DIR"] = str(folder)
    return folder


@pytest.fixture(scope="module")
def one_torch_thread():
    """Torch on one thread for a module, as each worker of an n_jobs=2 sweep runs: two threads
    on a busy 2-core machine made small steps up to 50x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def every_state_preset(study_name: str) -> str:
    """A 5-trial SGD sweep with median pruning (see the tests' `defaults`) in which every state
    occurs: lr 0.05 and 0.03 complete, 1e-6 is pruned, 1e4 diverges and fails, one sampled."""
    return f"""\
epochs: 3
hydra:
  sweeper:
    study_name: {study_name}
    n_trials: 5
    max_failure_rate: 1.0
    pruner: {{n_startup_trials: 2}}
    params:
      optimizer.lr: choice(0.05, 0.03, 1e-6, 1e4)
      batch_size: choice(64, 128)
    enqueue:
      - {{optimizer.lr: 0.05, batch_size: 64}}
      - {{optimizer.lr: 0.03, batch_size: 128}}
      - {{optimizer.lr: 1e-6, batch_size: 64}}
      - {{optimizer.lr: 1e4, batch_size: 64}}
"""


class Interrupted(BaseException):
    """Stands in for Ctrl-C or a killed process: not an Exception, so nothing handles it."""


def interrupt_after(k):
    def hook(epoch, row):
        if epoch == k:
            raise Interrupted

    return hook


def compose_config(*overrides: str, return_hydra_config: bool = False) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(
            config_name="train", overrides=list(overrides), return_hydra_config=return_hydra_config
        )


TRAIN_CMD = [sys.executable, "-m", "hpsweep.train"]  # what hpsweep-train runs


def run_cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """`python -m hpsweep.train ARGS` in a process of its own, as a user would run it (forked
    from a warm interpreter: tests/warm_start.py)."""
    return run_command([*TRAIN_CMD, *args], cwd=cwd, env=env)


@pytest.fixture(autouse=True, scope="session")
def warm_start_server():
    yield
    WARM.stop()


def start_sweep(args: list[str], cwd: Path) -> subprocess.Popen:
    """A command in its own process group (a signal to the group reaches every worker, as a
    terminal's Ctrl-C does), its output captured for `communicate`."""
    return subprocess.Popen(
        args,
        cwd=cwd,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for_epochs(proc: subprocess.Popen, trial_dir: Path, epochs: int) -> None:
    """Until `trial_dir`'s metrics.csv has `epochs` rows; fails if `proc` ends first, or after
    two minutes."""
    metrics = trial_dir / "metrics.csv"
    deadline = time.monotonic() + 120
    while not (metrics.exists() and len(read_metrics(trial_dir)) >= epochs):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)


def read_result(trial_dir: Path) -> TrialResult:
    result = TrialFiles(trial_dir).read_result()
    assert result is not None, f"{trial_dir} has no result.json"
    return result


def read_metrics(trial_dir: Path) -> list[dict[str, float]]:
    return TrialFiles(trial_dir).read_metrics()


def write_preset(tmp_path: Path, name: str, body: str, defaults: tuple[str, ...] = ()) -> str:
    """Writes conf/sweep/NAME.yaml, a preset selecting our sweeper (plus `defaults`) with
    `body`; returns the override that puts it on the search path."""
    folder = tmp_path / "conf" / "sweep"
    folder.mkdir(parents=True, exist_ok=True)
    header = ["# @package _global_", "defaults:", "  - override /hydra/sweeper: hpsweep"]
    header += [f"  - override {entry}" for entry in defaults]
    (folder / f"{name}.yaml").write_text("\n".join(header) + "\n" + textwrap.dedent(body))
    return f"hydra.searchpath=[file://{tmp_path / 'conf'}]"


@pytest.fixture(scope="session")
def data_root() -> str:
    """Folder with the full datasets in torchvision layout.

    From HPSWEEP_DATA_ROOT, else ../shared/data next to the repo. CI sets the variable and
    these tests fail there if the data is missing; elsewhere they skip, saying how to enable them.
    """
    root = Path(os.environ.get("HPSWEEP_DATA_ROOT", SHARED_DATA))
    if not (root / "MNIST" / "raw").is_dir():
        message = (
            f"full datasets not found at {root}: set HPSWEEP_DATA_ROOT to a folder holding "
            "MNIST/raw and FashionMNIST/raw"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return str(root)


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """HPSWEEP_TEST_POSTGRES_URL (.ci/run sets it). In CI an unreachable server fails the tests
    that use it; elsewhere they skip, saying how to enable them."""
    import optuna

    from hydra_plugins.hpsweep_sweeper._storage import mask_password

    url = os.environ.get("HPSWEEP_TEST_POSTGRES_URL")
    how = "set HPSWEEP_TEST_POSTGRES_URL=postgresql://postgres@127.0.0.1:5432/test"
    if not url:
        if os.environ.get("CI"):
            pytest.fail(f"HPSWEEP_TEST_POSTGRES_URL is not set; {how}")
        pytest.skip(f"no PostgreSQL for this test: {how}")
    try:
        optuna.get_all_study_summaries(url)
    except Exception as e:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL at {mask_password(url)} is unreachable: {e}")
        pytest.skip(f"PostgreSQL at {mask_password(url)} is unreachable ({e}); {how}")
    return url
