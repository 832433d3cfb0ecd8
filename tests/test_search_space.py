import re

import pytest
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from hydra_plugins.hpsweep_sweeper._search_space import (
    SearchSpaceError,
    format_value,
    parse_search_space,
)
from hydra_plugins.hpsweep_sweeper._storage import mask_password


@pytest.mark.parametrize(
    ("line", "distribution", "grid"),
    [
        ("n=range(1, 5)", IntDistribution(1, 4), [1, 2, 3, 4]),
        ("n=range(0, 10, 3)", IntDistribution(0, 9, step=3), [0, 3, 6, 9]),
        (
            "x=range(-1.0, 1.0, step=0.5)",
            FloatDistribution(-1.0, 0.5, step=0.5),
            [-1.0, -0.5, 0.0, 0.5],
        ),
        ("m=choice(mlp, cnn)", CategoricalDistribution(["mlp", "cnn"]), ["mlp", "cnn"]),
        ("b=32,64,128", CategoricalDistribution([32, 64, 128]), [32, 64, 128]),
        ("lr=tag(log, interval(1e-4, 1e-1))", FloatDistribution(1e-4, 1e-1, log=True), None),
        ("p=interval(0, 0.5)", FloatDistribution(0.0, 0.5), None),
        ("h=int(interval(16, 256))", IntDistribution(16, 256), None),
        ("h=tag(log, int(interval(16, 256)))", IntDistribution(16, 256, log=True), None),
    ],
)
def test_grammar_maps_to_optuna_distributions(line, distribution, grid):
    space = parse_search_space({}, [line])
    key = line.split("=")[0]
    assert space.distributions == {key: distribution}
    assert space.grid.get(key) == grid


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("x=interval(1, 0)", "x=interval(1, 0): low 1.0 > high 0.0"),
        ("x=tag(log, interval(0, 1))", "a log scale needs low > 0, got 0.0"),
        ("x=tag(log, int(interval(-2, 10)))", "a log scale needs low > 0, got -2"),
        ("x=interval(0, inf)", "x=interval(0, inf): inf is not a finite number"),
        ("x=choice(1, nan)", "nan is not a finite number"),
        ("x=choice(a, a)", "a choice is listed twice"),
        ("x=range(0, 5, step=0)", "the step must be > 0"),
        ("x=range(1, 5, step=-1)", "the step must be > 0"),
        ("x=range(5, 1)", "x=range(5, 1): empty (range's end is excluded"),
    ],
)
def test_a_space_that_cannot_be_searched_is_refused_naming_the_parameter(line, message):
    with pytest.raises(SearchSpaceError, match=re.escape(message)):
        parse_search_space({}, [line])


def test_float_range_keeps_its_last_value_despite_binary_rounding():
    space = parse_search_space({}, ["x=range(0, 1, step=0.3)"])  # 3 * 0.3 = 0.8999999999999999
    assert space.distributions["x"] == FloatDistribution(0.0, 0.9, step=0.3)
    assert space.grid["x"] == [0.0, 0.3, 0.6, 0.9]


def test_range_end_point_is_excluded_like_python_and_hydra():
    space = parse_search_space({"x": "range(1, 5)"}, [])
    assert space.distributions["x"].high == 4
    assert space.grid_values() == {"x": [1, 2, 3, 4]}


def test_command_line_wins_over_params_and_fixed_values_become_overrides():
    space = parse_search_space(
        {"optimizer.lr": "interval(0.1, 1)", "epochs": 5},
        ["optimizer.lr=choice(0.1, 0.2)", "seed=3"],
    )
    assert space.distributions == {"optimizer.lr": CategoricalDistribution([0.1, 0.2])}
    assert space.fixed == {"epochs": "5", "seed": "3"}
    assert space.overrides({"optimizer.lr": 0.2}) == ["epochs=5", "seed=3", "optimizer.lr=0.2"]


def test_signature_changes_with_the_space_and_the_fixed_values():
    a = parse_search_space({"lr": "interval(0.1, 1)"}, ["epochs=3"]).signature()
    assert a == parse_search_space({"lr": "interval(0.1, 1)"}, ["epochs=3"]).signature()
    assert a != parse_search_space({"lr": "interval(0.1, 2)"}, ["epochs=3"]).signature()
    assert a != parse_search_space({"lr": "interval(0.1, 1)"}, ["epochs=4"]).signature()


def test_grid_needs_discrete_values():
    space = parse_search_space({"lr": "interval(0.1, 1)", "b": "choice(1, 2)"}, [])
    with pytest.raises(SearchSpaceError, match="lr is an interval"):
        space.grid_values()


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "null"),
        (True, "true"),
        (3, "3"),
        (0.1, "0.1"),
        (1e-7, "1e-07"),
        ("cnn", "cnn"),
        ("null", "'null'"),
        ("1e-3", "'1e-3'"),
        ("a,b", "'a,b'"),
        ("it's", "'it\\'s'"),
    ],
)
def test_values_format_as_overrides_hydra_parses_back(value, text):
    assert format_value(value) == text
    parsed = OverridesParser.create().parse_overrides([f"k={text}"])[0]
    assert parsed.value() == value


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://user:s3cret@db:5432/optuna", "postgresql://user:***@db:5432/optuna"),
        ("mysql+pymysql://u:p%40ss@h/db", "mysql+pymysql://u:***@h/db"),
        ("sqlite:///multirun/study.db", "sqlite:///multirun/study.db"),
        ("postgresql://user@db/optuna", "postgresql://user@db/optuna"),
    ],
)
def test_passwords_are_masked(url, masked):
    assert mask_password(url) == masked


LAYERS = ["choice(64, 128, 256)", "choice(64, 128, 256)", "choice(32, 64, 128, 256)"]


def test_a_list_of_expressions_is_one_parameter_per_element_and_one_override():
    space = parse_search_space({"model.hidden_sizes": LAYERS, "epochs": 2}, [])
    assert space.distributions == {
        "model.hidden_sizes.0": CategoricalDistribution([64, 128, 256]),
        "model.hidden_sizes.1": CategoricalDistribution([64, 128, 256]),
        "model.hidden_sizes.2": CategoricalDistribution([32, 64, 128, 256]),
    }
    params = {"model.hidden_sizes.0": 128, "model.hidden_sizes.1": 64, "model.hidden_sizes.2": 32}
    assert space.overrides(params) == ["epochs=2", "model.hidden_sizes=[128,64,32]"]
    # the indexed form (hydra-optuna-sweeper users' lin1_size, lin2_size, ...) is the same space
    indexed = {f"model.hidden_sizes.{i}": expr for i, expr in enumerate(LAYERS)}
    same = parse_search_space({**indexed, "epochs": 2}, [])
    assert same.signature() == space.signature()
    assert same.overrides(params) == space.overrides(params)
    # a whole list in `enqueue` names the same parameters
    assert space.expand({"model.hidden_sizes": [128, 64, 32]}) == params


def test_a_list_mixes_fixed_and_searched_elements_and_plain_lists_stay_values():
    space = parse_search_space({"model.hidden_sizes": ["choice(64, 128)", 32], "x": [1, 2]}, [])
    assert list(space.distributions) == ["model.hidden_sizes.0"]
    assert space.overrides({"model.hidden_sizes.0": 128}) == [
        "x=[1,2]",
        "model.hidden_sizes=[128,32]",
    ]
    # one element fixed alone stays Hydra's own element override
    assert parse_search_space({}, ["model.hidden_sizes.1=32"]).overrides({}) == [
        "model.hidden_sizes.1=32"
    ]


def test_a_searched_list_changes_the_signature_with_its_length_and_any_element():
    base = parse_search_space({"model.hidden_sizes": LAYERS}, []).signature()
    assert base != parse_search_space({"model.hidden_sizes": LAYERS[:2]}, []).signature()
    changed = [*LAYERS[:2], "choice(32, 64)"]
    assert base != parse_search_space({"model.hidden_sizes": changed}, []).signature()


def test_the_command_line_replaces_a_whole_list_or_one_element():
    params = {"model.hidden_sizes": LAYERS}
    whole = parse_search_space(params, ["model.hidden_sizes=64"])
    assert whole.distributions == {} and whole.fixed == {"model.hidden_sizes": "64"}
    one = parse_search_space(params, ["model.hidden_sizes.2=16"])
    assert len(one.distributions) == 2
    params_ = {"model.hidden_sizes.0": 64, "model.hidden_sizes.1": 256}
    assert one.overrides(params_) == ["model.hidden_sizes=[64,256,16]"]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"h.1": "choice(1, 2)"}, "h.0 is missing: a list searched element by element gets"),
        ({"h.0": "choice(1, 2)", "h.2": "3"}, "h.1 is missing"),
        ({"h": ["choice(1, 2)", [3]]}, "h: ['choice(1, 2)', [3]]: a searched list holds one"),
    ],
)
def test_a_list_with_a_gap_or_nested_values_is_refused(params, message):
    with pytest.raises(SearchSpaceError, match=re.escape(message)):
        parse_search_space(params, [])


def test_a_yaml_flow_list_split_at_the_commas_inside_expressions_is_put_back_together():
    flow = yaml.safe_load("h: [choice(64, 128, 256), 32, tag(log, interval(1e-3, 1e-2))]")["h"]
    assert flow[:3] == ["choice(64", 128, "256)"]  # what YAML makes of it
    space = parse_search_space({"h": flow}, [])
    assert space.distributions == {
        "h.0": CategoricalDistribution([64, 128, 256]),
        "h.2": FloatDistribution(1e-3, 1e-2, log=True),
    }
    assert space.overrides({"h.0": 64, "h.2": 0.005}) == ["h=[64,32,0.005]"]
