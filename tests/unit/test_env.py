"""``CELLO_*`` variables are declared once (``cello_config::env``): every name the product
code uses is in the table, every entry is used, ``docs/env.md`` lists them all, and the
operator's queue-binding contract fits the family entry."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from cello import _env

ROOT = Path(__file__).resolve().parents[2]
# Product code only: tests, benchmarks and CI scripts have their own CELLO_TEST_*/CELLO_BENCH_* knobs.
PRODUCT = ["python/cello", "python/src", "server/src", "operator/src", "config/src"]
NAME = re.compile(r"\bCELLO_[A-Z0-9_]*[A-Z0-9]\b")


def _used_names() -> dict[str, list[str]]:
    used: dict[str, list[str]] = {}
    for d in PRODUCT:
        for path in (ROOT / d).rglob("*"):
            if path.suffix not in (".py", ".rs") or path.name == "env.rs":
                continue
            for name in NAME.findall(path.read_text(encoding="utf-8")):
                used.setdefault(name, []).append(str(path.relative_to(ROOT)))
    return used


def test_every_used_name_is_declared():
    undeclared = {n: where for n, where in _used_names().items() if not _env.declared(n)}
    assert not undeclared, f"declare these in config/src/env.rs: {undeclared}"


def test_every_declared_name_is_used():
    used = _used_names()
    code = "".join(
        (ROOT / p).read_text(encoding="utf-8") for p in ("python/cello/bindings.py", "operator/src/resources/queues.rs")
    )
    rust_code = "".join(
        p.read_text(encoding="utf-8") for d in PRODUCT for p in (ROOT / d).rglob("*.rs") if p.name != "env.rs"
    )
    for name in _env.VARS:
        if "<" in name:  # a family: its prefix is built in code
            assert name.split("<", 1)[0] in code, name
        else:
            rust = f"env::{_env.VARS[name]['rust']}"
            assert name in used or rust in rust_code, f"{name} is declared but nothing reads or sets it"


def test_docs_list_every_variable():
    text = (ROOT / "docs/env.md").read_text(encoding="utf-8")
    for name in _env.VARS:
        assert f"`{name}`" in text, name


def test_queue_contract_names_fit_the_family():
    contract = json.loads((ROOT / "tests/operator/env-contract.json").read_text(encoding="utf-8"))
    names = [e["name"] for q in contract["queues"] for e in q["env"]]
    assert names
    for name in names:
        assert _env.declared(name), name


def test_reading_goes_through_the_table():
    env = {"CELLO_PORT": "9000", "CELLO_DEBUG": "yes", "CELLO_TIMEOUT_GRACEFUL_SHUTDOWN": "2.5", "CELLO_HOST": ""}
    assert _env.get_int("CELLO_PORT", env) == 9000
    assert _env.get_bool("CELLO_DEBUG", env) is True
    assert _env.get_float("CELLO_TIMEOUT_GRACEFUL_SHUTDOWN", env) == 2.5
    assert _env.get("CELLO_HOST", env) is None  # empty is unset
    assert _env.get("CELLO_QUEUE_ORDERS_KIND", {"CELLO_QUEUE_ORDERS_KIND": "kafka"}) == "kafka"
    with pytest.raises(KeyError, match="not declared"):
        _env.get("CELLO_PROT", env)
    with pytest.raises(ValueError, match="expected 1/0"):
        _env.get_bool("CELLO_DEBUG", {"CELLO_DEBUG": "maybe"})
    assert _env.get_bool("CELLO_DEBUG", {"CELLO_DEBUG": "maybe"}, strict=False) is None
    with pytest.raises(ValueError, match="an integer"):
        _env.get_int("CELLO_PORT", {"CELLO_PORT": "x"})
