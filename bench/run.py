"""``make bench``: riskgate's decision API against two peers, over HTTP, in one run.

What it does, all on 127.0.0.1 and cleaned up at the end (also on Ctrl-C or an error):

1. starts a throw-away ``redis-server`` (no persistence) on a free port;
2. starts three servers, one uvicorn worker each (uvloop, httptools, no access log):
   ``bare`` (Starlette, parse and answer), ``limits`` (plus the `limits` library's
   sliding-window limiter per IP on Redis) and ``riskgate serve`` on the bundled rules
   with the Redis store and the decision log on (to a temp file: it is part of the path);
3. drives each with ``wrk`` and bench/decide.lua (varied bodies from bench/workload.py,
   fixed seed), a warm-up first, then ``--runs`` measured runs interleaved across the
   three servers so drift hits all of them alike;
4. counts Redis commands per decision: the commands each decision *sends* from a short
   untimed audit run under ``MONITOR`` (the target: exactly 1, the EVALSHA), and
   ``INFO commandstats`` around every timed run (which also counts what scripts call);
5. prints medians and the ratios against the targets of issue #2, runs the in-process
   micro-benchmarks when they exist, and writes everything to bench/results/latest.json;
6. with ``proxy`` among ``--servers`` (the default), measures the reverse proxy (issue #5):
   a trivial upstream straight and through ``riskgate serve``, interleaved, first at full
   speed, then both at a fixed rate of half the proxy's measured maximum, where the p99
   overhead is held against the goal (see ``proxy_bench`` below).

Exit status: 0 when every run completed without a non-2xx answer or socket error, 1 if
not (including riskgate failing to start), 2 if the harness itself could not run. Missing
the performance targets is reported, not an error: this is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import proxy_workload  # bench/proxy_workload.py
import workload  # bench/workload.py; bench/ is on sys.path as the script's folder

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results" / "latest.json"
BIN = Path(sys.executable).parent
SERVERS = ("bare", "limits", "riskgate")
#: The reverse-proxy measurement, selected with the decide servers in --servers.
PROXY = "proxy"
TARGETS = {"riskgate/bare": 0.5, "riskgate/limits": 1.3, "commands_per_decision": 1.0,
           "proxy_p99_overhead_ms": 5.0}
MICRO_BENCHES = ("rules_bench.py", "signals_bench.py")
#: Other processes using more CPU than this during a run make its figures suspect.
NOISY_CORES = 0.25


class BenchError(Exception):
    """The harness cannot go on (a server or Redis did not start, wrk failed)."""


# --- processes and ports -------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def log_tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join("    " + line for line in text.splitlines()[-lines:]) or "    (empty log)"


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

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process so far (Linux /proc)."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return float("nan")
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


# --- Redis -----------------------------------------------------------------------------


def redis_command(port: int, *args: str) -> str:
    """One command over a raw socket, answer as text (bulk or simple string).

    Not redis-py: a client library sends its own commands (HELLO, CLIENT SETINFO) on
    connect, and those would show up in the command counts this harness measures.
    """
    request = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
    with socket.create_connection(("127.0.0.1", port), 2) as sock:
        sock.sendall(request.encode())
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


def start_redis(tmp: Path) -> tuple[Child, int]:
    port = free_port()
    data = tmp / "redis"
    data.mkdir()
    redis = Child.start("redis-server", [
        "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
        "--appendonly", "no", "--dir", str(data), "--protected-mode", "yes",
    ], tmp / "redis.log")
    redis.wait_port(port)
    for _ in range(100):  # the port opens slightly before Redis answers while loading
        with contextlib.suppress(BenchError, OSError):
            if redis_command(port, "PING") == "PONG":
                return redis, port
        time.sleep(0.1)
    raise BenchError(f"redis-server did not answer PING:\n{log_tail(redis.log)}")


# --- HTTP checks ----------------------------------------------------------------------


def post_decide(port: int, body: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("POST", "/v1/decide", body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def check_answers(name: str, port: int, bodies: list[str]) -> None:
    """Every body of the sample must get a 200 with the decision answer's keys."""
    expected = {"request_id", "decision", "score", "reasons", "degraded"}
    for body in bodies:
        status, answer = post_decide(port, body)
        keys: set[str] = set()
        with contextlib.suppress(ValueError, AttributeError):
            keys = set(json.loads(answer))
        if status != 200 or not expected <= keys:
            raise BenchError(f"{name} answered {status} {answer[:300]!r}\n  to {body}")


def decisions_served(port: int) -> float | None:
    """The server's own count of decisions (riskgate's Prometheus counter, mimicked by the
    baselines), or None if it has none."""
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
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line.startswith("riskgate_decisions_total{")]
    return sum(values) if values else None


# --- wrk ------------------------------------------------------------------------------


def seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smh]?)", duration)
    if not match:
        raise argparse.ArgumentTypeError(f"`{duration}` is not a duration such as 10s or 1m")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]


def run_summary(result: dict[str, Any], note: str = "") -> str:
    """One measured run as a progress line: rate, p50, p99, then notes and noise."""
    if result["other_cpu_cores"] > NOISY_CORES:
        note += f"  (noisy: other processes used {result['other_cpu_cores']:.1f} cores)"
    return (f"{result['rps']:>9,.0f} req/s  p50 {result['p50_us'] / 1000:.2f} ms  "
            f"p99 {result['p99_us'] / 1000:.2f} ms{note}")


def wrk(argv: list[str], duration: str) -> dict[str, Any]:
    """Run wrk with one of our Lua scripts; its BENCH_JSON summary, with rates added."""
    done = subprocess.run(["wrk", *argv], capture_output=True, text=True, check=False,
                          timeout=seconds(duration) + 60)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if done.returncode != 0 or line is None:
        raise BenchError(f"wrk failed (status {done.returncode}):\n{done.stdout}\n{done.stderr}")
    result: dict[str, Any] = json.loads(line.removeprefix("BENCH_JSON "))
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    result["socket_errors"] = sum(result[k] for k in
                                  ("connect_errors", "read_errors", "write_errors", "timeouts"))
    return result


def run_wrk(port: int, duration: str, args: argparse.Namespace, bodies_file: Path,
            ) -> dict[str, Any]:
    result = wrk(["--threads", str(args.threads), "--connections", str(args.connections),
                  "--duration", duration, "--script", str(HERE / "decide.lua"),
                  f"http://127.0.0.1:{port}/v1/decide", "--", str(bodies_file)], duration)
    # Status line + headers + body: shows the peers answer as much as riskgate does.
    result["bytes_per_response"] = round(result["bytes"] / max(result["requests"], 1), 1)
    return result


# --- the three servers ---------------------------------------------------------------


@dataclass
class Server:
    name: str
    child: Child
    port: int
    runs: list[dict[str, Any]] = field(default_factory=list)


def uvicorn_argv(app: str, port: int) -> list[str]:
    return [str(BIN / "python"), "-m", "uvicorn", app, "--app-dir", str(HERE),
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1", "--loop", "uvloop",
            "--http", "httptools", "--no-access-log", "--log-level", "warning"]


def riskgate_config(tmp: Path, redis_port: int, args: argparse.Namespace) -> Path:
    config = tmp / "riskgate.yaml"
    # No upstream: the decision API alone. The decision log goes to a temp file by
    # default because writing it is part of every decision's work in production.
    log = json.dumps(str(tmp / "decisions.jsonl")) if args.decision_log == "file" else "null"
    config.write_text(
        f"store: redis://127.0.0.1:{redis_port}/0\n"
        f"rules: {json.dumps(str(args.rules.resolve()))}\n"
        f"secret: {os.urandom(16).hex()}\n"
        f"decision_log: {log}\n",
        encoding="utf-8")
    return config


def start_server(name: str, tmp: Path, redis_port: int, args: argparse.Namespace) -> Server:
    port = free_port()
    env = dict(os.environ)
    if name == "bare":
        argv = uvicorn_argv("baselines:bare_app", port)
    elif name == "limits":
        argv = uvicorn_argv("baselines:limits_app", port)
        # db 1, so the peer's keys never mix with riskgate's in db 0.
        env["BENCH_LIMITS_STORAGE"] = f"async+redis://127.0.0.1:{redis_port}/1"
        env["BENCH_LIMITS_CLIENT"] = args.limits_client
    else:
        config = riskgate_config(tmp, redis_port, args)
        argv = [str(BIN / "riskgate"), "serve", "--config", str(config),
                "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    child = Child.start(name, argv, tmp / f"{name}.log", env)
    try:
        child.wait_port(port)
    except BenchError:
        child.stop()  # it may still be running, just not listening
        raise
    return Server(name, child, port)


def busy_cpu_seconds() -> float:
    """CPU time the whole machine spent busy so far, all cores (Linux /proc/stat)."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = (
        int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # reaped children: here, wrk
    return usage.ru_utime + usage.ru_stime


def audit_commands(server: Server, args: argparse.Namespace, bodies_file: Path,
                   redis_port: int) -> dict[str, Any]:
    """An untimed wrk run under MONITOR: Redis commands sent per decision, by name."""
    time.sleep(0.5)  # let the warm-up's last requests finish before counting starts
    served_before = decisions_served(server.port)
    monitor = Monitor(redis_port)
    try:
        result = run_wrk(server.port, args.audit, args, bodies_file)
        time.sleep(0.5)  # let requests in flight when wrk stopped reach Redis
    finally:
        sent, scripted = monitor.stop()
    served_after = decisions_served(server.port)
    decisions = (served_after - served_before
                 if served_before is not None and served_after is not None
                 else result["requests"])
    per = max(decisions, 1)
    return {"decisions": decisions,
            "decisions_counted_by": "wrk" if served_before is None else "server",
            "sent": sent, "called_by_scripts": scripted,
            "sent_per_decision": round(sum(sent.values()) / per, 4),
            "called_by_scripts_per_decision": round(sum(scripted.values()) / per, 4)}


def wait_for_quiet(limit_s: float) -> float:
    """Wait (at most ``limit_s``) until the rest of the machine is nearly idle.

    The servers are idle between runs, so busy CPU now is someone else's: on a shared
    machine a test suite running alongside would otherwise land inside a measurement.
    Returns the load seen last, in cores.
    """
    load = 0.0
    for _ in range(max(int(limit_s / 0.5), 1)):
        before = busy_cpu_seconds()
        time.sleep(0.5)
        load = (busy_cpu_seconds() - before) / 0.5
        if load < NOISY_CORES:
            break
    return round(load, 2)


def measure(server: Server, args: argparse.Namespace, bodies_file: Path, redis: Child,
            redis_port: int) -> dict[str, Any]:
    """One measured wrk run; with Redis commands for the servers that use Redis."""
    uses_redis = server.name != "bare"
    served_before = decisions_served(server.port) if uses_redis else None
    stats_before = command_stats(redis_port) if uses_redis else {}
    cpu = [server.child.cpu_seconds(), redis.cpu_seconds(), children_cpu_seconds(),
           busy_cpu_seconds(), time.monotonic()]
    result = run_wrk(server.port, args.duration, args, bodies_file)
    server_cpu, redis_cpu, wrk_cpu, busy, wall = (
        after - before for after, before in zip([
            server.child.cpu_seconds(), redis.cpu_seconds(), children_cpu_seconds(),
            busy_cpu_seconds(), time.monotonic()], cpu, strict=True))
    requests = max(result["requests"], 1)
    result["server_cpu_us_per_request"] = round(server_cpu * 1e6 / requests, 1)
    result["redis_cpu_us_per_request"] = round(redis_cpu * 1e6 / requests, 1)
    result["wrk_cpu_us_per_request"] = round(wrk_cpu * 1e6 / requests, 1)
    # CPU the rest of the machine used meanwhile, in cores: the noise in this run.
    result["other_cpu_cores"] = round((busy - server_cpu - redis_cpu - wrk_cpu) / wall, 2)
    if uses_redis:
        # Requests still in flight when wrk stops finish on the server; let them land
        # so both counts below cover the same decisions.
        time.sleep(0.5)
        delta = command_delta(stats_before, command_stats(redis_port))
        served_after = decisions_served(server.port) if served_before is not None else None
        decisions = (served_after - served_before
                     if served_before is not None and served_after is not None
                     else result["requests"])
        result["redis_commands"] = delta
        result["decisions_counted_by"] = "server" if served_before is not None else "wrk"
        result["commands_per_decision"] = sum(delta.values()) / max(decisions, 1)
        result["evalsha_per_decision"] = delta.get("evalsha", 0) / max(decisions, 1)
    return result


# --- the reverse proxy (issue #5) ------------------------------------------------------
#
# The same trivial upstream (baselines.upstream_app) measured two ways in one run:
# ``direct`` (wrk -> upstream) and ``through`` (wrk -> riskgate serve -> upstream), with
# the request mix of proxy_workload.py replayed by proxy.lua. Phase 1 drives both flat
# out at --proxy-connections; phase 2 sends both the same fixed rate, half the median
# maximum of ``through``, where the goal is p99(through) - p99(direct) <= 5 ms. Runs are
# interleaved within each phase, the order rotated every round, as for the decide bench.

PROXY_TARGETS = ("direct", "through")
#: Expected answers: 2xx, a failed login's 401 (the upstream's, passed on) and, through
#: riskgate only, the 403 of a challenge or block. Anything else is an error.
PROXY_STATUSES = {"direct": {200, 201, 401}, "through": {200, 201, 401, 403}}
#: The proxy's Redis database: apart from the decide bench's (db 0) and limits' (db 1).
PROXY_DB = 2
#: A paced run that delivered less than this share of its target rate did not keep up.
PACE_TOLERANCE = 0.97

# CONTRACT §4's routes for the flows the workload sends (plus the other two, so the
# matcher does its real work); GET / matches none and is forwarded unscored.
PROXY_ROUTES = """\
routes:
  - {path: /api/register, method: POST, event: registration, account: body:email}
  - {path: /api/login, method: POST, event: login, account: body:username,
     failure_statuses: [401]}
  - {path: "/api/promotions/{code}/redeem", method: POST, event: promotion,
     account: header:X-Account-Id, attributes: {promo_code: path:code}}
  - {path: /api/bookings, method: POST, event: booking, account: header:X-Account-Id,
     attributes: {flight: body:flight, seats: body:seats}}
"""


@dataclass
class ProxyTarget:
    name: str
    port: int
    #: The processes serving this target: riskgate and the upstream for ``through``.
    children: list[Child]
    runs: dict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: {"max": [], "paced": []})


def proxy_config(tmp: Path, redis_port: int, upstream_port: int, args: argparse.Namespace,
                 ) -> Path:
    config = tmp / "riskgate-proxy.yaml"
    log = json.dumps(str(tmp / "proxy-decisions.jsonl")) if args.decision_log == "file" \
        else "null"
    # Every request comes from 127.0.0.1 with the client's address in X-Forwarded-For:
    # trusting 127.0.0.1 for it is what makes per-IP counters see many clients.
    config.write_text(
        f"upstream: http://127.0.0.1:{upstream_port}\n"
        "trusted_proxies: [127.0.0.1/32]\n"
        f"store: redis://127.0.0.1:{redis_port}/{PROXY_DB}\n"
        f"rules: {json.dumps(str(args.rules.resolve()))}\n"
        f"secret: {os.urandom(16).hex()}\n"
        f"decision_log: {log}\n"
        "device_id: header:X-Device-Id\n" + PROXY_ROUTES,
        encoding="utf-8")
    return config


def flush_proxy_db(redis_port: int) -> None:
    """Empty the proxy's Redis database (SELECT and FLUSHDB on one connection).

    Every ``through`` run starts from the same state: otherwise counters would carry the
    earlier runs' requests and later runs would see more challenges (which skip the
    upstream) than earlier ones, so the runs would not compare.
    """
    db = str(PROXY_DB)
    payload = f"*2\r\n$6\r\nSELECT\r\n${len(db)}\r\n{db}\r\n*1\r\n$7\r\nFLUSHDB\r\n".encode()
    with socket.create_connection(("127.0.0.1", redis_port), 2) as sock:
        sock.sendall(payload)
        data = b""
        while data.count(b"\r\n") < 2:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    if data != b"+OK\r\n+OK\r\n":
        raise BenchError(f"redis SELECT/FLUSHDB answered {data[:120]!r}")


def decision_counts(port: int) -> dict[str, float]:
    """riskgate's ``riskgate_decisions_total`` as ``{"event/decision": count}``."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    counts = {}
    for line in text.splitlines():
        if line.startswith("riskgate_decisions_total{"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
            counts[f"{labels.get('event')}/{labels.get('decision')}"] = float(
                line.rsplit(" ", 1)[1])
    return counts


def check_proxy(through_port: int, requests: list[tuple[str, str, list[tuple[str, str]], str]],
                ) -> None:
    """A few requests of the mix through riskgate: forwarded, and scored where routed."""
    for method, path, headers, body in requests:
        conn = http.client.HTTPConnection("127.0.0.1", through_port, timeout=5)
        try:
            conn.request(method, path, body or None, dict(headers))
            response = conn.getresponse()
            answer = response.read()
        finally:
            conn.close()
        decision = response.getheader("x-riskgate-decision")
        scored = path != "/"
        if response.status not in PROXY_STATUSES["through"] or (scored and decision is None) \
                or (not scored and decision is not None):
            raise BenchError(f"riskgate answered {method} {path} with {response.status} "
                             f"(decision header {decision!r}): {answer[:300]!r}")


def run_proxy_wrk(port: int, duration: str, args: argparse.Namespace, requests_file: Path,
                  rate: float | None = None) -> dict[str, Any]:
    argv = ["--threads", str(args.threads), "--connections", str(args.proxy_connections),
            "--duration", duration, "--script", str(HERE / "proxy.lua"),
            f"http://127.0.0.1:{port}/", "--", str(requests_file)]
    if rate is not None:
        argv.append(f"{rate / args.threads:.3f}")  # proxy.lua paces each thread alone
    result = wrk(argv, duration)
    if rate is not None:
        result["target_rps"] = round(rate, 1)
    return result


def measure_proxy(target: ProxyTarget, phase: str, args: argparse.Namespace,
                  requests_file: Path, redis: Child, redis_port: int, rate: float | None,
                  ) -> dict[str, Any]:
    through = target.name == "through"
    if through:
        flush_proxy_db(redis_port)
        decisions_before = decision_counts(target.port)
    processes = [*target.children, redis]
    before = [c.cpu_seconds() for c in processes] + [busy_cpu_seconds(), time.monotonic()]
    result = run_proxy_wrk(target.port, args.duration, args, requests_file, rate)
    after = [c.cpu_seconds() for c in processes] + [busy_cpu_seconds(), time.monotonic()]
    used = [a - b for a, b in zip(after, before, strict=True)]
    *process_cpu, busy, wall = used
    requests = max(result["requests"], 1)
    for child, cpu in zip(processes, process_cpu, strict=True):
        result[f"{child.name}_cpu_us_per_request"] = round(cpu * 1e6 / requests, 1)
    # Everything but our servers and Redis (wrk included, unlike the decide bench: its
    # CPU here is the same for both targets at the same rate).
    result["other_cpu_cores"] = round((busy - sum(process_cpu)) / wall, 2)
    if through:
        time.sleep(0.5)  # let requests in flight when wrk stopped be counted
        decisions_after = decision_counts(target.port)
        result["decisions"] = {k: int(v - decisions_before.get(k, 0))
                               for k, v in decisions_after.items()
                               if v - decisions_before.get(k, 0)}
    result["phase"] = phase
    return result


def proxy_problems(target: str, phase: str, round_: int, result: dict[str, Any]) -> list[str]:
    found = []
    unexpected = {status: n for status, n in result["statuses"].items()
                  if int(status) not in PROXY_STATUSES[target]}
    if unexpected or result["socket_errors"]:
        found.append(f"proxy {target} {phase} run {round_ + 1}: unexpected statuses "
                     f"{unexpected or 'none'}, {result['socket_errors']} socket errors "
                     f"(connect/read/write/timeout)")
    return found


def proxy_bench(args: argparse.Namespace, tmp: Path, redis: Child, redis_port: int,
                children: list[Child], problems: list[str]) -> dict[str, Any]:
    """Both phases of the proxy measurement; returns the runs (summarized later)."""
    requests_file = tmp / "proxy-requests.tsv"
    requests = proxy_workload.write_requests(requests_file, args.proxy_requests)
    upstream_port = free_port()
    upstream = Child.start("upstream", uvicorn_argv("baselines:upstream_app", upstream_port),
                           tmp / "upstream.log")
    children.append(upstream)
    upstream.wait_port(upstream_port)
    gateway_port = free_port()
    config = proxy_config(tmp, redis_port, upstream_port, args)
    gateway = Child.start("riskgate", [
        str(BIN / "riskgate"), "serve", "--config", str(config), "--host", "127.0.0.1",
        "--port", str(gateway_port), "--workers", "1"], tmp / "riskgate-proxy.log")
    children.append(gateway)
    gateway.wait_port(gateway_port)
    targets = {"direct": ProxyTarget("direct", upstream_port, [upstream]),
               "through": ProxyTarget("through", gateway_port, [gateway, upstream])}
    check_proxy(gateway_port, requests[:40])
    print(f"bench: proxy: upstream on 127.0.0.1:{upstream_port}, riskgate serve on "
          f"127.0.0.1:{gateway_port}; {len(requests)} requests "
          f"(seed {proxy_workload.SEED}), {args.proxy_connections} connections", flush=True)
    for target in targets.values():
        warmup = run_proxy_wrk(target.port, args.warmup, args, requests_file)
        for problem in proxy_problems(target.name, "warm-up", 0, warmup):
            problems.append(problem)
            print(f"!! {problem}", flush=True)

    def phase(name: str, rate: float | None) -> None:
        order = list(PROXY_TARGETS)
        for round_ in range(args.runs):
            for target_name in order[round_ % 2:] + order[:round_ % 2]:
                target = targets[target_name]
                quiet = wait_for_quiet(args.quiet_wait) if args.quiet_wait > 0 else None
                result = measure_proxy(target, name, args, requests_file, redis, redis_port,
                                       rate)
                result["load_before_cores"] = quiet
                target.runs[name].append(result)
                note = ""
                for problem in proxy_problems(target_name, name, round_, result):
                    problems.append(problem)
                    note += f"  !! {problem}"
                if rate is not None and result["rps"] < PACE_TOLERANCE * rate:
                    note += f"  (fell behind the {rate:,.0f} req/s target)"
                print(f"bench: proxy {name:<5} run {round_ + 1}/{args.runs} {target_name:<7} "
                      f"{run_summary(result, note)}", flush=True)
                for child in target.children:
                    if child.proc.poll() is not None:
                        raise BenchError(f"{child.name} died during the proxy run:\n"
                                         f"{log_tail(child.log)}")

    phase("max", None)
    half = median(targets["through"].runs["max"], "rps") / 2
    print(f"bench: proxy: paced runs at {half:,.0f} req/s, half the proxy's median maximum",
          flush=True)
    phase("paced", half)
    for child in (gateway, upstream):
        child.stop()
    return {"rate": half, "runs": {name: t.runs for name, t in targets.items()}}


def summarize_proxy(proxy: dict[str, Any]) -> dict[str, Any]:
    runs = proxy["runs"]
    summary: dict[str, Any] = {"paced_rate_rps": round(proxy["rate"], 1)}
    for phase in ("max", "paced"):
        rows = {}
        for target in PROXY_TARGETS:
            done = runs[target][phase]
            if not done:
                continue
            row = {"rps": round(median(done, "rps"), 1), "p50_us": median(done, "p50_us"),
                   "p99_us": median(done, "p99_us"),
                   "runs_rps": [round(r["rps"], 1) for r in done],
                   "runs_p99_us": [r["p99_us"] for r in done],
                   "noisy_runs": sum(r["other_cpu_cores"] > NOISY_CORES for r in done)}
            for key in ("riskgate_cpu_us_per_request", "upstream_cpu_us_per_request",
                        "redis-server_cpu_us_per_request"):
                if key in done[0]:
                    row[key.replace("-server", "")] = median(done, key)
            rows[target] = row
        summary[phase] = rows
    paced = summary["paced"]
    if "direct" in paced and "through" in paced:
        summary["p50_overhead_ms"] = round(
            (paced["through"]["p50_us"] - paced["direct"]["p50_us"]) / 1000, 2)
        summary["p99_overhead_ms"] = round(
            (paced["through"]["p99_us"] - paced["direct"]["p99_us"]) / 1000, 2)
        # Per round too (runs seconds apart), to see how steady the difference is.
        summary["p99_overhead_ms per round"] = [
            round((t["p99_us"] - d["p99_us"]) / 1000, 2) for t, d in
            zip(runs["through"]["paced"], runs["direct"]["paced"], strict=True)]
        summary["meets_goal"] = summary["p99_overhead_ms"] <= TARGETS["proxy_p99_overhead_ms"]
    if summary["max"].get("through") and summary["max"].get("direct"):
        summary["max_through/direct"] = round(
            summary["max"]["through"]["rps"] / summary["max"]["direct"]["rps"], 3)
    mix: dict[str, int] = {}
    for result in runs["through"]["max"] + runs["through"]["paced"]:
        for key, count in result.get("decisions", {}).items():
            mix[key] = mix.get(key, 0) + count
    by_decision: dict[str, int] = {}
    for key, count in mix.items():
        decision = key.rsplit("/", 1)[1]
        by_decision[decision] = by_decision.get(decision, 0) + count
    summary["decisions"] = dict(sorted(mix.items()))
    summary["decision_shares"] = {d: round(n / max(sum(by_decision.values()), 1), 4)
                                  for d, n in sorted(by_decision.items())}
    return summary


def print_proxy(summary: dict[str, Any]) -> None:
    print()
    print(f"proxy      {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'rg CPU µs':>10}   "
          f"runs (req/s; p99 ms)")
    for phase, title in (("max", "max"), ("paced", "paced")):
        for target in PROXY_TARGETS:
            row = summary[phase].get(target)
            if row is None:
                continue
            cpu = row.get("riskgate_cpu_us_per_request")
            runs = " ".join(f"{r:,.0f}" for r in row["runs_rps"])
            p99s = " ".join(f"{p / 1000:.1f}" for p in row["runs_p99_us"])
            print(f"{title:<5} {target:<7} {row['rps']:>8,.0f} {row['p50_us'] / 1000:>8.2f} "
                  f"{row['p99_us'] / 1000:>8.2f} {'' if cpu is None else f'{cpu:.0f}':>10}   "
                  f"{runs}; {p99s}" + ("  *" if row["noisy_runs"] else ""))
    if "max_through/direct" in summary:
        print(f"max throughput through/direct {summary['max_through/direct']:.3f}")
    if "p99_overhead_ms" in summary:
        goal = TARGETS["proxy_p99_overhead_ms"]
        rounds = " ".join(f"{v:.2f}" for v in summary["p99_overhead_ms per round"])
        print(f"at {summary['paced_rate_rps']:,.0f} req/s (half the proxy's max): p99 overhead "
              f"{summary['p99_overhead_ms']:.2f} ms  goal ≤ {goal:g} ms  "
              f"{'meets' if summary['meets_goal'] else 'MISSES'}   (per round: {rounds}); "
              f"p50 overhead {summary['p50_overhead_ms']:.2f} ms")
    shares = ", ".join(f"{d} {s:.1%}" for d, s in summary["decision_shares"].items())
    print(f"proxy decisions (riskgate_decisions_total, all through runs): {shares or 'none'}")
    print("  " + ", ".join(f"{k}={v}" for k, v in summary["decisions"].items()))


# --- micro-benchmarks ----------------------------------------------------------------


def micro_benches() -> dict[str, str]:
    """Run bench/rules_bench.py and bench/signals_bench.py if present; their output lines."""
    found = {}
    for script in MICRO_BENCHES:
        path = HERE / script
        if not path.exists():
            found[script] = "skipped: not written yet"
            continue
        try:
            done = subprocess.run([str(BIN / "python"), str(path)], capture_output=True,
                                  text=True, cwd=ROOT, timeout=600, check=False)
        except subprocess.TimeoutExpired:
            found[script] = "FAILED: did not finish in 600 s"
            continue
        lines = [ln.strip() for ln in done.stdout.splitlines() if ln.strip()]
        if done.returncode != 0:
            found[script] = f"FAILED (status {done.returncode}): " + " | ".join(
                done.stderr.strip().splitlines()[-3:])
        else:
            found[script] = " | ".join(lines) or "(printed nothing)"
    return found


# --- reporting -----------------------------------------------------------------------


def median(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def summarize(servers: dict[str, Server], audits: dict[str, dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for name, server in servers.items():
        if server.runs:
            summary[name] = {
                "decisions_per_s": round(median(server.runs, "rps"), 1),
                "p50_us": median(server.runs, "p50_us"),
                "p99_us": median(server.runs, "p99_us"),
                "server_cpu_us_per_request": median(server.runs, "server_cpu_us_per_request"),
                "bytes_per_response": median(server.runs, "bytes_per_response"),
                "runs_rps": [round(r["rps"], 1) for r in server.runs],
                "noisy_runs": sum(r["other_cpu_cores"] > NOISY_CORES for r in server.runs),
            }
    for name in ("limits", "riskgate"):
        if name in summary:
            runs = servers[name].runs
            summary[name]["commands_per_decision"] = round(
                median(runs, "commands_per_decision"), 4)
            summary[name]["evalsha_per_decision"] = round(median(runs, "evalsha_per_decision"), 4)
            if name in audits:
                summary[name]["sent_per_decision"] = audits[name]["sent_per_decision"]
    rg = summary.get("riskgate")
    if rg:
        for peer in ("bare", "limits"):
            if peer in summary:
                summary[f"riskgate/{peer}"] = round(
                    rg["decisions_per_s"] / summary[peer]["decisions_per_s"], 3)
                # The same ratio within each round (runs seconds apart), as a drift check.
                summary[f"riskgate/{peer} per round"] = [
                    round(a["rps"] / b["rps"], 3)
                    for a, b in zip(servers["riskgate"].runs, servers[peer].runs, strict=True)]
    return summary


def print_report(summary: dict[str, Any], servers: dict[str, Server],
                 audits: dict[str, dict[str, Any]], problems: list[str], micro: dict[str, str],
                 ) -> None:
    if not servers:
        for script, line in micro.items():
            print(f"{script}: {line}")
        return
    print()
    print(f"{'server':<10} {'decisions/s':>12} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'CPU µs/req':>11} {'resp B':>7}   runs (req/s)")
    for name in SERVERS:
        row = summary.get(name)
        if row is None:
            print(f"{name:<10} {'(did not run)':>12}")
            continue
        runs = " ".join(f"{r['rps']:,.0f}" + ("*" if r["other_cpu_cores"] > NOISY_CORES else "")
                        for r in servers[name].runs)
        print(f"{name:<10} {row['decisions_per_s']:>12,.0f} {row['p50_us'] / 1000:>8.2f} "
              f"{row['p99_us'] / 1000:>8.2f} {row['server_cpu_us_per_request']:>11.0f} "
              f"{row['bytes_per_response']:>7.0f}   {runs}")
    if any(row.get("noisy_runs") for row in summary.values() if isinstance(row, dict)):
        print(f"  * other processes used more than {NOISY_CORES} cores during that run")
    print()
    for ratio in ("riskgate/bare", "riskgate/limits"):
        if ratio in summary:
            target = TARGETS[ratio]
            verdict = "meets" if summary[ratio] >= target else "BELOW"
            rounds = " ".join(f"{r:.2f}" for r in summary[f"{ratio} per round"])
            print(f"{ratio:<16} {summary[ratio]:>6.2f}   target ≥ {target}  {verdict}"
                  f"   (per round: {rounds})")
    for name in ("riskgate", "limits"):
        row = summary.get(name)
        if row is None:
            continue
        audit = audits.get(name)
        if audit:
            sent = audit["sent_per_decision"]
            line = f"{name}: Redis commands sent per decision {sent:.3f} ({by_name(audit['sent'])})"
            if name == "riskgate":
                target = TARGETS["commands_per_decision"]
                line += f"   target exactly 1  {'meets' if round(sent, 2) == target else 'MISSES'}"
            print(line)
            print(f"  run inside scripts per decision: "
                  f"{audit['called_by_scripts_per_decision']:.2f} "
                  f"({by_name(audit['called_by_scripts'])})")
        else:
            print(f"{name}: commands sent per decision not audited (--audit 0s)")
        print(f"  INFO commandstats over the timed runs: {row['commands_per_decision']:.2f} calls "
              f"per decision with the script's own, EVALSHA {row['evalsha_per_decision']:.3f}")
    for script, line in micro.items():
        print(f"{script}: {line}")
    for problem in problems:
        print(f"!! {problem}")


def by_name(counts: dict[str, int]) -> str:
    return ", ".join(f"{name}={calls}" for name, calls in sorted(counts.items())) or "none"


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for package in ("riskgate", "starlette", "uvicorn", "uvloop", "httptools", "limits",
                    "coredis", "redis"):
        with contextlib.suppress(PackageNotFoundError):
            found[package] = version(package)
    for tool, flag in (("redis-server", "--version"), ("wrk", "--version")):
        done = subprocess.run([tool, flag], capture_output=True, text=True, check=False)
        found[tool] = (done.stdout or done.stderr).splitlines()[0].strip()
    return found


# --- main ----------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--duration", default="10s", help="each measured run (wrk syntax)")
    parser.add_argument("--warmup", default="3s", help="warm-up run per server, not counted")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--runs", type=int, default=3, help="measured runs per server")
    parser.add_argument("--servers", default=",".join((*SERVERS, PROXY)),
                        help="comma-separated subset of " + ",".join((*SERVERS, PROXY))
                             + f" ({PROXY}: the reverse proxy against its upstream)")
    parser.add_argument("--proxy-connections", type=int, default=64,
                        help="wrk connections for the proxy measurement (both phases)")
    parser.add_argument("--proxy-requests", type=int, default=30000,
                        help="distinct requests in the proxy workload")
    parser.add_argument("--bodies", type=int, default=20000, help="distinct request bodies")
    parser.add_argument("--limits-client", choices=("redispy", "coredis"), default="redispy",
                        help="Redis client inside the limits library (redispy is faster here)")
    parser.add_argument("--rules", type=Path, default=ROOT / "rules",
                        help="rule folder riskgate serves (default: the bundled rules/)")
    parser.add_argument("--decision-log", choices=("file", "off"), default="file",
                        help="riskgate's decision log: to a temp file (default) or off")
    parser.add_argument("--audit", default="2s",
                        help="untimed run under Redis MONITOR to count the commands each "
                             "decision sends (0s: skip)")
    parser.add_argument("--quiet-wait", type=float, default=30.0,
                        help="seconds to wait at most for other processes to go idle "
                             "before each run (0: do not wait)")
    parser.add_argument("--no-micro", action="store_true", help="skip the micro-benchmarks")
    args = parser.parse_args(argv)
    seconds(args.duration), seconds(args.warmup)  # validate early
    args.servers = [s for s in args.servers.split(",") if s]
    if unknown := set(args.servers) - {*SERVERS, PROXY}:
        parser.error(f"unknown servers: {', '.join(sorted(unknown))}")
    return args


def _sigterm(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt  # run the same clean-up as Ctrl-C


@contextlib.contextmanager
def stopping(children: list[Child]) -> Iterator[None]:
    try:
        yield
    finally:
        for child in reversed(children):  # servers first, Redis last
            child.stop()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _sigterm)
    for tool in ("redis-server", "wrk"):
        if shutil.which(tool) is None:
            print(f"bench: `{tool}` is not installed; run: sudo apt-get install -y {tool}",
                  file=sys.stderr)
            return 2
    problems: list[str] = []
    children: list[Child] = []
    servers: dict[str, Server] = {}
    audits: dict[str, dict[str, Any]] = {}
    proxy: dict[str, Any] | None = None
    with tempfile.TemporaryDirectory(prefix="riskgate-bench-") as tmp_name, stopping(children):
        tmp = Path(tmp_name)
        bodies_file = tmp / "bodies.jsonl"
        bodies = workload.write_bodies(bodies_file, args.bodies)
        redis, redis_port = start_redis(tmp)
        children.append(redis)
        print(f"bench: redis-server on 127.0.0.1:{redis_port}; {len(bodies)} bodies "
              f"(seed {workload.SEED}); wrk {args.threads} thread(s), {args.connections} "
              f"connections, {args.warmup} warm-up, {args.runs} x {args.duration} per server; "
              f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}", flush=True)
        for name in [s for s in args.servers if s in SERVERS]:
            server = None
            try:
                server = start_server(name, tmp, redis_port, args)
                children.append(server.child)
                check_answers(name, server.port, bodies[:50])
                warmup = run_wrk(server.port, args.warmup, args, bodies_file)
            except (BenchError, OSError) as exc:
                problems.append(f"{name} could not be measured: {exc}")
                print(f"!! {name} could not be measured (why: at the end)", flush=True)
                if server is not None:
                    server.child.stop()
                continue
            if warmup["non2xx"] or warmup["socket_errors"]:
                problems.append(f"{name} warm-up: {warmup['non2xx']} non-2xx answers, "
                                f"{warmup['socket_errors']} socket errors")
                print(f"!! {problems[-1]}", flush=True)
            servers[name] = server
            if name != "bare" and seconds(args.audit) > 0:
                audits[name] = audit_commands(server, args, bodies_file, redis_port)
            print(f"bench: {name} ready on 127.0.0.1:{server.port}", flush=True)
        order = list(servers)
        for round_ in range(args.runs if order else 0):
            # Rotate the order each round so no server always runs first or last.
            for name in order[round_ % len(order):] + order[:round_ % len(order)]:
                server = servers[name]
                quiet = wait_for_quiet(args.quiet_wait) if args.quiet_wait > 0 else None
                result = measure(server, args, bodies_file, redis, redis_port)
                result["load_before_cores"] = quiet
                server.runs.append(result)
                errors = result["non2xx"] + result["socket_errors"]
                note = ""
                if errors:
                    problems.append(f"{name} run {round_ + 1}: {result['non2xx']} non-2xx "
                                    f"answers, {result['socket_errors']} socket errors "
                                    f"(connect/read/write/timeout)")
                    note = f"  !! {problems[-1]}"
                print(f"bench: run {round_ + 1}/{args.runs} {name:<8} "
                      f"{run_summary(result, note)}", flush=True)
                if server.child.proc.poll() is not None:
                    raise BenchError(f"{name} died during the run:\n{log_tail(server.child.log)}")
        # The decide servers are done: stopped, they cannot disturb the proxy runs.
        for server in servers.values():
            server.child.stop()
        if PROXY in args.servers:
            try:
                proxy = proxy_bench(args, tmp, redis, redis_port, children, problems)
            except (BenchError, OSError) as exc:
                problems.append(f"the proxy could not be measured: {exc}")
                print("!! the proxy could not be measured (why: at the end)", flush=True)
        for child in reversed(children):
            child.stop()

    micro = {} if args.no_micro else micro_benches()
    summary = summarize(servers, audits)
    proxy_summary = summarize_proxy(proxy) if proxy is not None else None
    print_report(summary, servers, audits, [], micro)
    if proxy_summary is not None:
        print_proxy(proxy_summary)
    for problem in problems:
        print(f"!! {problem}")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "settings": vars(args) | {"seed": workload.SEED},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "versions": versions(),
        "targets": TARGETS,
        "summary": summary,
        "runs": {name: server.runs for name, server in servers.items()},
        "command_audit": audits,
        "micro": micro,
        "proxy": None if proxy is None else {"summary": proxy_summary, **proxy},
        "problems": problems,
    }, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"results: {RESULTS.relative_to(ROOT)}")
    return 1 if problems else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("bench: interrupted; servers and Redis stopped", file=sys.stderr)
        sys.exit(130)
