"""Helpers the tests and the benchmarks share: free ports, the shared data folder, real
processes (redis-server, ``riskgate serve``) started and stopped.

It depends on no test framework, so ``bench/`` imports it too (it puts ``tests/`` on
``sys.path``): one free-port rule and one Redis start-up for both.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import redis

#: ``../shared/data``: the real third-party data tests and benches read (never modified).
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def free_port() -> int:
    """A 127.0.0.1 port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def stop_process(process: subprocess.Popen[bytes], timeout: float = 10) -> None:
    """Terminate a process, and kill it if it does not stop within ``timeout`` seconds."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class RedisServer:
    """A throwaway ``redis-server`` on a free local port, stoppable and pausable.

    No persistence; ``extra_args`` are appended to the command line (``--maxmemory`` ...).
    """

    def __init__(self, directory: Path, executable: str = "redis-server",
                 extra_args: tuple[str, ...] = ()) -> None:
        self.executable = executable
        self.directory = directory
        self.extra_args = extra_args
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.unix_socket = directory / "redis.sock"
        self.log = directory / "redis.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2, decode_responses=True)

    def start(self, timeout: float = 10) -> None:
        """Start it and wait until it answers PING; RuntimeError with its log if not."""
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(
                [self.executable, "--port", str(self.port), "--bind", "127.0.0.1",
                 "--unixsocket", str(self.unix_socket),
                 "--save", "", "--appendonly", "no", "--dir", str(self.directory),
                 *self.extra_args],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while True:
            try:
                with redis.Redis(port=self.port, socket_timeout=0.2) as probe:
                    probe.ping()
                return
            except redis.ConnectionError:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    log_text = self.log.read_text(errors="replace")
                    raise RuntimeError(f"redis-server did not answer PING:\n{log_text}"
                                       ) from None
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
        if self._process is None:
            raise RuntimeError("redis-server is not running")
        os.kill(self._process.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(self._process.pid, signal.SIGCONT)


@contextlib.contextmanager
def riskgate_serve(config: Path, env: dict[str, str] | None = None
                   ) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``riskgate serve --config CONFIG`` on a free port; yields its base URL and process.

    Stopped with Ctrl-C (SIGINT), as an operator would, so shutdown is tested too.
    """
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "riskgate", "serve", "--config", str(config), "--port", str(port)],
        env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            if process.poll() is not None:
                raise AssertionError(f"riskgate serve exited with {process.returncode}")
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            raise AssertionError("riskgate serve did not answer /healthz within 10 s")
        yield base, process
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            stop_process(process)


def write_rules(tmp_path: Path, text: str, name: str = "rules.yaml") -> Path:
    """A rules folder under ``tmp_path`` holding one rule file; the folder's path."""
    folder = tmp_path / "rules"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)
    return folder
