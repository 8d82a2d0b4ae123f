"""The one place Python reads ``CELLO_*`` variables.

The table (name, type, default, meaning, who reads and sets it) is ``cello_config::env`` in
Rust, read here through ``_cello.env_vars()``; ``docs/env.md`` is generated from it. Reading
a name that is not declared there raises ``KeyError``, so a new variable cannot appear
without an entry (and a line in the docs).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from . import _cello

__all__ = ["VARS", "declared", "get", "get_bool", "get_float", "get_int", "lookup"]

#: name → {name, kind, default, description, read_by, set_by}
VARS: dict[str, dict[str, Any]] = {v["name"]: v for v in json.loads(_cello.env_vars())}
_FAMILIES = tuple(name.split("<", 1)[0] for name in VARS if "<" in name)

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def declared(name: str) -> bool:
    """``name`` is in the table (or belongs to a family such as ``CELLO_QUEUE_<NAME>_<FIELD>``)."""
    return name in VARS or any(name.startswith(p) and len(name) > len(p) for p in _FAMILIES)


def lookup(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The raw value of a declared variable (``os.environ.get`` semantics: ``""`` stays ``""``)."""
    if not declared(name):
        raise KeyError(f"{name} is not declared in cello_config::env (config/src/env.rs)")
    return (os.environ if environ is None else environ).get(name)


def get(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The value of a declared variable, ``None`` when unset or empty."""
    return lookup(name, environ) or None


def get_bool(name: str, environ: Mapping[str, str] | None = None, *, strict: bool = True) -> bool | None:
    """``1/true/yes/on`` → True, ``0/false/no/off`` → False, unset → None; anything else
    raises ``ValueError`` (``strict=False``: None)."""
    raw = get(name, environ)
    value = (raw or "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    if raw is not None and strict:
        raise ValueError(f"{name}={raw!r}: expected 1/0, true/false, yes/no or on/off")
    return None


def _num(name: str, environ: Mapping[str, str] | None, kind: type) -> Any:
    value = get(name, environ)
    if value is None:
        return None
    try:
        return kind(value)
    except ValueError:
        raise ValueError(f"{name} must be {'an integer' if kind is int else 'a number'}, got {value!r}") from None


def get_int(name: str, environ: Mapping[str, str] | None = None) -> int | None:
    return _num(name, environ, int)


def get_float(name: str, environ: Mapping[str, str] | None = None) -> float | None:
    return _num(name, environ, float)
