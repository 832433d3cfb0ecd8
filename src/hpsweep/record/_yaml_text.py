"""OmegaConf.to_yaml's text of a trial's .hydra records, with what the last trial's had in
common reused: a hydra.yaml is 8 kB (Hydra's help text alone is 5 kB) and PyYAML's emitter
writes about 1.6 kB per ms here, while a sweep's trials differ in a few of its sections.

A block mapping's YAML is its items' texts one after the other, each written at its own
indentation whatever comes before it; so each section (a key of config.yaml, a key under
hydra.yaml's `hydra:`) is written once per value it takes.
"""

from typing import Any

import yaml
from omegaconf import OmegaConf

# OmegaConf.to_yaml's dumper: it quotes strings its loader would read as other types
from omegaconf._utils import get_omega_conf_dumper

# (section path) -> (its value as plain data, its text): the sections of the last trial
_sections: dict[tuple[Any, ...], tuple[Any, str]] = {}


def yaml_text(node: Any) -> str:
    """OmegaConf.to_yaml(node) for a DictConfig or ListConfig: the same text."""
    data = OmegaConf.to_container(node, resolve=False, enum_to_str=True)
    if not isinstance(data, dict) or not data:
        return _dump(data)
    if len(data) == 1:  # hydra.yaml: {hydra: {...}}
        [(key, inner)] = data.items()
        if isinstance(inner, dict) and inner:
            parts = [_section((key, k), v) for k, v in inner.items()]
            head = parts[0][: parts[0].find("\n") + 1]
            if head.endswith(":\n") and all(p.startswith(head) for p in parts):
                return head + "".join(p[len(head) :] for p in parts)
    return "".join(_section((k,), v) for k, v in data.items())


def _section(path: tuple[Any, ...], value: Any) -> str:
    """The YAML of {path[0]: {path[1]: ... value}}, written again only if `value` changed."""
    cached = _sections.get(path)
    if cached is not None and _same(cached[0], value):
        return cached[1]
    data = value
    for key in reversed(path):
        data = {key: data}
    text = _dump(data)
    _sections[path] = (value, text)
    return text


def _dump(data: Any) -> str:
    return yaml.dump(
        data,
        default_flow_style=False,
        allow_unicode=True,
        sort_keys=False,
        Dumper=get_omega_conf_dumper(),
    )


def _same(a: Any, b: Any) -> bool:
    """Equal and of the same types, dict keys in the same order: what gives the same YAML
    (1 == 1.0 == True, and {a, b} == {b, a}, give other texts)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)
