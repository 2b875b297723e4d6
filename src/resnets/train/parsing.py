"""Reading configuration layers: YAML files (safe loader, bounded size), `--set key.sub=value`
assignments, merging them, and building typed dataclasses from the result.

Nothing here knows the training schema (train/config.py): these turn untrusted nested mappings into
checked values for any dataclass, naming the offending key in every error.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from resnets.errors import ConfigError


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """`update` over `base`, recursively for nested mappings (model.kwargs included: a layer that sets
    one builder option keeps the others)."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_assignment(text: str) -> dict[str, Any]:
    """'optim.lr=0.05' → {'optim': {'lr': 0.05}}; the value is read as YAML (numbers, booleans, lists)
    through the same checks as a config file's (`parse_yaml`); text that is not YAML stays a string."""
    if "=" not in text:
        raise ConfigError(f"--set expects key.sub=value, got {text!r:.200}")
    key, raw = text.split("=", 1)
    where = f"--set {key.strip()[:100]}"
    try:
        value = parse_yaml(raw, where) if raw.strip() else None
    except _NotYaml:
        value = raw
    out: dict[str, Any] = {}
    node = out
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


class _NotYaml(ConfigError):
    """Text YAML's grammar rejects (an unquoted --set value is then taken as a string)."""


MAX_CONFIG_BYTES = 2**20  # config files are a few KB
MAX_CONFIG_NODES = 10_000  # values in a config file, every alias expanded (a "billion laughs" has 10^9)
MAX_CONFIG_DEPTH = 32


def parse_yaml(text: str, source: str) -> Any:
    """YAML text read with the safe loader only (no tags that build Python objects) and refused,
    naming `source`, if larger, deeper or (aliases expanded) bigger than a config can be, or if a
    scalar cannot be built (a 5,000-digit int, the date 2001-13-45, `!!float abc`). The one path by
    which every config value arrives: files and --set alike."""
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{source} is larger than {MAX_CONFIG_BYTES:,} bytes; is it a config?")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise _NotYaml(f"{source} is not valid YAML: {err}") from None
    except RecursionError:
        raise ConfigError(f"{source} is nested too deeply to be a config") from None
    except (ValueError, TypeError, AttributeError, OverflowError) as err:  # PyYAML's scalar constructors
        raise ConfigError(
            f"{source}: a value cannot be read ({type(err).__name__}: {str(err)[:200]})"
        ) from None
    _check_size(data, source)
    return data


def load_yaml(path: str | Path) -> dict[str, Any]:
    """A config file, read by `parse_yaml`; it must hold a mapping of sections."""
    path = Path(path)
    source = f"config file {path}"
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{source} is larger than {MAX_CONFIG_BYTES:,} bytes; is it a config?")
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{source} does not exist") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{source} cannot be read as UTF-8 text: {err}") from None
    try:
        data = parse_yaml(text, source)
    except _NotYaml as err:
        raise ConfigError(str(err)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source} must hold a mapping of sections, got {type(data).__name__}")
    return data


def _check_size(data: Any, source: str) -> None:
    """Refuse cycles, nesting deeper than MAX_CONFIG_DEPTH and more than MAX_CONFIG_NODES values with
    aliases expanded: merging, validating and printing a config walk it as if it were a tree."""
    sizes: dict[int, int] = {}  # id → expanded size of an already measured container

    def size(node: Any, depth: int, open_ids: set[int]) -> int:
        if not isinstance(node, dict | list):
            return 1
        if id(node) in sizes:
            return sizes[id(node)]
        if id(node) in open_ids:
            raise ConfigError(f"{source}: an alias refers to itself; a config must be a tree")
        if depth > MAX_CONFIG_DEPTH:
            raise ConfigError(f"{source} is nested more than {MAX_CONFIG_DEPTH} levels deep")
        open_ids.add(id(node))
        total = 1
        for child in (*node.keys(), *node.values()) if isinstance(node, dict) else node:
            total += size(child, depth + 1, open_ids)
            if total > MAX_CONFIG_NODES:
                raise ConfigError(
                    f"{source} holds more than {MAX_CONFIG_NODES:,} values once its aliases are "
                    "expanded; a config is much smaller"
                )
        open_ids.discard(id(node))
        sizes[id(node)] = total
        return total

    size(data, 0, set())


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check and convert `value` to the annotated type `hint`; ConfigError names `key` on failure."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0])
    if hint is Any:
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be true or false, got {_shown(value)}")
    if hint is int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**63:
            return value
        raise ConfigError(f"{key} must be an integer within ±2^63, got {_shown(value)}")
    if hint is float:
        # YAML 1.1 reads 1e-3 (no dot) as a string; inf and nan would poison training silently.
        number = None
        if isinstance(value, int | float | str) and not isinstance(value, bool):
            try:
                number = float(value)
            except (ValueError, OverflowError):
                number = None
        if number is not None and math.isfinite(number):
            return number
        raise ConfigError(
            f"{key} must be a{' finite' if number is not None else ''} number, got {_shown(value)}"
        )
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key} must be a string, got {_shown(value)}")
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key} must be a list, got {_shown(value)}")
        args = typing.get_args(hint)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{key} must have {len(args)} items, got {_shown(value)}")
            return tuple(_coerce(v, a, key) for v, a in zip(value, args, strict=True))
        return [_coerce(v, args[0], key) for v in value] if args else list(value)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key} must be a mapping, got {_shown(value)}")
        return dict(value)
    raise ConfigError(f"{key}: unsupported type {hint}")


def _shown(value: Any, limit: int = 80) -> str:
    """`value` for an error message, cut to `limit` characters (a value may be megabytes long)."""
    if isinstance(value, int) and value.bit_length() > 3 * limit:  # repr of a 5,000-digit int raises
        return f"an int of about {int(value.bit_length() * 0.30103):,} digits"
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def build_dataclass(cls: type, data: Mapping[str, Any], prefix: str = "") -> Any:
    """An instance of dataclass `cls` from an untrusted mapping: every key known, every value of its
    annotated type (nested dataclasses from nested mappings); errors name the key as `prefix`+key."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        raise ConfigError(
            f"unknown config key '{prefix}{unknown[0]}'; allowed keys under "
            f"{prefix.rstrip('.') or 'the top level'}: "
            f"{', '.join(names)}"
        )
    kwargs = {}
    for name in names:
        if name not in data:
            continue
        hint, value = hints[name], data[name]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, Mapping):
                raise ConfigError(
                    f"{prefix}{name} must be a mapping of "
                    f"{', '.join(f.name for f in dataclasses.fields(hint))}"
                )
            kwargs[name] = build_dataclass(hint, value, f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(value, hint, f"{prefix}{name}")
    return cls(**kwargs)
