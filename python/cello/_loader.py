"""Find the app the ``cello`` command serves: ``APP`` is ``module:attr``, ``module`` (attr ``app``),
``path/to/file.py[:attr]``, or, when omitted, ``[tool.cello] app`` in ./pyproject.toml."""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import sys
from typing import Any


class AppNotFound(Exception):
    """No APP given and none configured: a usage error (exit 2)."""


class AppLoadError(Exception):
    """The app could not be imported or is not an App: the app failed to start (exit 3)."""


def spec_from_pyproject(path: str = "pyproject.toml") -> str | None:
    """``[tool.cello] app = "module:attr"`` from ``path``, or None."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError:
        return None
    try:
        import tomllib  # 3.11+
    except ImportError:
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ImportError:
            tomllib = None  # type: ignore[assignment]
    if tomllib is not None:
        try:
            data = tomllib.loads(raw.decode())
        except (ValueError, UnicodeDecodeError) as exc:
            raise AppLoadError(f"{path}: {exc}") from None
        value = data.get("tool", {}).get("cello", {}).get("app")
        return str(value) if value else None
    return _tiny_toml_app(raw.decode(errors="replace"))


def _tiny_toml_app(text: str) -> str | None:
    """Python 3.10 without tomli: read ``app = "..."`` in the ``[tool.cello]`` table only."""
    in_table = False
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("["):
            in_table = line.replace(" ", "") == "[tool.cello]"
        elif in_table:
            m = re.match(r"""app\s*=\s*(["'])(.*?)\1""", line)
            if m:
                return m.group(2)
    return None


def resolve_spec(spec: str | None) -> str:
    if spec:
        return spec
    found = spec_from_pyproject()
    if not found:
        raise AppNotFound('no APP given and no `[tool.cello] app = "module:attr"` in ./pyproject.toml')
    return found


def _is_path(target: str) -> bool:
    return target.endswith(".py") or os.sep in target or "/" in target


def load_app(spec: str) -> Any:
    """Import ``spec`` and return the App; cwd is importable first, as with uvicorn."""
    from .app import App

    _, obj = load_object(spec)
    if not isinstance(obj, App):
        raise AppLoadError(f"{spec} is not a cello App (got {type(obj).__name__})")
    return obj


def load_object(spec: str, default_attr: str | None = "app") -> tuple[Any, Any]:
    """Import ``module:attr`` (``attr`` defaults to ``default_attr``; None: the module itself)
    and return ``(module, object)``."""
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    target, _, attr = spec.partition(":")
    attr = attr or default_attr or ""
    try:
        module = _import_file(target) if _is_path(target) else importlib.import_module(target)
    except AppLoadError:
        raise
    except SyntaxError as exc:
        where = f"{exc.filename}:{exc.lineno}" if exc.filename else target
        raise AppLoadError(f"cannot import {target!r}: SyntaxError at {where}: {exc.msg}") from exc
    except ModuleNotFoundError as exc:
        raise AppLoadError(f"cannot import {target!r}: {exc}") from exc
    except BaseException as exc:  # any failure while importing is the app's
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise AppLoadError(f"cannot import {target!r}: {type(exc).__name__}: {exc}") from exc
    obj: Any = module
    for part in filter(None, attr.split(".")):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise AppLoadError(f"module {module.__name__!r} has no attribute {attr!r}") from None
    return module, obj


def _import_file(path: str) -> Any:
    full = os.path.abspath(path)
    if not os.path.isfile(full):
        raise AppLoadError(f"no such file: {path}")
    # A file inside a package (directories with __init__.py) is imported by its dotted name, so
    # its relative imports work: webapp/main.py -> webapp.main with webapp's parent importable.
    directory, parts = os.path.dirname(full), [os.path.splitext(os.path.basename(full))[0]]
    while os.path.isfile(os.path.join(directory, "__init__.py")):
        parts.insert(0, os.path.basename(directory))
        directory = os.path.dirname(directory)
    if len(parts) > 1:
        if directory not in sys.path:
            sys.path.insert(0, directory)
        return importlib.import_module(".".join(parts))
    # A lone file: its directory is importable, so the app can import its sibling modules.
    if directory not in sys.path:
        sys.path.insert(0, directory)
    name = os.path.splitext(os.path.basename(full))[0]
    spec = importlib.util.spec_from_file_location(name, full)
    if spec is None or spec.loader is None:
        raise AppLoadError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # so dataclasses, pickle and friends can find it
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module
