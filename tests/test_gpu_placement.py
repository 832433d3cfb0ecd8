"""GPU placement of a sweep's forked workers (#14): worker i sees GPU i mod N, and the sweep
process never initializes CUDA before forking. No GPU here: the GPU list is faked through
CUDA_VISIBLE_DEVICES, which is all a worker's placement is."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from hydra.errors import CompactHydraException

from hpsweep.config import device_name
from hydra_plugins.hpsweep_sweeper import WORKER, load_sweep_study
from hydra_plugins.hpsweep_sweeper._workers import gpu_of_worker, run_forked, visible_gpus
from tests.conftest import FAST, read_result


@pytest.mark.parametrize(
    ("variable", "gpus"),
    [
        ("3,5", ["3", "5"]),
        (" 0 , 1 ,2", ["0", "1", "2"]),
        ("", []),  # CUDA hides every GPU
        ("0,-1,2", ["0"]),  # CUDA stops at the first invalid entry
        ("GPU-8f2c,MIG-1a", ["GPU-8f2c", "MIG-1a"]),
    ],
)
def test_visible_gpus_are_cuda_visible_devices_entries(monkeypatch, variable, gpus):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", variable)
    assert visible_gpus() == gpus


def test_without_the_variable_the_driver_lists_the_gpus(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    driver = Path("/proc/driver/nvidia/gpus")
    expected = len(list(driver.iterdir())) if driver.is_dir() else 0
    assert visible_gpus() == [str(i) for i in range(expected)]


def test_worker_i_gets_gpu_i_mod_n():
    assert [gpu_of_worker(i, ["3", "5"]) for i in range(5)] == ["3", "5", "3", "5", "3"]
    assert gpu_of_worker(1, ["7"]) is None  # one GPU: nothing to spread
    assert gpu_of_worker(0, []) is None


def write_visible_devices(folder: Path):
    def work(index: int) -> None:
        (folder / str(index)).write_text(os.environ.get("CUDA_VISIBLE_DEVICES", "unset"))

    return work


def test_forked_workers_each_see_their_gpu(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert run_forked(3, write_visible_devices(tmp_path), 1, visible_gpus()) == []
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == {"0": "3", "1": "5", "2": "3"}
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3,5"  # the sweep process keeps seeing all


def test_without_gpus_workers_see_what_the_sweep_sees(tmp_path, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert run_forked(2, write_visible_devices(tmp_path), 1, []) == []
    assert {p.read_text() for p in tmp_path.iterdir()} == {"unset"}


def test_cuda_initialized_before_forking_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    with pytest.raises(CompactHydraException, match="CUDA was initialized in the sweep process"):
        run_forked(2, write_visible_devices(tmp_path), 1, ["0", "1"])
    assert not list(tmp_path.iterdir())  # no worker started


def test_result_json_names_the_physical_gpu(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5")
    assert device_name(torch.device("cuda:0")) == "cuda:0 (CUDA_VISIBLE_DEVICES=5)"
    assert device_name(torch.device("cpu")) == "cpu"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert device_name(torch.device("cuda:1")) == "cuda:1"


# hpsweep-train, with every CUDA initialization of any of its processes written down
TRAIN = textwrap.dedent(
    """
    import os, sys
    import torch

    real = torch.cuda._lazy_init

    def lazy_init():
        with open(os.environ["CUDA_INITS"], "a") as f:
            f.write(f"{os.getpid()}\\n")
        return real()

    torch.cuda._lazy_init = lazy_init
    with open(os.environ["SWEEP_PID"], "w") as f:
        f.write(str(os.getpid()))
    from hpsweep.train import main

    sys.argv = ["hpsweep-train", *sys.argv[1:]]
    main()
    """
)


@pytest.mark.slow
def test_a_sweep_spreads_its_workers_and_never_initializes_cuda(tmp_path):
    inits, sweep_pid = tmp_path / "cuda_inits", tmp_path / "sweep_pid"
    sweep = subprocess.run(
        [
            sys.executable,
            "-c",
            TRAIN,
            "-m",
            "sweep=mlp",
            "hydra.sweeper.n_trials=4",
            "hydra.sweeper.n_jobs=2",
            "hydra.sweeper.study_name=gpus",
            "epochs=1",
            *FAST,
        ],
        cwd=tmp_path,
        env={
            **os.environ,
            "CUDA_VISIBLE_DEVICES": "3,5",
            "CUDA_INITS": str(inits),
            "SWEEP_PID": str(sweep_pid),
        },
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert sweep.returncode == 0, sweep.stderr
    assert "workers 0-1 on GPUs 3, 5" in sweep.stdout

    study = load_sweep_study(tmp_path / "multirun" / "gpus", "gpus")
    workers = {t.user_attrs[WORKER] for t in study.trials}
    gpu_of = {w.split(" ")[0]: w.split("=")[1].rstrip(")") for w in workers}
    assert len(study.trials) == 4 and sorted(gpu_of.values()) == ["3", "5"]  # one each
    assert sweep_pid.read_text() not in {w.split(":")[1].split(" ")[0] for w in workers}
    for n in range(4):  # no CUDA here: the trials ran, on the CPU
        assert read_result(tmp_path / "multirun" / "gpus" / f"trial_000{n}").device == "cpu"
    inits_by = inits.read_text().split() if inits.exists() else []
    assert sweep_pid.read_text() not in inits_by  # workers may; the sweep process never
