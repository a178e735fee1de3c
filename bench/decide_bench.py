"""The decision API bench (issue #2): riskgate's ``POST /v1/decide`` against two peers.

``bare`` (Starlette, parse and answer), ``limits`` (plus the `limits` library's
sliding-window limiter per IP on Redis) and ``riskgate serve`` on the bench's rules with
the Redis store and, by default, the decision log on: with one worker (``riskgate``),
two (``riskgate2``), and one with the online model on (``riskgate-model``: it scores
every decision, then learns and stores label vectors after the responses). Each gets a
warm-up, the Redis servers a command audit under MONITOR, then ``--runs`` measured wrk
runs interleaved across all of them.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import (
    NOISY_CORES,
    BenchError,
    Child,
    Monitor,
    RedisServer,
    busy_cpu_seconds,
    children_cpu_seconds,
    command_delta,
    command_stats,
    cpu_seconds,
    decision_counts,
    free_port,
    median,
    riskgate_argv,
    riskgate_config,
    rotated,
    run_summary,
    seconds,
    stopping,
    uvicorn_argv,
    wait_for_quiet,
    wrk,
)

SERVERS = ("bare", "limits", "floor", "riskgate", "riskgate2", "riskgate-model")


@dataclass(frozen=True)
class Riskgate:
    """A ``riskgate serve`` variant: its workers, its Redis database (apart, so none sees
    another's counters) and whether the online model is on."""

    workers: int
    db: int
    model: bool = False


RISKGATE_WORKERS = {"riskgate": Riskgate(1, 0), "riskgate2": Riskgate(2, 3),
                    "riskgate-model": Riskgate(1, 4, model=True)}
#: The floor's Redis database: apart from riskgate's, limits' (1) and the proxy's (2).
FLOOR_DB = 5
TARGETS = {"riskgate/bare": 0.5, "riskgate/limits": 1.3, "commands_per_decision": 1.0}
#: The decision API's ratios hold with the model on too (issue 11).
MODEL_RATIOS = ("riskgate-model/bare", "riskgate-model/limits")


@dataclass
class Server:
    name: str
    child: Child
    port: int
    runs: list[dict[str, Any]] = field(default_factory=list)


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
    elif name == "floor":
        argv = uvicorn_argv("baselines:floor_app", port)
        env["BENCH_FLOOR_STORAGE"] = f"redis://127.0.0.1:{redis_port}/{FLOOR_DB}"
    else:
        # No upstream: the decision API alone. The decision log goes to a temp file by
        # default because writing it is part of every decision's work in production.
        variant = RISKGATE_WORKERS[name]
        config = riskgate_config(
            tmp / f"{name}.yaml", f"redis://127.0.0.1:{redis_port}/{variant.db}", args.rules,
            tmp / f"{name}-decisions.jsonl" if args.decision_log == "file" else None,
            "model: {enabled: true}\n" if variant.model else "")
        argv = riskgate_argv(config, port, variant.workers)
    return Server(name, Child.listening(name, argv, port, tmp / f"{name}.log", env), port)


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
    """The server's own count of decisions, or None if it has none."""
    counts = decision_counts(port)
    return sum(counts.values()) if counts else None


def run_wrk(port: int, duration: str, args: argparse.Namespace, bodies_file: Path,
            ) -> dict[str, Any]:
    result = wrk("decide.lua", f"http://127.0.0.1:{port}/v1/decide", duration, args.threads,
                 args.connections, str(bodies_file))
    # Status line + headers + body: shows the peers answer as much as riskgate does.
    result["bytes_per_response"] = round(result["bytes"] / max(result["requests"], 1), 1)
    return result


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


def measure(server: Server, args: argparse.Namespace, bodies_file: Path, redis: RedisServer,
            ) -> dict[str, Any]:
    """One measured wrk run; with Redis commands for the servers that use Redis."""
    uses_redis = server.name != "bare"
    served_before = decisions_served(server.port) if uses_redis else None
    stats_before = command_stats(redis.port) if uses_redis else {}
    cpu = [server.child.cpu_seconds(), cpu_seconds(redis.pid), children_cpu_seconds(),
           busy_cpu_seconds(), time.monotonic()]
    result = run_wrk(server.port, args.duration, args, bodies_file)
    server_cpu, redis_cpu, wrk_cpu, busy, wall = (
        after - before for after, before in zip([
            server.child.cpu_seconds(), cpu_seconds(redis.pid), children_cpu_seconds(),
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
        delta = command_delta(stats_before, command_stats(redis.port))
        served_after = decisions_served(server.port) if served_before is not None else None
        decisions = (served_after - served_before
                     if served_before is not None and served_after is not None
                     else result["requests"])
        result["redis_commands"] = delta
        result["decisions_counted_by"] = "server" if served_before is not None else "wrk"
        result["commands_per_decision"] = sum(delta.values()) / max(decisions, 1)
        result["evalsha_per_decision"] = delta.get("evalsha", 0) / max(decisions, 1)
    return result


def run(args: argparse.Namespace, tmp: Path, redis: RedisServer, bodies_file: Path,
        bodies: list[str], problems: list[str],
        ) -> tuple[dict[str, Server], dict[str, dict[str, Any]]]:
    """The servers of ``--servers`` measured; ``(servers with their runs, command audits)``.

    A server that cannot start or answer is left out (and added to ``problems``); the
    rest are measured. All are stopped on return, so they cannot disturb what runs next.
    """
    children: list[Child] = []
    servers: dict[str, Server] = {}
    audits: dict[str, dict[str, Any]] = {}
    with stopping(children):
        for name in [s for s in args.servers if s in SERVERS]:
            server = None
            try:
                server = start_server(name, tmp, redis.port, args)
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
                audits[name] = audit_commands(server, args, bodies_file, redis.port)
            print(f"bench: {name} ready on 127.0.0.1:{server.port}", flush=True)
        order = list(servers)
        for round_ in range(args.runs if order else 0):
            for name in rotated(order, round_):
                server = servers[name]
                quiet = wait_for_quiet(args.quiet_wait)
                result = measure(server, args, bodies_file, redis)
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
                server.child.check_alive("the run")
    return servers, audits


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
    for name in ("limits", "floor", *RISKGATE_WORKERS):
        if name in summary:
            runs = servers[name].runs
            summary[name]["commands_per_decision"] = round(
                median(runs, "commands_per_decision"), 4)
            summary[name]["evalsha_per_decision"] = round(median(runs, "evalsha_per_decision"), 4)
            if name in audits:
                summary[name]["sent_per_decision"] = audits[name]["sent_per_decision"]
    if "riskgate" in summary and "riskgate2" in summary:
        summary["riskgate2/riskgate"] = round(
            summary["riskgate2"]["decisions_per_s"] / summary["riskgate"]["decisions_per_s"], 3)
    for name in ("riskgate", "riskgate-model"):
        if name not in summary:
            continue
        for peer in ("bare", "limits", "riskgate"):
            if peer in summary and peer != name:
                summary[f"{name}/{peer}"] = round(
                    summary[name]["decisions_per_s"] / summary[peer]["decisions_per_s"], 3)
                # The same ratio within each round (runs seconds apart), as a drift check.
                summary[f"{name}/{peer} per round"] = [
                    round(a["rps"] / b["rps"], 3)
                    for a, b in zip(servers[name].runs, servers[peer].runs, strict=True)]
    if "floor" in summary:
        summary["floor_budget"] = floor_budget(summary)
    if "riskgate-model" in summary and "riskgate" in summary:
        summary["model_cpu_us_per_decision"] = round(
            summary["riskgate-model"]["server_cpu_us_per_request"]
            - summary["riskgate"]["server_cpu_us_per_request"], 1)
    return summary


def floor_budget(summary: dict[str, Any]) -> dict[str, float]:
    """What the targets leave for riskgate's own work, in µs of one worker's time.

    One worker keeps its core busy under wrk, so a server's time per decision is
    1 / its rate. A decision at the target rate may take ``1 / target rate``; the floor
    (server, JSON, one script call, answer) takes ``1 / floor rate`` of it whatever
    riskgate does; the difference is all that signals, counters, rules, the model and
    the log may cost. Negative means the floor alone misses the target.
    """
    floor = 1e6 / summary["floor"]["decisions_per_s"]
    budget: dict[str, float] = {"floor_us": round(floor, 1)}
    for peer in ("bare", "limits"):
        if peer in summary:
            allowed = 1e6 / (TARGETS[f"riskgate/{peer}"] * summary[peer]["decisions_per_s"])
            budget[f"left_at_target_{peer}_us"] = round(allowed - floor, 1)
    for name in RISKGATE_WORKERS:
        if name in summary and RISKGATE_WORKERS[name].workers == 1:
            budget[f"{name}_above_floor_us"] = round(
                1e6 / summary[name]["decisions_per_s"] - floor, 1)
    if "bare" in summary:
        budget["floor/bare"] = round(summary["floor"]["decisions_per_s"]
                                     / summary["bare"]["decisions_per_s"], 3)
    return budget
