"""A trial's .hydra files read: with OmegaConf as Hydra wrote them, or as plain data on
libyaml's parser with OmegaConf's typing (20x faster; `hpsweep compare` reads thousands), each
file checked for the shape it must have. TrialFiles.read_hydra_file / read_hydra_data call here.
"""

import functools
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from hpsweep.errors import TrialFileError, unreadable


def read_hydra_file(folder: Path, name: str) -> Any:
    """.hydra/<name> as Hydra saved it for the job: config.yaml (the composed config),
    hydra.yaml (its `hydra` node) or overrides.yaml (a ListConfig of str); TrialFileError
    when it is missing or cannot be used."""
    path, label = folder / name, f".hydra/{name}"
    try:
        text = path.read_bytes().decode()
    except (OSError, UnicodeDecodeError) as e:
        raise TrialFileError(path, unreadable(e), label) from None
    if not text.strip():
        raise TrialFileError(path, "empty", label)
    try:
        loaded = OmegaConf.create(text)
    except (yaml.YAMLError, OmegaConfBaseException) as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise TrialFileError(path, f"not YAML{where}", label) from None
    return _shaped(loaded, name, path, label, DictConfig, ListConfig)


def read_hydra_data(folder: Path, name: str, keys: tuple[str, ...] | None = None) -> Any:
    """What read_hydra_file reads, as plain dicts, lists and values typed as OmegaConf
    types them, and the same TrialFileError for a file that cannot be used; on libyaml's
    parser, about 20x faster than OmegaConf. `keys`: only these dotted keys (of the `hydra`
    node, in hydra.yaml) are built, in nested dicts as in the file; the rest is parsed, to
    find a damaged file, not built (a hydra.yaml is 7 kB, read for a job number)."""
    path, label = folder / name, f".hydra/{name}"
    try:
        text = path.read_bytes().decode()
    except (OSError, UnicodeDecodeError) as e:
        raise TrialFileError(path, unreadable(e), label) from None
    prefix = "hydra." if name == "hydra.yaml" else ""
    loader = _yaml_loader()(text)
    try:
        node = loader.get_single_node()
        if node is None or keys is None:
            loaded = loader.construct_document(node) if node is not None else None
        else:
            _refuse_duplicate_keys(node)
            loaded = _construct_keys(loader, node, [(prefix + k).split(".") for k in keys])
    except yaml.YAMLError:
        loaded = None
    finally:
        loader.dispose()
    if not isinstance(loaded, dict | list):
        # empty, not YAML, or YAML that OmegaConf reads its own way: its reader says how
        return OmegaConf.to_container(read_hydra_file(folder, name), resolve=False)
    return _shaped(loaded, name, path, label, dict, list)


def _shaped(loaded: Any, name: str, path: Path, label: str, mapping: Any, sequence: Any) -> Any:
    """What each .hydra file must hold, for either reader (OmegaConf's nodes or plain data):
    overrides.yaml a list of strings, hydra.yaml its `hydra:` mapping, config.yaml a mapping."""
    if name == "overrides.yaml":
        if not isinstance(loaded, sequence) or not all(isinstance(o, str) for o in loaded):
            raise TrialFileError(path, "not a list of overrides", label)
        return loaded
    if name == "hydra.yaml":
        node = loaded.get("hydra") if isinstance(loaded, mapping) else None
        if not isinstance(node, mapping):
            raise TrialFileError(path, "no hydra: mapping in it", label)
        return node
    if not isinstance(loaded, mapping):
        raise TrialFileError(path, "not a mapping", label)
    return loaded


@functools.cache
def _yaml_loader() -> Any:
    """PyYAML's C loader when it has one (yaml.__with_libyaml__), with OmegaConf's typing:
    its float rule (1e-3 is a float), no timestamps, a duplicate key refused."""
    from omegaconf._utils import get_yaml_loader

    omegaconf_loader = get_yaml_loader()
    base = yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader

    tags: dict[tuple[Any, str, Any], str] = {}

    class Loader(base):  # type: ignore[valid-type,misc]
        yaml_implicit_resolvers = omegaconf_loader.yaml_implicit_resolvers
        yaml_constructors = omegaconf_loader.yaml_constructors

        # A scalar's tag depends on its text alone (no path resolvers here), and the trials of
        # a sweep repeat nearly every scalar of their hydra.yaml: resolving one by regexes,
        # in Python, was half of the time of reading it.
        def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
            key = (kind, value, implicit)
            tag = tags.get(key)
            if tag is None:
                if len(tags) > 100_000:
                    tags.clear()
                tag = tags[key] = super().resolve(kind, value, implicit)
            return tag

        def descend_resolver(self, current_node: Any, current_index: Any) -> None:
            pass

        def ascend_resolver(self) -> None:
            pass

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            keys = [
                k.value
                for k, _ in node.value
                if k.tag == yaml.resolver.BaseResolver.DEFAULT_SCALAR_TAG
            ]
            if len(keys) != len(set(keys)):
                raise yaml.constructor.ConstructorError(problem="duplicate key")
            return super().construct_mapping(node, deep=deep)

    return Loader


def _refuse_duplicate_keys(node: Any) -> None:
    """What OmegaConf's loader refuses while it builds a mapping, for one not built."""
    stack = [node]
    while stack:
        node = stack.pop()
        if isinstance(node, yaml.MappingNode):
            scalar = yaml.resolver.BaseResolver.DEFAULT_SCALAR_TAG
            keys = [k.value for k, _ in node.value if k.tag == scalar]
            if len(keys) != len(set(keys)):
                raise yaml.constructor.ConstructorError(problem="duplicate key")
            stack += [v for _, v in node.value]
        elif isinstance(node, yaml.SequenceNode):
            stack += node.value


def _construct_keys(loader: Any, node: Any, paths: list[list[str]]) -> Any:
    """The mapping `node` with only the values at `paths` built; a value on the way that is
    no mapping is built whole (a file whose `hydra:` is a list is refused as before)."""
    if not isinstance(node, yaml.MappingNode):
        return loader.construct_document(node)
    built: dict[str, Any] = {}
    for key, value in node.value:
        if key.tag != yaml.resolver.BaseResolver.DEFAULT_SCALAR_TAG:
            continue
        below = [path[1:] for path in paths if path[0] == key.value]
        if not below:
            continue
        if [] in below or not isinstance(value, yaml.MappingNode):
            built[key.value] = loader.construct_object(value, deep=True)
        else:
            built[key.value] = _construct_keys(loader, value, below)
    return built
