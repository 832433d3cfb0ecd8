import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

import hpsweep.train  # noqa: F401  (registers the config schema)
from hpsweep.config import CONFIG_DIR

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


def compose_config(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


TRAIN_CMD = [sys.executable, "-m", "hpsweep.train"]  # what hpsweep-train runs


def run_cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """`python -m hpsweep.train ARGS` in a fresh process, as a user would run it."""
    return subprocess.run(
        [*TRAIN_CMD, *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
    )


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
