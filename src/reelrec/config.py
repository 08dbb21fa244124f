"""One config system for every stage: typed dataclasses, YAML as their saved form, and
``--a.b=c`` command-line overrides that reject unknown keys.

A config is a tree of ``@dataclass`` instances. :func:`apply_overrides` walks the tree by dotted
path, parses the string value by the field's declared type (``int``, ``float``, ``bool``, ``str``,
``list[int]``/``list[str]``/``list[float]``, optional variants) and raises :class:`ConfigError`
naming the key and listing the valid ones when a key does not exist. :func:`to_yaml` /
:func:`from_yaml` round-trip a config exactly, so the resolved config saved beside a run reloads
into the same object.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config key or value is invalid; the message names the key."""


def check_section(check: Any, section: Any) -> None:
    """Run a model file's ``check_*_config(section)`` and report its ValueError as a
    :class:`ConfigError` (the message already names the key).

    Raises:
        ConfigError: the section breaks one of its rules.
    """
    try:
        check(section)
    except ConfigError:
        raise
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _parse_scalar(text: str, tp: Any, key: str) -> Any:
    if tp is bool:
        low = text.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{key}: expected a boolean (true/false), got {text!r}")
    if tp is int:
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"{key}: expected an integer, got {text!r}") from None
    if tp is float:
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"{key}: expected a number, got {text!r}") from None
    if tp is str:
        return text
    raise ConfigError(f"{key}: cannot parse a value of type {tp!r}")


def _parse_value(text: str, tp: Any, key: str) -> Any:
    inner, optional = _unwrap_optional(tp)
    if optional and text.strip().lower() in ("none", "null", ""):
        return None
    origin = typing.get_origin(inner)
    if origin in (list, tuple, Sequence):
        (elem,) = typing.get_args(inner)[:1] or (str,)
        items = [t for t in text.strip().strip("[]").split(",") if t.strip()]
        return [_parse_scalar(t.strip(), elem, key) for t in items]
    return _parse_scalar(text, inner, key)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Coerce a YAML-loaded value to the declared type, raising ConfigError on mismatch."""
    inner, optional = _unwrap_optional(tp)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{key}: null is not allowed here")
    if dataclasses.is_dataclass(inner):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
        return from_dict(inner, value, prefix=f"{key}.")
    origin = typing.get_origin(inner)
    if origin in (list, tuple, Sequence):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (elem,) = typing.get_args(inner)[:1] or (str,)
        return [_coerce(v, elem, key) for v in value]
    if inner is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if inner is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if inner is bool and isinstance(value, bool):
        return value
    if inner is str and isinstance(value, str):
        return value
    if isinstance(value, str):
        return _parse_value(value, tp, key)
    raise ConfigError(f"{key}: expected {getattr(inner, '__name__', inner)}, got {value!r}")


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from a plain mapping (e.g. loaded YAML).

    Raises:
        ConfigError: a key is not a field of ``cls`` (message lists the valid keys) or a value
            has the wrong type.
    """
    hints = _field_types(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            raise ConfigError(f"unknown config key {prefix}{key!r}; valid keys: {', '.join(names)}")
        kwargs[key] = _coerce(value, hints[key], f"{prefix}{key}")
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain-data form of a dataclass config (nested dicts, lists, scalars)."""
    return dataclasses.asdict(cfg)


def differences(old: Any, new: Any) -> list[str]:
    """Dotted keys whose values differ between two configs of one class, as ``key (old -> new)``."""

    def flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in d.items():
            if isinstance(v, dict):
                out.update(flat(v, f"{prefix}{k}."))
            else:
                out[f"{prefix}{k}"] = v
        return out

    a, b = flat(to_dict(old)), flat(to_dict(new))
    return [f"{k} ({a[k]!r} -> {b[k]!r})" for k in a if a[k] != b[k]]


def to_yaml(cfg: Any, path: str | Path | None = None) -> str:
    """Serialise ``cfg``; when ``path`` is given also write it atomically."""
    text = yaml.safe_dump(to_dict(cfg), sort_keys=False, allow_unicode=True)
    if path is not None:
        from reelrec.io import atomic_write_text

        atomic_write_text(Path(path), text)
    return text


def from_yaml(cls: type[T], path: str | Path) -> T:
    """Load a YAML file saved by :func:`to_yaml` into ``cls``.

    Raises:
        ConfigError: the file is not a mapping, or has unknown keys / wrong types (names the file).
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        one_line = " ".join(str(exc).split())
        raise ConfigError(f"{path}: not valid YAML: {one_line}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    try:
        return from_dict(cls, data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def apply_overrides(cfg: T, overrides: Sequence[str]) -> T:
    """Return a copy of ``cfg`` with ``--a.b=c`` overrides applied.

    Args:
        cfg: a dataclass config tree.
        overrides: strings of the form ``--a.b=c`` (or ``a.b=c``).

    Raises:
        ConfigError: malformed override, unknown key (lists the valid keys at that level) or a
            value that does not parse as the field's type.
    """
    cfg = _deepcopy(cfg)
    for raw in overrides:
        text = raw[2:] if raw.startswith("--") else raw
        if "=" not in text:
            raise ConfigError(f"override {raw!r} must look like --a.b=value")
        path, value = text.split("=", 1)
        parts = path.split(".")
        node = cfg
        for i, part in enumerate(parts):
            if not dataclasses.is_dataclass(node):
                raise ConfigError(f"{'.'.join(parts[:i])} is not a section; cannot set {path}")
            names = [f.name for f in dataclasses.fields(node)]
            key = part.replace("-", "_")
            if key not in names:
                where = ".".join(parts[:i]) or "the top level"
                raise ConfigError(
                    f"unknown config key {path!r} ({part!r} is not in {where}; "
                    f"valid keys: {', '.join(names)})"
                )
            if i == len(parts) - 1:
                tp = _field_types(type(node))[key]
                if dataclasses.is_dataclass(_unwrap_optional(tp)[0]):
                    raise ConfigError(f"{path} is a section; set one of its keys instead")
                setattr(node, key, _parse_value(value, tp, path))
            else:
                node = getattr(node, key)
    return cfg


def _deepcopy(cfg: T) -> T:
    import copy

    return copy.deepcopy(cfg)
