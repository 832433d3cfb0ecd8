"""Augmentation, the VGG model and what stronger sweeps search: AdamW, warm-up + cosine, label
smoothing, bf16 autocast and channels-last, each as the config builds it and a trial runs it."""

import math

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from hpsweep.config import check_config
from hpsweep.data import Augment, load_splits
from hpsweep.errors import ConfigError
from hpsweep.job import WarmupCosine, compare_metrics, reproduce, run_trial
from hpsweep.job import _steps as training
from hpsweep.job import _trial as trial
from hpsweep.models import VGG, count_parameters
from tests.conftest import compose_config, read_metrics, read_result, run_cli
from tests.test_trial import DATA, Interrupted, assert_same_run, interrupt_after

FASHION = ("data=fashion_mnist", "data.train_size=3000", "data.val_size=1000")
STRONG = (
    "model=vgg",
    "model.channels=4",
    "optimizer=adamw",
    "scheduler=warmup_cosine",
    "label_smoothing=0.1",
    "precision=bf16",
    "channels_last=true",
)


def shifted_by_hand(image: torch.Tensor, dy: int, dx: int, fill: float) -> torch.Tensor:
    """One image moved dy pixels down and dx right, the vacated border blank: the reference."""
    out = torch.full_like(image, fill)
    _, h, w = image.shape
    out[:, max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = image[
        :, max(-dy, 0) : h - max(dy, 0), max(-dx, 0) : w - max(dx, 0)
    ]
    return out


def test_shift_moves_each_image_by_up_to_shift_pixels_with_a_blank_border():
    x = torch.rand(400, 1, 6, 7) + 1.0  # no pixel equals the fill value
    augment = Augment(fill=-0.5, shift=2)
    out = augment(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    seen = set()
    for image, moved in zip(x, out, strict=True):
        matches = [
            (dy, dx)
            for dy in range(-2, 3)
            for dx in range(-2, 3)
            if torch.equal(moved, shifted_by_hand(image, dy, dx, -0.5))
        ]
        assert len(matches) == 1  # each output is exactly one shift of its own input
        seen.add(matches[0])
    assert len(seen) == 25  # every offset in [-2, 2]^2 is drawn


def test_flip_mirrors_about_half_the_images_and_leaves_the_rest():
    x = torch.randn(2000, 1, 5, 5)
    out = Augment(fill=0.0, hflip=True)(x, torch.Generator().manual_seed(0))
    flipped = torch.tensor([torch.equal(o, i.flip(2)) for o, i in zip(out, x, strict=True)])
    same = torch.tensor([torch.equal(o, i) for o, i in zip(out, x, strict=True)])
    assert bool((flipped ^ same).all())
    assert 900 < int(flipped.sum()) < 1100


def test_shifts_pad_with_the_datasets_black_pixel():
    splits = load_splits("mnist_mini", val_size=1000)
    assert splits.blank == pytest.approx(float(splits.train.x.min()), abs=1e-6)
    assert splits.blank < 0  # normalized: black is below the mean


def test_augmentation_draws_from_the_generator_it_is_given():
    x = torch.randn(64, 1, 8, 8)
    augment = Augment(fill=0.0, shift=1, hflip=True)
    a = augment(x, torch.Generator().manual_seed(1))
    b = augment(x, torch.Generator().manual_seed(1))
    c = augment(x, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not Augment(fill=0.0).active and augment.active


@pytest.mark.parametrize(
    ("kwargs", "key"), [({"shift": -1}, "augment.shift"), ({"hflip": "yes"}, "augment.hflip")]
)
def test_augment_rejects_bad_values_naming_the_key(kwargs, key):
    with pytest.raises(ConfigError) as info:
        Augment(fill=0.0, **kwargs)
    assert info.value.key == key


@pytest.mark.parametrize("dataset", ["mnist_mini", "mnist"])
def test_flips_on_digits_are_refused_saying_why(dataset):
    cfg = compose_config(f"data={dataset}", "augment=shift_flip")
    with pytest.raises(ConfigError, match="a mirrored digit is not that digit") as info:
        check_config(cfg)
    assert info.value.key == "augment.hflip"
    check_config(compose_config(f"data={dataset}", "augment=shift"))  # shifts are fine


def test_flip_refusal_on_the_command_line_leaves_the_run_dir_alone(tmp_path):
    done = run_cli("augment=shift_flip", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert done.returncode != 0
    assert "augment.hflip=True: flips are refused for data.dataset=mnist_mini" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "run").exists()


def test_training_sees_augmented_batches(tmp_path, monkeypatch):
    seen = []
    real = training.train_one_epoch

    def spy(model, optimizer, criterion, batches, *args, **kwargs):
        batches = list(batches)
        seen.append(batches)
        return real(model, optimizer, criterion, batches, *args, **kwargs)

    monkeypatch.setattr(trial, "train_one_epoch", spy)
    for augment in ("none", "shift"):
        run_trial(compose_config(*DATA, f"augment={augment}", "epochs=1"), tmp_path / augment)
    plain, shifted = seen
    # same seed, same batch order: the labels agree batch by batch, the images do not
    assert all(torch.equal(a[1], b[1]) for a, b in zip(plain, shifted, strict=True))
    moved = sum(not torch.equal(a[0], b[0]) for a, b in zip(plain, shifted, strict=True))
    assert moved == len(plain)


@pytest.mark.parametrize("interrupt_at", [pytest.param(1, marks=pytest.mark.slow), 2])
def test_resume_with_flips_and_shifts_equals_uninterrupted_bitwise(
    tmp_path, data_root, monkeypatch, interrupt_at
):
    monkeypatch.setenv("HPSWEEP_DATA_ROOT", data_root)
    # Bitwise equality needs no learning: a few batches an epoch exercise every stream a
    # resume restores
    small = ("data.train_size=384", "data.val_size=128", "batch_size=64")
    cfg = compose_config(*FASHION, *small, *STRONG, "augment=shift_flip", "epochs=3")
    run_trial(cfg, tmp_path / "straight")
    with pytest.raises(Interrupted):
        run_trial(cfg, tmp_path / "resumed", on_epoch_end=interrupt_after(interrupt_at))
    run_trial(cfg, tmp_path / "resumed")
    assert_same_run(tmp_path / "straight", tmp_path / "resumed")


def test_fashion_with_flips_bf16_and_channels_last_learns(tmp_path, data_root, monkeypatch):
    monkeypatch.setenv("HPSWEEP_DATA_ROOT", data_root)
    run = trial.prepare(
        compose_config(*FASHION, *STRONG, "augment=shift_flip", "epochs=3"), tmp_path
    )
    job, forwards = run.job, []
    job.model.register_forward_hook(
        lambda module, args, out: forwards.append((module.training, out.dtype))
    )
    conv = next(m for m in job.model.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert conv.weight.dtype == torch.float32  # autocast: the weights stay float32
    assert job.criterion.label_smoothing == 0.1 and job.eval_criterion.label_smoothing == 0.0

    result = trial.train(run)
    rows = read_metrics(tmp_path)
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert result.best_val_acc > 0.4 and result.test_acc > 0.4  # 10 classes: chance is 0.1
    assert result.num_params == count_parameters(job.model)
    # every forward pass, training and evaluation, ran under bf16 autocast
    assert {dtype for _, dtype in forwards} == {torch.bfloat16}
    assert {mode for mode, _ in forwards} == {True, False}


def test_validation_loss_is_plain_cross_entropy_under_label_smoothing(tmp_path):
    result = run_trial(compose_config(*DATA, "label_smoothing=0.3", "epochs=2"), tmp_path)
    rows = read_metrics(tmp_path)
    # With smoothing 0.3 the training loss cannot go below the smoothed targets' entropy
    # (about 1.07 nats for 10 classes); the plain validation loss of the same model can.
    floor = -(0.73 * math.log(0.73) + 9 * 0.03 * math.log(0.03))
    assert rows[-1]["train_loss"] > floor
    assert rows[-1]["val_loss"] < floor and result.test_loss < floor


def test_vgg_layout_and_parameter_count():
    model = VGG((1, 28, 28), 10, channels=16, stages=3, convs_per_stage=2, dropout=0.1)
    convs = [m for m in model if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [16, 16, 32, 32, 64, 64]
    assert all(c.bias is None for c in convs)  # BatchNorm follows each
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model) == 6
    assert sum(isinstance(m, nn.MaxPool2d) for m in model) == 2
    conv_weights = 9 * (1 * 16 + 16 * 16 + 16 * 32 + 32 * 32 + 32 * 64 + 64 * 64)
    assert count_parameters(model) == conv_weights + 2 * (16 + 16 + 32 + 32 + 64 + 64) + 650
    assert model(torch.zeros(3, 1, 28, 28)).shape == (3, 10)
    with pytest.raises(ConfigError) as info:
        VGG((1, 28, 28), 10, stages=6)
    assert info.value.key == "model.stages"


def test_warmup_cosine_rises_linearly_then_decays_to_eta_min():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = WarmupCosine(opt, T_max=6, warmup_epochs=2, eta_min=0.1)
    lrs = []
    for _ in range(7):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        schedule.step()
    cosine = [0.1 + 0.9 * (1 + math.cos(math.pi * k / 4)) / 2 for k in range(5)]
    assert lrs == pytest.approx([1 / 3, 2 / 3, *cosine])
    assert lrs[-1] == pytest.approx(0.1)
    with pytest.raises(ConfigError) as info:
        WarmupCosine(opt, T_max=3, warmup_epochs=3)
    assert info.value.key == "scheduler.warmup_epochs"


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("label_smoothing=1.0", "label_smoothing"),
        ("precision=fp16", "precision"),
        ("augment.shift=-2", "augment.shift"),
    ],
)
def test_bad_values_of_the_new_keys_are_refused_before_any_file(tmp_path, override, key):
    with pytest.raises(ConfigError) as info:
        run_trial(compose_config(*DATA, override), tmp_path / "trial")
    assert info.value.key == key
    assert not (tmp_path / "trial").exists()


def test_label_smoothing_is_refused_for_the_binary_task():
    with pytest.raises(ConfigError, match="BCEWithLogitsLoss") as info:
        check_config(compose_config("data.task=lt3", "label_smoothing=0.1"))
    assert info.value.key == "label_smoothing"


def test_a_checkpoint_from_before_the_new_keys_resumes(tmp_path):
    cfg = compose_config(*DATA, "epochs=2")
    with pytest.raises(Interrupted):
        run_trial(cfg, tmp_path / "old", on_epoch_end=interrupt_after(1))
    # as a checkpoint written before augment, precision, ... existed
    path = tmp_path / "old" / "checkpoints" / "last.pt"
    state = torch.load(path, weights_only=True)
    for key in ("augment", "label_smoothing", "precision", "channels_last"):
        del state["config"][key]
    torch.save(state, path)
    run_trial(cfg, tmp_path / "old")
    run_trial(cfg, tmp_path / "new")
    assert_same_run(tmp_path / "old", tmp_path / "new")
    assert read_result(tmp_path / "old").epochs_run == 2


def test_a_trial_that_names_a_moved_target_resumes_and_reproduces(tmp_path):
    # augment's class was hpsweep.augment.Augment before the subpackages
    cfg = compose_config(*DATA, "augment=shift", "epochs=2")  # built: its class is loaded
    with pytest.raises(Interrupted):
        run_trial(cfg, tmp_path / "old", on_epoch_end=interrupt_after(1))
    for path in (tmp_path / "old" / "checkpoints").glob("*.pt"):
        state = torch.load(path, weights_only=True)
        state["config"]["augment"]["_target_"] = "hpsweep.augment.Augment"
        torch.save(state, path)
    run_trial(cfg, tmp_path / "old")  # no "written with another config"
    assert read_result(tmp_path / "old").epochs_run == 2
    saved = tmp_path / "old" / ".hydra"
    saved.mkdir()
    old_config = OmegaConf.to_yaml(cfg).replace("hpsweep.data.Augment", "hpsweep.augment.Augment")
    (saved / "config.yaml").write_text(old_config)
    assert (
        compare_metrics(
            read_metrics(tmp_path / "old"), reproduce(tmp_path / "old", tmp_path / "again")
        )
        == []
    )


def test_shift_matches_a_padded_crop():
    # the same operation torchvision's RandomCrop(28, padding=2, fill) does, for one offset
    x = torch.randn(1, 1, 28, 28)
    padded = F.pad(x, (2, 2, 2, 2), value=-1.0)
    gen = torch.Generator().manual_seed(3)
    top, left = torch.randint(0, 5, (1, 2), generator=torch.Generator().manual_seed(3))[0]
    out = Augment(fill=-1.0, shift=2)(x, gen)
    assert torch.equal(out, padded[:, :, top : top + 28, left : left + 28])
