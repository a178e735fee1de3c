"""The bench's process harness: servers as child processes, Redis, wrk, CPU accounting.

Everything here runs on 127.0.0.1; what is started is stopped again, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import re
import resource
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BIN = Path(sys.executable).parent

# tests/support.py holds the free-port rule, the Redis start-up and the shared data path
# the tests use. It needs no test framework, so the bench takes them from there rather
# than keep copies that drift apart; this is the one place bench/ reaches into tests/.
sys.path.insert(0, str(ROOT / "tests"))
# Re-exported (``as``) for the other bench modules, which import them from here.
from support import SHARED_DATA as SHARED_DATA  # noqa: E402
from support import RedisServer as RedisServer  # noqa: E402
from support import free_port as free_port  # noqa: E402

#: Other processes using more CPU than this during a run make its figures suspect.
NOISY_CORES = 0.25


class BenchError(Exception):
    """The harness cannot go on (a server or Redis did not start, wrk failed)."""


# --- processes -------------------------------------------------------------------------


def log_tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join("    " + line for line in text.splitlines()[-lines:]) or "    (empty log)"


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of a process so far (Linux /proc); NaN once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child_pids(parent: int) -> list[int]:
    """The processes whose parent is ``parent`` (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == parent:
                found.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue  # it exited while we looked
    return found


@dataclass
class Child:
    """A subprocess with its log file; stopped with SIGTERM, then SIGKILL."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    @classmethod
    def start(cls, name: str, argv: list[str], log: Path, env: dict[str, str] | None = None,
              ) -> Child:
        with log.open("wb") as out:
            # A new session keeps the terminal's Ctrl-C away from the children: the harness
            # catches it and stops them in order, so nothing is left running.
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                    env=env, start_new_session=True)
        return cls(name, proc, log)

    @classmethod
    def listening(cls, name: str, argv: list[str], port: int, log: Path,
                  env: dict[str, str] | None = None) -> Child:
        """Start a server and wait until it listens on ``port``; stopped if it does not."""
        child = cls.start(name, argv, log, env)
        try:
            child.wait_port(port)
        except BenchError:
            child.stop()  # it may still be running, just not listening
            raise
        return child

    def wait_port(self, port: int, tries: int = 150) -> None:
        for _ in range(tries):  # bounded: 15 s at most
            if self.proc.poll() is not None:
                raise BenchError(f"{self.name} exited with status {self.proc.returncode} "
                                 f"before listening:\n{log_tail(self.log)}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                return
            time.sleep(0.1)
        raise BenchError(f"{self.name} did not listen on port {port} within {tries / 10:.0f} s:"
                         f"\n{log_tail(self.log)}")

    def check_alive(self, during: str) -> None:
        """A server that died mid-run leaves the rest of the figures meaningless."""
        if self.proc.poll() is not None:
            raise BenchError(f"{self.name} died during {during}:\n{log_tail(self.log)}")

    def cpu_seconds(self) -> float:
        """CPU time of the process and its children alive now (uvicorn's workers)."""
        return cpu_seconds(self.proc.pid) + sum(
            cpu_seconds(pid) for pid in child_pids(self.proc.pid))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@contextlib.contextmanager
def stopping(children: list[Child]) -> Iterator[None]:
    """Stop every child started inside the block (appended to ``children``) on the way out."""
    try:
        yield
    finally:
        for child in reversed(children):
            child.stop()


def uvicorn_argv(app: str, port: int) -> list[str]:
    """One uvicorn worker serving ``app`` from bench/, set up as fast as it goes."""
    return [str(BIN / "python"), "-m", "uvicorn", app, "--app-dir", str(HERE),
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1", "--loop", "uvloop",
            "--http", "httptools", "--no-access-log", "--log-level", "warning"]


def start_upstream(tmp: Path) -> tuple[Child, int]:
    """The proxy measurements' trivial site (``baselines.upstream_app``), and its port."""
    port = free_port()
    return Child.listening("upstream", uvicorn_argv("baselines:upstream_app", port), port,
                           tmp / "upstream.log"), port


def riskgate_argv(config: Path, port: int, workers: int = 1) -> list[str]:
    return [str(BIN / "riskgate"), "serve", "--config", str(config),
            "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]


def riskgate_config(path: Path, store: str, rules: Path, decision_log: Path | None,
                    extra: str = "") -> Path:
    """A riskgate config on ``rules`` with a fresh secret; ``extra`` is appended YAML."""
    log = "null" if decision_log is None else json.dumps(str(decision_log))
    path.write_text(
        f"store: {store}\n"
        f"rules: {json.dumps(str(rules.resolve()))}\n"
        f"secret: {os.urandom(16).hex()}\n"
        f"decision_log: {log}\n" + extra,
        encoding="utf-8")
    return path


def decision_counts(port: int) -> dict[str, float] | None:
    """``riskgate_decisions_total`` as ``{"event/decision": count}`` (the baselines mimic
    riskgate's counter), or None if the server answers no /metrics."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        text = response.read().decode()
    except OSError:
        return None
    finally:
        conn.close()
    if response.status != 200:
        return None
    counts: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("riskgate_decisions_total{"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
            counts[f"{labels.get('event')}/{labels.get('decision')}"] = float(
                line.rsplit(" ", 1)[1])
    return counts


def run_script(path: Path) -> str:
    """Run a Python script of bench/ with this interpreter: its output lines in one line."""
    try:
        done = subprocess.run([str(BIN / "python"), str(path)], capture_output=True,
                              text=True, cwd=ROOT, timeout=600, check=False)
    except subprocess.TimeoutExpired:
        return "FAILED: did not finish in 600 s"
    lines = [ln.strip() for ln in done.stdout.splitlines() if ln.strip()]
    if done.returncode != 0:
        return f"FAILED (status {done.returncode}): " + " | ".join(
            done.stderr.strip().splitlines()[-3:])
    return " | ".join(lines) or "(printed nothing)"


# --- Redis -----------------------------------------------------------------------------


@contextlib.contextmanager
def redis_server(tmp: Path) -> Iterator[RedisServer]:
    """A throw-away redis-server for the whole bench, stopped on the way out."""
    directory = tmp / "redis"
    directory.mkdir()
    redis = RedisServer(directory, extra_args=("--protected-mode", "yes"))
    try:
        redis.start()
    except RuntimeError as exc:
        raise BenchError(str(exc)) from None
    try:
        yield redis
    finally:
        redis.stop()


def _request(*args: str) -> bytes:
    return (f"*{len(args)}\r\n"
            + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)).encode()


def redis_command(port: int, *args: str) -> str:
    """One command over a raw socket, answer as text (bulk or simple string).

    Not redis-py: a client library sends its own commands (HELLO, CLIENT SETINFO) on
    connect, and those would show up in the command counts this harness measures.
    """
    with socket.create_connection(("127.0.0.1", port), 2) as sock:
        sock.sendall(_request(*args))
        data = b""
        while b"\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                raise BenchError(f"redis closed the connection answering {args[0]}")
            data += chunk
        head, _, rest = data.partition(b"\r\n")
        if head.startswith(b"-"):
            raise BenchError(f"redis {args[0]}: {head[1:].decode()}")
        if head.startswith((b"+", b":")):
            return head[1:].decode()
        size = int(head[1:])
        while len(rest) < size + 2:
            chunk = sock.recv(65536)
            if not chunk:
                raise BenchError(f"redis closed the connection answering {args[0]}")
            rest += chunk
        return rest[:size].decode()


def flush_db(port: int, db: int) -> None:
    """Empty one Redis database: SELECT and FLUSHDB, which must share a connection."""
    with socket.create_connection(("127.0.0.1", port), 2) as sock:
        sock.sendall(_request("SELECT", str(db)) + _request("FLUSHDB"))
        data = b""
        while data.count(b"\r\n") < 2:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    if data != b"+OK\r\n+OK\r\n":
        raise BenchError(f"redis SELECT/FLUSHDB answered {data[:120]!r}")


def command_stats(port: int) -> dict[str, int]:
    """``{command: calls}`` from INFO commandstats."""
    stats = {}
    for line in redis_command(port, "INFO", "commandstats").splitlines():
        name, sep, values = line.partition(":")
        if sep and name.startswith("cmdstat_"):
            calls = re.search(r"calls=(\d+)", values)
            if calls:
                stats[name.removeprefix("cmdstat_")] = int(calls.group(1))
    return stats


def command_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    delta = {name: after.get(name, 0) - before.get(name, 0) for name in after}
    # The "before" snapshot is itself an INFO call and shows up in "after"; nothing else
    # the harness does touches Redis between the two snapshots.
    delta["info"] = delta.get("info", 0) - 1
    return {name: calls for name, calls in delta.items() if calls}


class Monitor:
    """Redis MONITOR on a raw socket: which commands clients send, which scripts run.

    INFO commandstats also counts the commands a Lua script calls, so it cannot tell one
    EVALSHA running ten ZADDs from eleven round trips. MONITOR can (script calls show as
    ``[0 lua]``) but slows Redis down, so it only watches an untimed audit run.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.marker = f"bench-audit-end-{os.urandom(4).hex()}".encode()
        self.sock = socket.create_connection(("127.0.0.1", port), 2)
        self.sock.sendall(b"*1\r\n$7\r\nMONITOR\r\n")
        self.chunks: list[bytes] = []
        first = self.sock.recv(65536)
        if not first.startswith(b"+OK"):
            raise BenchError(f"redis MONITOR answered {first[:80]!r}")
        self.chunks.append(first[5:])
        self.sock.settimeout(None)
        # Only collect bytes while the run goes on; parsing waits until it is over.
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        tail = b""
        with contextlib.suppress(OSError):
            while chunk := self.sock.recv(1 << 20):
                self.chunks.append(chunk)
                if self.marker in tail + chunk:
                    return
                tail = chunk[-len(self.marker):]

    def stop(self) -> tuple[dict[str, int], dict[str, int]]:
        """``(commands clients sent, commands scripts called)``, each by name."""
        # MONITOR output lags behind a busy Redis: read on until a marker command sent
        # now comes through, so the tail of the run is not lost.
        try:
            redis_command(self.port, "ECHO", self.marker.decode())
            self.thread.join(30)
            if self.thread.is_alive():
                raise BenchError("redis MONITOR output did not catch up within 30 s")
        finally:
            self.sock.close()
        sent: dict[str, int] = {}
        scripted: dict[str, int] = {}
        # A line: +1700000000.123456 [0 127.0.0.1:53422] "evalsha" "ab12..." "1" ...
        marker = self.marker.decode()
        for line in b"".join(self.chunks).decode(errors="replace").split("\r\n"):
            if marker in line:  # the harness's own ECHO
                continue
            match = re.match(r'\+[\d.]+ \[\d+ ([^\]]+)\] "([^"]+)"', line)
            if match:
                counts = scripted if match.group(1) == "lua" else sent
                name = match.group(2).lower()
                counts[name] = counts.get(name, 0) + 1
        return sent, scripted


# --- wrk -------------------------------------------------------------------------------


def seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smh]?)", duration)
    if not match:
        raise argparse.ArgumentTypeError(f"`{duration}` is not a duration such as 10s or 1m")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]


def wrk(script: str, url: str, duration: str, threads: int, connections: int,
        *script_args: str) -> dict[str, Any]:
    """Run wrk with one of bench/'s Lua scripts; its BENCH_JSON summary, with rates added."""
    done = subprocess.run(
        ["wrk", "--threads", str(threads), "--connections", str(connections),
         "--duration", duration, "--script", str(HERE / script), url, "--", *script_args],
        capture_output=True, text=True, check=False, timeout=seconds(duration) + 60)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if done.returncode != 0 or line is None:
        raise BenchError(f"wrk failed (status {done.returncode}):\n{done.stdout}\n{done.stderr}")
    result: dict[str, Any] = json.loads(line.removeprefix("BENCH_JSON "))
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    result["socket_errors"] = sum(result[k] for k in
                                  ("connect_errors", "read_errors", "write_errors", "timeouts"))
    return result


# --- runs ------------------------------------------------------------------------------


def busy_cpu_seconds() -> float:
    """CPU time the whole machine spent busy so far, all cores (Linux /proc/stat)."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = (
        int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # reaped children: here, wrk
    return usage.ru_utime + usage.ru_stime


def wait_for_quiet(limit_s: float) -> float | None:
    """Wait (at most ``limit_s``; 0: not at all) until the rest of the machine is nearly idle.

    The servers are idle between runs, so busy CPU now is someone else's: on a shared
    machine a test suite running alongside would otherwise land inside a measurement.
    Returns the load seen last, in cores (None when not waiting).
    """
    if limit_s <= 0:
        return None
    load = 0.0
    for _ in range(max(int(limit_s / 0.5), 1)):
        before = busy_cpu_seconds()
        time.sleep(0.5)
        load = (busy_cpu_seconds() - before) / 0.5
        if load < NOISY_CORES:
            break
    return round(load, 2)


def run_summary(result: dict[str, Any], note: str = "") -> str:
    """One measured run as a progress line: rate, p50, p99, then notes and noise."""
    if result["other_cpu_cores"] > NOISY_CORES:
        note += f"  (noisy: other processes used {result['other_cpu_cores']:.1f} cores)"
    return (f"{result['rps']:>9,.0f} req/s  p50 {result['p50_us'] / 1000:.2f} ms  "
            f"p99 {result['p99_us'] / 1000:.2f} ms{note}")


def rotated(order: list[str], round_: int) -> list[str]:
    """``order`` rotated by the round, so no server always runs first or last."""
    shift = round_ % len(order)
    return order[shift:] + order[:shift]


def median(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in runs)
