"""A table (CSV or Parquet, read with pandas) as in-memory Splits: numeric features
standardized with the training rows' statistics, categorical ones one-hot encoded, the target
column(s) as class labels or regression values.

    data=table data.path=houses.csv data.target=price           regression, 1 target
    data=table data.path=iris.csv data.target=species           3 classes from the names
"""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from hpsweep.data._splits import Split, Splits
from hpsweep.data._task import TASK_KINDS
from hpsweep.errors import ConfigError

TABLE_SUFFIXES = (".csv", ".tsv", ".parquet", ".pq")


def load_table(
    path: str,
    target: str | Sequence[str],
    features: Sequence[str] | None = None,
    categorical: Sequence[str] | None = None,
    task: str | None = None,
    val_path: str | None = None,
    test_path: str | None = None,
    val_size: float = 0.2,
    test_size: float = 0.2,
    split_seed: int = 0,
    standardize: bool = True,
    device: str | torch.device = "cpu",
) -> Splits:
    """Train, validation and test rows: from `val_path` and `test_path` when given, else drawn
    from `path`'s rows (fractions `val_size` and `test_size`, by `split_seed` only, so every
    trial of a sweep validates on the same rows).

    `features`: the input columns (None: all but the targets); `categorical`: those to one-hot
    encode (None: the non-numeric ones); `task`: one of data._task's kinds, or None to follow
    the target: text, bool or integer columns are classes, float columns regression targets.
    """
    import pandas as pd  # only for tables: ~0.3 s to import

    targets = [target] if isinstance(target, str) else list(target)
    if task is not None and task not in TASK_KINDS:
        raise ConfigError("data.task", task, f"must be one of {', '.join(TASK_KINDS)}, or null")
    frames = _split_frames(path, val_path, test_path, val_size, test_size, split_seed)
    columns = list(frames["train"].columns)
    for name in targets:
        if name not in columns:
            raise ConfigError("data.target", name, f"no such column; {path} has {_list(columns)}")
    inputs = list(features) if features is not None else [c for c in columns if c not in targets]
    for name in inputs:
        if name not in columns:
            raise ConfigError("data.features", name, f"no such column; {path} has {_list(columns)}")
    if not inputs:
        raise ConfigError("data.features", features, "no input columns left beside the target")
    for split, frame in frames.items():
        missing = [c for c in [*inputs, *targets] if c not in frame.columns]
        if missing:
            raise ConfigError("data", split, f"the {split} rows have no column {_list(missing)}")
        _check_complete(frame[[*inputs, *targets]], split)

    kind = task or _target_kind(frames["train"], targets)
    y, num_classes = _targets(frames, targets, kind)
    x = _features(frames, inputs, categorical, standardize, pd)
    train, val, test = (Split(x[s].to(device), y[s].to(device)) for s in ("train", "val", "test"))
    return Splits(train, val, test, task=kind, num_classes=num_classes)


def _split_frames(
    path: str,
    val_path: str | None,
    test_path: str | None,
    val_size: float,
    test_size: float,
    split_seed: int,
) -> dict[str, Any]:
    main = _read(path, "data.path")
    frames: dict[str, Any] = {"val": None if val_path is None else _read(val_path, "data.val_path")}
    frames["test"] = None if test_path is None else _read(test_path, "data.test_path")
    drawn = [s for s in ("val", "test") if frames[s] is None]
    sizes = {"val": val_size, "test": test_size}
    for split in drawn:
        if not 0 < sizes[split] < 1:
            raise ConfigError(f"data.{split}_size", sizes[split], "must be a fraction in (0, 1)")
    if sum(sizes[s] for s in drawn) >= 1:
        raise ConfigError("data.val_size", val_size, "val_size + test_size must be < 1")
    order = torch.randperm(len(main), generator=torch.Generator().manual_seed(split_seed))
    start = 0
    for split in drawn:
        count = round(sizes[split] * len(main))
        frames[split] = main.iloc[order[start : start + count].numpy()]
        start += count
    frames = {"train": main.iloc[order[start:].numpy()], **frames}
    for split, frame in frames.items():
        if len(frame) == 0:
            raise ConfigError("data", split, f"the {split} split has no rows ({path}: {len(main)})")
    return frames


def _read(path: str, key: str) -> Any:
    import pandas as pd

    file = Path(path).expanduser()
    if file.suffix.lower() not in TABLE_SUFFIXES:
        raise ConfigError(key, path, f"must be a table file: {', '.join(TABLE_SUFFIXES)}")
    if not file.is_file():
        raise ConfigError(key, path, f"no such file (looked in {file.absolute().parent})")
    try:
        if file.suffix.lower() in (".parquet", ".pq"):
            return pd.read_parquet(file)
        return pd.read_csv(file, sep="\t" if file.suffix.lower() == ".tsv" else ",")
    except ImportError as e:
        raise ConfigError(
            key, path, f"reading Parquet needs pyarrow: pip install pyarrow ({e})"
        ) from None
    except (OSError, ValueError) as e:  # pandas' parser errors are ValueErrors
        reason = str(e).replace("\n", " ")
        raise ConfigError(key, path, f"cannot be read as a table: {reason}") from None


def _check_complete(frame: Any, split: str) -> None:
    gaps = frame.isna().sum()
    gaps = gaps[gaps > 0]
    if len(gaps):
        column, count = gaps.index[0], int(gaps.iloc[0])
        raise ConfigError(
            "data",
            split,
            f"column {column!r} has {count} empty cells in the {split} rows; "
            "fill or drop them first",
        )


def _target_kind(train: Any, targets: list[str]) -> str:
    numeric = [_is_numeric(train[c]) for c in targets]
    floating = [train[c].dtype.kind == "f" for c in targets]
    if len(targets) == 1:
        return "regression" if floating[0] else "multiclass"
    if not all(numeric):
        text = targets[numeric.index(False)]
        raise ConfigError(
            "data.target",
            text,
            "with several target columns each must be numeric (0/1 labels "
            "or regression values); this one holds text",
        )
    binary = all(set(train[c].unique()) <= {0, 1} for c in targets)
    return "multilabel" if binary else "regression"


def _is_numeric(column: Any) -> bool:
    return column.dtype.kind in "biuf"


def _targets(
    frames: dict[str, Any], targets: list[str], kind: str
) -> tuple[dict[str, torch.Tensor], int | None]:
    """Each split's targets as the task wants them, and the class count (multiclass)."""
    if kind in ("multiclass", "binary"):
        column = targets[0]
        if len(targets) > 1:
            raise ConfigError("data.target", targets, f"a {kind} task has one target column")
        # classes from every split's values, sorted: a class seen only in validation still has
        # its logit, and the codes do not depend on the row order
        classes = sorted({v for f in frames.values() for v in f[column].unique()}, key=_order)
        code = {v: i for i, v in enumerate(classes)}
        labels = {
            s: torch.tensor([code[v] for v in f[column]], dtype=torch.long)
            for s, f in frames.items()
        }
        if kind == "multiclass":
            return labels, len(classes)
        if len(classes) != 2:
            raise ConfigError(
                "data.task", kind, f"column {column!r} holds {len(classes)} classes, not 2"
            )
        # the second class in sorted order is the positive one (1, True, "yes" after "no")
        return {s: v.float().unsqueeze(1) for s, v in labels.items()}, None
    y = {}
    for split, frame in frames.items():
        for column in targets:
            if not _is_numeric(frame[column]):
                example = next(v for v in frame[column] if not _is_number(v))
                raise ConfigError(
                    "data.target",
                    column,
                    f"a {kind} target must be numeric; the {split} rows hold {example!r}",
                )
        y[split] = torch.tensor(frame[targets].to_numpy(dtype="float32"))
    return y, None


def _order(value: Any) -> tuple[str, Any]:
    return (type(value).__name__, value)  # numbers and text apart, each in its own order


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _features(
    frames: dict[str, Any],
    inputs: list[str],
    categorical: Sequence[str] | None,
    standardize: bool,
    pd: Any,
) -> dict[str, torch.Tensor]:
    train = frames["train"]
    if categorical is None:
        categorical = [c for c in inputs if not _is_numeric(train[c])]
    for name in categorical:
        if name not in inputs:
            raise ConfigError("data.categorical", name, f"is not an input column ({_list(inputs)})")
    numeric = [c for c in inputs if c not in categorical]
    for name in numeric:
        if not _is_numeric(train[name]):
            example = next(v for v in train[name] if not _is_number(v))
            raise ConfigError(
                "data.categorical",
                list(categorical),
                f"column {name!r} holds text ({example!r}): list it under data.categorical, or "
                "leave data.categorical null to one-hot encode every text column",
            )
    # one-hot columns from the training rows' categories; a category seen only later is all 0
    categories = {c: sorted(map(str, train[c].unique())) for c in categorical}
    x = {}
    for split, frame in frames.items():
        parts = []
        if numeric:
            parts.append(torch.tensor(frame[numeric].to_numpy(dtype="float32")))
        for column, values in categories.items():
            cells = frame[column].astype(str)
            parts.append(torch.tensor(pd.get_dummies(cells).reindex(columns=values, fill_value=0)
                                      .to_numpy(dtype="float32")))  # fmt: skip
        x[split] = torch.cat(parts, dim=1)
    if standardize and numeric:
        width = len(numeric)  # the numeric columns come first; one-hot columns stay 0/1
        mean = x["train"][:, :width].mean(0)
        std = x["train"][:, :width].std(0).nan_to_num(1.0).clamp_min(1e-12)
        std = torch.where(std > 1e-12, std, torch.ones_like(std))  # a constant column stays 0
        for split in x:
            x[split][:, :width] = (x[split][:, :width] - mean) / std
    return x


def _list(names: Sequence[Any]) -> str:
    return ", ".join(map(str, names[:20])) + (
        f", ... ({len(names)} in all)" if len(names) > 20 else ""
    )
