"""Shared fixtures.

Store fixtures: ``redis_server`` (a real redis-server for the session), ``redis_url``
(that server, flushed), and ``store`` (an open store, once per backend).
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from riskgate.store import Store, open_store
from support import RedisServer


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    executable = shutil.which("redis-server")
    if executable is None:
        pytest.fail("redis-server not found; install it with: apt-get install redis-server",
                    pytrace=False)  # fmt: skip
    server = RedisServer(tmp_path_factory.mktemp("redis"), executable)
    try:
        server.start()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    with redis_server.client() as client:
        client.flushall()
    return redis_server.url


@pytest.fixture(params=["memory", "redis"])
def store_uri(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return "memory://"
    url: str = request.getfixturevalue("redis_url")
    return url


@pytest.fixture
async def store(store_uri: str) -> AsyncIterator[Store]:
    opened = open_store(store_uri)
    yield opened
    await opened.close()


# Figures that tests measure on real data (bot recall, ...) are worth reading after
# every run, not only when an assertion fails: tests record them, the summary prints.
_REPORT_KEY = pytest.StashKey[list[str]]()


@pytest.fixture
def record_report(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """Record one line for the test report printed at the end of the run."""
    return request.config.stash.setdefault(_REPORT_KEY, []).append


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    lines = config.stash.get(_REPORT_KEY, [])
    if lines:
        terminalreporter.section("riskgate measurements")
        for line in lines:
            terminalreporter.write_line(line)
