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
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import redis
import uvicorn
from starlette.types import ASGIApp

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
        self.unix_socket = directory / "redis.sock"
        self.log = directory / "redis.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._started_before = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2, decode_responses=True)

    def command_calls(self, command: str) -> int:
        """How often ``command`` was called since the server started (INFO commandstats)."""
        with self.client() as client:
            stats = client.info("commandstats").get(f"cmdstat_{command}", {"calls": 0})
        return int(stats["calls"])

    def start(self, timeout: float = 10) -> None:
        """Start it and wait until it answers PING; RuntimeError with its log if not.

        A port that another process took between :func:`free_port` and this start (any
        client socket may be given it) is replaced by a new one, twice at most; only on
        the first start, as a restart must come back where its clients look for it.
        """
        for attempt in range(3):
            log_start = self.log.stat().st_size if self.log.exists() else 0
            try:
                self._start_once(timeout)
            except RuntimeError:
                taken = "Address already in use" in self.log.read_text(errors="replace")[
                    log_start:]
                if self._started_before or not taken or attempt == 2:
                    raise
                self.port = free_port()
                self.extra_args = tuple(str(free_port()) if before == "--cluster-port"
                                        else arg for before, arg in
                                        zip(("", *self.extra_args), self.extra_args,
                                            strict=False))
                continue
            self._started_before = True
            return

    def _start_once(self, timeout: float) -> None:
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
            except (redis.ConnectionError, redis.TimeoutError):
                # Refused while it starts; silent when something else listens there.
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

    def kill(self) -> None:
        """Kill it without warning (SIGKILL), as a crashed machine would go."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()
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


class RedisCluster:
    """A throwaway Redis Cluster: ``masters`` primaries with ``replicas`` each, on free ports.

    Built as an operator would: ``redis-server --cluster-enabled yes`` per node, then
    ``redis-cli --cluster create``. ``node_timeout_ms`` is how long a silent primary
    goes before its replica takes over (Redis's default is 15 s; tests want it short).
    """

    def __init__(self, directory: Path, executable: str = "redis-server", cli: str = "redis-cli",
                 masters: int = 3, replicas: int = 1, node_timeout_ms: int = 1000) -> None:
        self.cli = cli
        self.masters = masters
        self.replicas = replicas
        self.nodes: list[RedisServer] = []
        for n in range(masters * (1 + replicas)):
            folder = directory / f"node{n}"
            folder.mkdir(parents=True, exist_ok=True)
            # The bus port is named: its default, the port + 10000, may be taken or > 65535.
            self.nodes.append(RedisServer(folder, executable, extra_args=(
                "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-port", str(free_port()),
                "--cluster-node-timeout", str(node_timeout_ms))))

    @property
    def url(self) -> str:
        # Read when used: a node may have moved to a new port when its first was taken.
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes[:2])

    def start(self, timeout: float = 30) -> None:
        """Start every node, create the cluster, wait until every slot is served and every
        replica is in sync; RuntimeError with the reason if not."""
        try:
            for node in self.nodes:
                node.start()
        except RuntimeError:
            self.stop()
            raise
        created = subprocess.run(
            [self.cli, "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in self.nodes),
             "--cluster-replicas", str(self.replicas), "--cluster-yes"],
            capture_output=True, text=True, timeout=timeout, check=False)
        if created.returncode != 0:
            self.stop()
            raise RuntimeError(f"redis-cli --cluster create failed:\n{created.stdout}"
                               f"{created.stderr}")
        self.wait_until_healthy(timeout)

    def wait_until_healthy(self, timeout: float = 30) -> float:
        """Seconds until every live node says the cluster is ok with ``masters``
        primaries each followed by an in-sync replica; RuntimeError after ``timeout``."""
        started = time.monotonic()
        while not self._healthy():
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"the Redis Cluster was not healthy within {timeout} s")
            time.sleep(0.05)
        return time.monotonic() - started

    def _healthy(self) -> bool:
        try:
            primaries = 0
            for node in self.live_nodes():
                with node.client() as client:
                    if client.cluster("info")["cluster_state"] != "ok":
                        return False
                    info = client.info("replication")
                if info["role"] == "master":
                    primaries += 1
                    if info["connected_slaves"] < self.replicas:
                        return False
                elif info["master_link_status"] != "up":
                    return False
            return primaries == self.masters
        except redis.RedisError:
            return False

    def live_nodes(self) -> list[RedisServer]:
        return [node for node in self.nodes if node.pid is not None]

    def primaries(self) -> list[RedisServer]:
        """The live nodes that are primaries right now."""
        found = []
        for node in self.live_nodes():
            with node.client() as client:
                if client.info("replication")["role"] == "master":
                    found.append(node)
        return found

    def flush(self) -> None:
        """Empty every primary (replicas follow) and forget the scripts they loaded."""
        for node in self.primaries():
            with node.client() as client:
                client.flushall()
                client.script_flush()

    def command_calls(self, command: str) -> int:
        """How often ``command`` was called, summed over the primaries (INFO commandstats)."""
        total = 0
        for node in self.primaries():
            with node.client() as client:
                stats = client.info("commandstats").get(f"cmdstat_{command}", {"calls": 0})
                total += int(stats["calls"])
        return total

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def worker_pids(parent: int) -> list[int]:
    """The uvicorn worker processes ``parent`` spawned (not multiprocessing's helpers)."""
    workers = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue  # it exited while we looked
        if int(fields[1]) == parent and b"spawn_main" in cmdline:
            workers.append(int(stat.parent.name))
    return sorted(workers)


@contextlib.contextmanager
def only(worker: int, workers: list[int]) -> Iterator[None]:
    """Every other worker is stopped (SIGSTOP) inside the block, so ``worker`` accepts
    every connection: which worker takes one is otherwise the kernel's choice."""
    others = [pid for pid in workers if pid != worker]
    for pid in others:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in others:
            os.kill(pid, signal.SIGCONT)


@contextlib.contextmanager
def riskgate_serve(config: Path, env: dict[str, str] | None = None, workers: int = 1,
                   executable: Path | None = None
                   ) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``riskgate serve --config CONFIG`` on a free port; yields its base URL and process.

    ``executable``: a ``riskgate`` command to run instead of this interpreter's module
    (an installed wheel's). Stopped with Ctrl-C (SIGINT), as an operator would, so
    shutdown is tested too.
    """
    port = free_port()
    command = [str(executable)] if executable else [sys.executable, "-m", "riskgate"]
    process = subprocess.Popen(
        [*command, "serve", "--config", str(config), "--port", str(port),
         "--workers", str(workers)],
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
        interrupt_process(process)


def interrupt_process(process: subprocess.Popen[Any], timeout: float = 10) -> None:
    """Stop a process with Ctrl-C (SIGINT), as an operator would, so its shutdown runs
    too; killed if it does not stop within ``timeout`` seconds."""
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_process(process)


class ThreadServer:
    """A uvicorn server in a thread, on 127.0.0.1; started and stopped within bounds.

    ``proxy_headers`` is off: uvicorn would otherwise rewrite the peer from
    X-Forwarded-For for 127.0.0.1, and riskgate must apply its own trusted proxies.
    """

    def __init__(self, app: ASGIApp, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = uvicorn.Server(uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", proxy_headers=False,
            lifespan="on"))
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def __enter__(self) -> ThreadServer:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not start on {self.url}")
            time.sleep(0.01)
        return self

    def __exit__(self, *_: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


def write_rules(tmp_path: Path, text: str, name: str = "rules.yaml") -> Path:
    """A rules folder under ``tmp_path`` holding one rule file; the folder's path."""
    folder = tmp_path / "rules"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)
    return folder
