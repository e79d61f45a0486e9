"""Settings sections built from plain values (YAML, JSON, ``--set`` overrides) by keyword,
each value checked against the dataclass's type hints. Imports nothing of grace's, so both the
run configuration (``grace.config``) and a model folder's ``encoder_config.json``
(``grace.encoder``) are read by the same rules."""

from __future__ import annotations

import dataclasses
import math
import types
import typing


class ConfigError(ValueError):
    """A setting that cannot be used: unknown key, bad value, malformed override."""


def coerce(value, hint, where: str):
    """``value`` as the type ``hint`` says, or a ConfigError naming ``where``."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return coerce(value, option, where)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} fits no type.")
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}.")
        return [coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if hint is dict:
        if isinstance(value, dict) and all(isinstance(key, str) for key in value):
            return dict(value)
        raise ConfigError(f"{where}: expected a mapping of names to values, got {value!r}.")
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint in (int, float) and not isinstance(value, bool):
        try:
            number = float(value) if isinstance(value, str) else value
        except ValueError:
            number = None
        if isinstance(number, float) and not math.isfinite(number):
            raise ConfigError(f"{where}: expected a finite number, got {value!r}.")
        if isinstance(number, (int, float)):
            if hint is float:
                return float(number)
            if float(number).is_integer():
                return int(number)
    elif hint is str and isinstance(value, str):
        return value
    raise ConfigError(f"{where}: expected {hint.__name__}, got {value!r}.")


def build_section(cls: type, values: dict, where: str):
    """A section dataclass from a dict, by keyword, every value type-checked."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping of settings, got {values!r}.")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ConfigError(f"Unknown configuration keys {unknown} in {where}; valid keys: {names}.")
    kwargs = {k: coerce(v, hints[k], f"{where}.{k}") for k, v in values.items()}
    try:
        return cls(**kwargs)
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from error
    except ValueError as error:  # sections defined elsewhere (rewards, encoder) raise these
        raise ConfigError(f"{where}: {error}") from error
