"""Helpers for the data-layer tests: the real servers on this machine and a loop to await on.

A missing service skips locally and fails in CI (CI=true), with the reason."""

from __future__ import annotations

import asyncio
import os
import socket

import pytest

PG_URL = os.environ.get("CELLO_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
MYSQL_URL = os.environ.get("CELLO_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test")
REDIS_URL = os.environ.get("CELLO_TEST_REDIS_URL", "redis://127.0.0.1:6379")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def require(port: int, name: str) -> None:
    if port_open(port):
        return
    reason = f"{name} is not running on 127.0.0.1:{port}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI must start it: .ci/services.sh)")
    pytest.skip(reason)


def missing(reason: str) -> None:
    """A binary or service the test needs is not there: skip locally, fail in CI."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI must provide it)")
    pytest.skip(reason)


def url_for(backend: str, tmp_path) -> str:
    if backend == "postgresql":
        require(5432, "PostgreSQL")
        return PG_URL
    if backend == "mysql":
        require(3306, "MariaDB")
        return MYSQL_URL
    return f"sqlite://{tmp_path}/test.db"


class Loop:
    """One asyncio loop for a module: ``loop.run(coro)``."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()

    def run(self, coro, timeout: float = 30.0):
        return self.loop.run_until_complete(asyncio.wait_for(coro, timeout))

    def close(self) -> None:
        self.loop.close()
