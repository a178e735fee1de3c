"""The reverse-proxy bench (issue #5): a trivial upstream straight and through riskgate.

The same upstream (baselines.upstream_app) measured three ways in one run: ``direct``
(wrk -> upstream), ``forward`` (wrk -> riskgate's ProxyApp alone, no decision ->
upstream: the floor) and ``through`` (wrk -> riskgate serve -> upstream), with the
request mix of proxy_workload.py replayed by proxy.lua. Phase 1 drives them flat out at
--proxy-connections; phase 2 sends each the same fixed rate, half the median maximum of
``through``, where the goal is p99(through) - p99(direct) <= 5 ms. Phase 3 is the floor
under that goal: ``forward`` and ``direct`` at half the median maximum of ``forward``,
which is what the goal would measure if a decision cost nothing. Runs are interleaved
within each phase, the order rotated every round, as for the decide bench.
"""

from __future__ import annotations

import argparse
import http.client
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import proxy_workload  # bench/proxy_workload.py
from harness import (
    NOISY_CORES,
    BenchError,
    Child,
    RedisServer,
    busy_cpu_seconds,
    cpu_seconds,
    decision_counts,
    flush_db,
    free_port,
    median,
    riskgate_argv,
    riskgate_config,
    rotated,
    run_summary,
    start_upstream,
    stopping,
    uvicorn_argv,
    wait_for_quiet,
    wrk,
)

TARGETS = {"proxy_p99_overhead_ms": 5.0}
#: Flat out; at half the proxy's maximum (the goal's rate); forwarding alone at half its own.
PHASES = ("max", "paced", "floor")
#: ``forward`` is riskgate's forwarding alone (baselines.forward_app): the proxy's floor.
PROXY_TARGETS = ("direct", "forward", "through")
#: Expected answers: 2xx, a failed login's 401 (the upstream's, passed on) and, through
#: riskgate only, the 403 of a challenge or block. Anything else is an error.
PROXY_STATUSES = {"direct": {200, 201, 401}, "forward": {200, 201, 401},
                  "through": {200, 201, 401, 403}}
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
        default_factory=lambda: {"max": [], "paced": [], "floor": []})


def proxy_config(tmp: Path, redis_port: int, upstream_port: int, args: argparse.Namespace,
                 ) -> Path:
    # Every request comes from 127.0.0.1 with the client's address in X-Forwarded-For:
    # trusting 127.0.0.1 for it is what makes per-IP counters see many clients.
    return riskgate_config(
        tmp / "riskgate-proxy.yaml", f"redis://127.0.0.1:{redis_port}/{PROXY_DB}", args.rules,
        tmp / "proxy-decisions.jsonl" if args.decision_log == "file" else None,
        f"upstream: http://127.0.0.1:{upstream_port}\n"
        "trusted_proxies: [127.0.0.1/32]\n"
        "device_id: header:X-Device-Id\n" + PROXY_ROUTES)


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


def riskgate_decisions(port: int) -> dict[str, float]:
    counts = decision_counts(port)
    if counts is None:
        raise BenchError(f"riskgate on port {port} answered no /metrics")
    return counts


def run_proxy_wrk(port: int, duration: str, args: argparse.Namespace, requests_file: Path,
                  rate: float | None = None) -> dict[str, Any]:
    # proxy.lua paces each thread alone, so it gets the thread's share of the rate.
    pacing = () if rate is None else (f"{rate / args.threads:.3f}",)
    result = wrk("proxy.lua", f"http://127.0.0.1:{port}/", duration, args.threads,
                 args.proxy_connections, str(requests_file), *pacing)
    if rate is not None:
        result["target_rps"] = round(rate, 1)
    return result


def measure_proxy(target: ProxyTarget, phase: str, args: argparse.Namespace,
                  requests_file: Path, redis: RedisServer, rate: float | None,
                  ) -> dict[str, Any]:
    through = target.name == "through"
    if through:
        # Every ``through`` run starts from the same state: otherwise counters would carry
        # the earlier runs' requests and later runs would see more challenges (which skip
        # the upstream) than earlier ones, so the runs would not compare.
        flush_db(redis.port, PROXY_DB)
        decisions_before = riskgate_decisions(target.port)
    pids = {c.name: c.proc.pid for c in target.children} | {"redis-server": redis.pid}
    before = [cpu_seconds(pid) for pid in pids.values()] + [busy_cpu_seconds(),
                                                            time.monotonic()]
    result = run_proxy_wrk(target.port, args.duration, args, requests_file, rate)
    after = [cpu_seconds(pid) for pid in pids.values()] + [busy_cpu_seconds(), time.monotonic()]
    used = [a - b for a, b in zip(after, before, strict=True)]
    *process_cpu, busy, wall = used
    requests = max(result["requests"], 1)
    for name, cpu in zip(pids, process_cpu, strict=True):
        result[f"{name}_cpu_us_per_request"] = round(cpu * 1e6 / requests, 1)
    # Everything but our servers and Redis (wrk included, unlike the decide bench: its
    # CPU here is the same for both targets at the same rate).
    result["other_cpu_cores"] = round((busy - sum(process_cpu)) / wall, 2)
    if through:
        time.sleep(0.5)  # let requests in flight when wrk stopped be counted
        decisions_after = riskgate_decisions(target.port)
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


def run(args: argparse.Namespace, tmp: Path, redis: RedisServer, problems: list[str],
        ) -> dict[str, Any]:
    """Both phases of the proxy measurement; returns the runs (summarized later).

    The upstream and riskgate are stopped on return.
    """
    requests_file = tmp / "proxy-requests.tsv"
    requests = proxy_workload.write_requests(requests_file, args.proxy_requests)
    children: list[Child] = []
    with stopping(children):
        upstream, upstream_port = start_upstream(tmp)
        children.append(upstream)
        gateway_port = free_port()
        config = proxy_config(tmp, redis.port, upstream_port, args)
        gateway = Child.listening("riskgate", riskgate_argv(config, gateway_port),
                                  gateway_port, tmp / "riskgate-proxy.log")
        children.append(gateway)
        forward_port = free_port()
        forward = Child.listening(
            "forward", uvicorn_argv("baselines:forward_app", forward_port), forward_port,
            tmp / "forward.log", {**os.environ, "BENCH_UPSTREAM": f"http://127.0.0.1:{upstream_port}"})
        children.append(forward)
        targets = {"direct": ProxyTarget("direct", upstream_port, [upstream]),
                   "forward": ProxyTarget("forward", forward_port, [forward, upstream]),
                   "through": ProxyTarget("through", gateway_port, [gateway, upstream])}
        check_proxy(gateway_port, requests[:40])
        print(f"bench: proxy: upstream on 127.0.0.1:{upstream_port}, riskgate serve on "
              f"127.0.0.1:{gateway_port}; {len(requests)} requests "
              f"(seed {proxy_workload.SEED}), {args.proxy_connections} connections",
              flush=True)
        for target in targets.values():
            warmup = run_proxy_wrk(target.port, args.warmup, args, requests_file)
            for problem in proxy_problems(target.name, "warm-up", 0, warmup):
                problems.append(problem)
                print(f"!! {problem}", flush=True)

        def phase(name: str, rate: float | None, names: tuple[str, ...] = PROXY_TARGETS,
                  ) -> None:
            for round_ in range(args.runs):
                for target_name in rotated(list(names), round_):
                    target = targets[target_name]
                    quiet = wait_for_quiet(args.quiet_wait)
                    result = measure_proxy(target, name, args, requests_file, redis, rate)
                    result["load_before_cores"] = quiet
                    target.runs[name].append(result)
                    note = ""
                    for problem in proxy_problems(target_name, name, round_, result):
                        problems.append(problem)
                        note += f"  !! {problem}"
                    if rate is not None and result["rps"] < PACE_TOLERANCE * rate:
                        note += f"  (fell behind the {rate:,.0f} req/s target)"
                    print(f"bench: proxy {name:<5} run {round_ + 1}/{args.runs} "
                          f"{target_name:<7} {run_summary(result, note)}", flush=True)
                    for child in target.children:
                        child.check_alive("the proxy run")

        phase("max", None)
        half = median(targets["through"].runs["max"], "rps") / 2
        print(f"bench: proxy: paced runs at {half:,.0f} req/s, half the proxy's median "
              "maximum", flush=True)
        phase("paced", half)
        floor = median(targets["forward"].runs["max"], "rps") / 2
        print(f"bench: proxy: the floor: forwarding alone at {floor:,.0f} req/s, half its own "
              "median maximum", flush=True)
        phase("floor", floor, ("direct", "forward"))
    return {"rate": half, "floor_rate": floor,
            "runs": {name: t.runs for name, t in targets.items()}}


def _overhead_ms(proxied: dict[str, Any], direct: dict[str, Any], key: str = "p99_us",
                 ) -> float:
    """What going through the proxy added to a latency percentile, in ms."""
    return round((proxied[key] - direct[key]) / 1000, 2)


def _overhead_ms_per_round(runs: dict[str, Any], phase: str, proxy: str) -> list[float]:
    return [_overhead_ms(proxied, direct) for proxied, direct in
            zip(runs[proxy][phase], runs["direct"][phase], strict=True)]


def summarize(proxy: dict[str, Any]) -> dict[str, Any]:
    runs = proxy["runs"]
    summary: dict[str, Any] = {"paced_rate_rps": round(proxy["rate"], 1),
                               "floor_rate_rps": round(proxy["floor_rate"], 1)}
    for phase in PHASES:
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
            for key in ("upstream_cpu_us_per_request", "redis-server_cpu_us_per_request"):
                if key in done[0]:
                    row[key.replace("-server", "")] = median(done, key)
            for server in ("riskgate", "forward"):
                if f"{server}_cpu_us_per_request" in done[0]:
                    row["proxy_cpu_us_per_request"] = median(done,
                                                             f"{server}_cpu_us_per_request")
            rows[target] = row
        summary[phase] = rows
    paced = summary["paced"]
    if "direct" in paced and "through" in paced:
        summary["p50_overhead_ms"] = _overhead_ms(paced["through"], paced["direct"], "p50_us")
        summary["p99_overhead_ms"] = _overhead_ms(paced["through"], paced["direct"])
        # Per round too (runs seconds apart), to see how steady the difference is.
        summary["p99_overhead_ms per round"] = _overhead_ms_per_round(runs, "paced", "through")
        summary["meets_goal"] = summary["p99_overhead_ms"] <= TARGETS["proxy_p99_overhead_ms"]
    if "direct" in paced and "forward" in paced:
        # What forwarding alone adds at the same rate, with no decision.
        summary["forward_p99_overhead_ms"] = _overhead_ms(paced["forward"], paced["direct"])
    floor = summary["floor"]
    if "direct" in floor and "forward" in floor:
        # The goal's own measure for a proxy whose decisions cost nothing.
        summary["floor_p99_overhead_ms"] = _overhead_ms(floor["forward"], floor["direct"])
        summary["floor_p99_overhead_ms per round"] = _overhead_ms_per_round(
            runs, "floor", "forward")
    # How busy the proxy's one worker was at the paced rate: queueing, not the work of
    # one request, is what a p99 at a steady rate measures once this nears one.
    for phase, proxy_name, rate in (("paced", "through", summary["paced_rate_rps"]),
                                    ("floor", "forward", summary["floor_rate_rps"])):
        cpu = summary[phase].get(proxy_name, {}).get("proxy_cpu_us_per_request")
        if cpu is not None:
            summary[f"{phase}_{proxy_name}_busy"] = round(rate * cpu / 1e6, 2)
    for target in ("through", "forward"):
        if summary["max"].get(target) and summary["max"].get("direct"):
            summary[f"max_{target}/direct"] = round(
                summary["max"][target]["rps"] / summary["max"]["direct"]["rps"], 3)
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
