"""Did every arm keep the reference's budget? The cells' resolved configs, field by field.

An arm is meant to differ from the reference only in the fields its overrides set (and the
reference's own overrides): any other field that differs (a learning rate, an augmentation, the
data) is a confound the report must name. ``config_differences`` compares two resolved configs
(``config.json`` of the cells, nested dicts) over every field except the seed and the overridden
ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

# Fields that differ between cells by design: the seed is the unit of replication.
ALWAYS_IGNORED = ("seed",)


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists and scalars are leaves."""
    flat = {}
    for key, value in config.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{path}."))
        else:
            flat[path] = value
    return flat


def _covered(path: str, overridden: Iterable[str]) -> bool:
    """True when ``path`` is an overridden field or lies under one (``loss.hparams`` covers
    ``loss.hparams.temperature``)."""
    return any(path == o or path.startswith(f"{o}.") for o in overridden)


def config_differences(
    reference: Mapping[str, Any], other: Mapping[str, Any], overridden: Iterable[str] = ()
) -> list[str]:
    """The dotted fields in which ``other`` differs from ``reference`` (present in one only, or
    with another value), except the seed and the ``overridden`` fields, as
    ``"field (reference value -> other value)"``; sorted."""
    overridden = tuple(overridden) + ALWAYS_IGNORED
    a, b = flatten(reference), flatten(other)
    missing = object()
    lines = []
    for path in sorted(set(a) | set(b)):
        if _covered(path, overridden):
            continue
        left, right = a.get(path, missing), b.get(path, missing)
        if left != right:
            shown = ["(absent)" if v is missing else repr(v) for v in (left, right)]
            lines.append(f"{path} ({shown[0]} -> {shown[1]})")
    return lines
