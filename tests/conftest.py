"""Shared fixtures.

Store fixtures: ``redis_server`` (a real redis-server for the session), ``redis_url``
(that server, flushed), and ``store`` (an open store, once per backend).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from riskgate.store import Store, open_store
from support import free_port, stop_process


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


class RedisServer:
    """A throwaway ``redis-server`` on a free local port, stoppable and pausable."""

    def __init__(self, executable: str, directory: Path) -> None:
        self.executable = executable
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.unix_socket = directory / "redis.sock"
        self._process: subprocess.Popen[bytes] | None = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2, decode_responses=True)

    def start(self) -> None:
        log = (self.directory / "redis.log").open("ab")
        self._process = subprocess.Popen(
            [self.executable, "--port", str(self.port), "--bind", "127.0.0.1",
             "--unixsocket", str(self.unix_socket),
             "--save", "", "--appendonly", "no", "--dir", str(self.directory)],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + 10
        while True:
            try:
                with redis.Redis(port=self.port, socket_timeout=0.2) as probe:
                    probe.ping()
                return
            except redis.ConnectionError:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    log_text = (self.directory / "redis.log").read_text(errors="replace")
                    pytest.fail(f"redis-server did not answer PING:\n{log_text}", pytrace=False)
                time.sleep(0.02)

    def stop(self) -> None:
        if self._process is None:
            return
        stop_process(self._process, timeout=5)
        self._process = None

    @contextlib.contextmanager
    def stopped(self) -> Iterator[None]:
        """Redis is down inside the block, and back up, empty, after it."""
        self.stop()
        try:
            yield
        finally:
            self.start()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Redis accepts connections but never answers inside the block (SIGSTOP)."""
        assert self._process is not None
        os.kill(self._process.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(self._process.pid, signal.SIGCONT)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    executable = shutil.which("redis-server")
    if executable is None:
        pytest.fail("redis-server not found; install it with: apt-get install redis-server",
                    pytrace=False)  # fmt: skip
    server = RedisServer(executable, tmp_path_factory.mktemp("redis"))
    server.start()
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
