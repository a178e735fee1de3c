"""Shared fixtures.

Store fixtures: ``redis_server`` (a real redis-server for the session), ``redis_url``
(that server, flushed), ``redis_cluster`` and ``cluster_url`` (a real 3-primary Redis
Cluster with a replica each, the same way), and ``store`` (an open store, once per
backend: memory, Redis, Redis Cluster).
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from riskgate.store import Store, open_store
from support import RedisCluster, RedisServer


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


def redis_command(name: str) -> str:
    """The path of a Debian redis command, or fail saying how to install it."""
    executable = shutil.which(name)
    if executable is None:
        package = "redis-server" if name == "redis-server" else "redis-tools"
        pytest.fail(f"{name} not found; install it with: apt-get install {package}",
                    pytrace=False)
    return executable


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"), redis_command("redis-server"))
    try:
        server.start()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    yield server
    server.stop()


def start_cluster(directory: Path) -> RedisCluster:
    """A running 3-primary, 3-replica cluster in ``directory``; fails the test if not."""
    cluster = RedisCluster(directory, redis_command("redis-server"), redis_command("redis-cli"))
    try:
        cluster.start()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    return cluster


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    cluster = start_cluster(tmp_path_factory.mktemp("cluster"))
    yield cluster
    cluster.stop()


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[RedisCluster]:
    """A cluster for one test alone: for tests that kill its nodes."""
    cluster = start_cluster(tmp_path / "cluster")
    yield cluster
    cluster.stop()


@pytest.fixture
def cluster_url(redis_cluster: RedisCluster) -> str:
    redis_cluster.flush()
    return redis_cluster.url


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    with redis_server.client() as client:
        client.flushall()
    return redis_server.url


@pytest.fixture(params=["memory", "redis", "cluster"])
def store_uri(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return "memory://"
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


@pytest.fixture(params=["redis", "cluster"])
def shared_url(request: pytest.FixtureRequest) -> str:
    """The URL of each shared store: a Redis, a Redis Cluster (both flushed)."""
    url: str = request.getfixturevalue(f"{request.param}_url")
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
