import pytest
import torch
from torch import nn

from hpsweep.data import Split, iterate_batches, load_splits
from hpsweep.errors import ConfigError
from hpsweep.job import evaluate, make_criterion, train_one_epoch
from hpsweep.models import CNN, MLP, count_parameters

OPTIMIZERS = {
    "sgd": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9),
    "adam": lambda p: torch.optim.Adam(p, lr=1e-3),
    "adagrad": lambda p: torch.optim.Adagrad(p, lr=0.02),
    "rmsprop": lambda p: torch.optim.RMSprop(p, lr=1e-3),
}


@pytest.fixture(scope="module")
def mini():
    return load_splits("mnist_mini", val_size=1000, train_size=3000)


def test_mlp_hidden_sizes_as_int_or_list():
    assert count_parameters(MLP((1, 28, 28), 10, hidden_sizes=30)) == 784 * 30 + 30 + 30 * 10 + 10
    deep = MLP((1, 28, 28), 10, hidden_sizes=[256, 128, 100], dropout=0.2)
    linear = [m for m in deep if isinstance(m, nn.Linear)]
    assert [m.out_features for m in linear] == [256, 128, 100, 10]
    assert sum(isinstance(m, nn.Dropout) for m in deep) == 3
    assert deep(torch.zeros(5, 1, 28, 28)).shape == (5, 10)


@pytest.mark.parametrize("batch_norm", [False, True])
def test_cnn_conv_bias_only_without_batch_norm(batch_norm):
    model = CNN((1, 28, 28), 1, channels=8, hidden_size=32, batch_norm=batch_norm)
    convs = [m for m in model if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [8, 16]
    assert all((c.bias is None) == batch_norm for c in convs)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model) == (2 if batch_norm else 0)
    assert model(torch.zeros(3, 1, 28, 28)).shape == (3, 1)


@pytest.mark.parametrize(
    ("build", "key"),
    [
        (lambda: MLP((1, 28, 28), 10, activation="swish"), "model.activation"),
        (lambda: MLP((1, 28, 28), 10, hidden_sizes=0), "model.hidden_sizes"),
        (lambda: MLP((1, 28, 28), 10, dropout=1.0), "model.dropout"),
        (lambda: CNN((1, 28, 28), 10, channels=0), "model.channels"),
    ],
)
def test_models_reject_bad_arguments_naming_the_key(build, key):
    with pytest.raises(ConfigError) as info:
        build()
    assert info.value.key == key


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
@pytest.mark.parametrize("model_name", ["mlp", "cnn"])
@pytest.mark.parametrize("task", ["multiclass", "lt3"])
def test_every_optimizer_and_model_learns_both_tasks(optimizer, model_name, task):
    splits = load_splits("mnist_mini", val_size=1000, train_size=2000, task=task)
    torch.manual_seed(0)
    if model_name == "mlp":
        model = MLP(splits.input_shape, splits.num_outputs, hidden_sizes=64)
    else:
        model = CNN(splits.input_shape, splits.num_outputs, channels=4, hidden_size=32)
    opt = OPTIMIZERS[optimizer](model.parameters())
    criterion = make_criterion(splits.num_outputs)
    loss_before = evaluate(model, criterion, splits.val)["loss"]
    gen = torch.Generator().manual_seed(0)
    losses = [
        train_one_epoch(model, opt, criterion, iterate_batches(splits.train, 32, gen))["loss"]
        for _ in range(2)
    ]
    after = evaluate(model, criterion, splits.val)
    loss_after, acc_after = after["loss"], after["acc"]
    assert losses[1] < losses[0]
    assert loss_after < 0.6 * loss_before
    chance = 0.72 if task == "lt3" else 0.2  # lt3: always answering "no" is right 70% of the time
    assert acc_after > chance


def test_evaluate_restores_mode_and_leaves_weights_alone(mini):
    model = MLP(mini.input_shape, 10, hidden_sizes=16, dropout=0.5)
    before = [p.clone() for p in model.parameters()]
    model.train()
    first = evaluate(model, make_criterion(10), mini.val)
    second = evaluate(model, make_criterion(10), mini.val)
    assert model.training
    assert first == second  # dropout off in eval: deterministic
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert all(p.grad is None for p in model.parameters())
    model.eval()
    evaluate(model, make_criterion(10), mini.val)
    assert not model.training


def test_gradient_clipping_bounds_the_update(mini):
    torch.manual_seed(0)
    model = MLP(mini.input_shape, 10, hidden_sizes=16)
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    batch = [(mini.train.x[:64], mini.train.y[:64])]
    train_one_epoch(model, opt, make_criterion(10), batch, grad_clip_norm=0.01)
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    # plain SGD with lr 1: the step is minus the (clipped) gradient
    assert (after - before).norm().item() == pytest.approx(0.01, rel=1e-3)


def test_train_one_epoch_zeroes_gradients_every_step(mini):
    # Reference: each step's update is lr times that step's own gradient, computed apart with
    # torch.autograd.grad (which never accumulates). Stale gradients are planted first, as a
    # previous epoch or a forgotten zero_grad would leave them.
    batches = [(mini.train.x[i : i + 32], mini.train.y[i : i + 32]) for i in (0, 32)]
    torch.manual_seed(0)
    model = MLP(mini.input_shape, 10, hidden_sizes=8)
    expected = [p.detach().clone() for p in model.parameters()]
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    for x, y in batches:
        reference = MLP(mini.input_shape, 10, hidden_sizes=8)
        with torch.no_grad():
            for p, value in zip(reference.parameters(), expected, strict=True):
                p.copy_(value)
        loss = make_criterion(10)(reference(x), y)
        grads = torch.autograd.grad(loss, list(reference.parameters()))
        expected = [value - 0.1 * g for value, g in zip(expected, grads, strict=True)]

    train_one_epoch(model, torch.optim.SGD(model.parameters(), lr=0.1), make_criterion(10), batches)
    for p, value in zip(model.parameters(), expected, strict=True):
        torch.testing.assert_close(p.detach(), value, rtol=0, atol=1e-6)


def test_binary_accuracy_counts_positive_logit_as_class_one():
    split = Split(
        torch.tensor([[2.0], [-1.0], [0.5], [-3.0]]), torch.tensor([[1.0], [0.0], [0.0], [0.0]])
    )
    identity = nn.Sequential(nn.Identity())
    identity.register_parameter("p", nn.Parameter(torch.zeros(1)))
    scores = evaluate(identity, make_criterion(1), split)
    loss, acc = scores["loss"], scores["acc"]
    assert acc == 0.75
    expected = nn.functional.binary_cross_entropy_with_logits(split.x, split.y).item()
    assert loss == pytest.approx(expected)
