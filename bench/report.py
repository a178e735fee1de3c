"""The bench's report: the tables and verdicts printed at the end, and the results JSON."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

import decide_bench
import proxy_bench
import workload  # bench/workload.py
from harness import HERE, NOISY_CORES

RESULTS = HERE / "results" / "latest.json"
TARGETS = decide_bench.TARGETS | proxy_bench.TARGETS


def print_report(summary: dict[str, Any], runs: dict[str, list[dict[str, Any]]],
                 audits: dict[str, dict[str, Any]], micro: dict[str, str],
                 proxy_summary: dict[str, Any] | None, problems: list[str]) -> None:
    if runs:
        print_decide(summary, runs, audits)
    for script, line in micro.items():
        print(f"{script}: {line}")
    if proxy_summary is not None:
        print_proxy(proxy_summary)
    for problem in problems:
        print(f"!! {problem}")


def print_decide(summary: dict[str, Any], runs: dict[str, list[dict[str, Any]]],
                 audits: dict[str, dict[str, Any]]) -> None:
    print()
    print(f"{'server':<14} {'decisions/s':>12} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'CPU µs/req':>11} {'resp B':>7}   runs (req/s)")
    for name in decide_bench.SERVERS:
        row = summary.get(name)
        if row is None:
            print(f"{name:<14} {'(did not run)':>12}")
            continue
        rates = " ".join(f"{r['rps']:,.0f}" + ("*" if r["other_cpu_cores"] > NOISY_CORES else "")
                         for r in runs[name])
        print(f"{name:<14} {row['decisions_per_s']:>12,.0f} {row['p50_us'] / 1000:>8.2f} "
              f"{row['p99_us'] / 1000:>8.2f} {row['server_cpu_us_per_request']:>11.0f} "
              f"{row['bytes_per_response']:>7.0f}   {rates}")
    if any(row.get("noisy_runs") for row in summary.values() if isinstance(row, dict)):
        print(f"  * other processes used more than {NOISY_CORES} cores during that run")
    print()
    for ratio in ("riskgate/bare", "riskgate/limits", *decide_bench.MODEL_RATIOS):
        if ratio in summary:
            # With the model on, the same targets as without (issue 11).
            target = TARGETS[ratio.replace("riskgate-model/", "riskgate/")]
            verdict = "meets" if summary[ratio] >= target else "BELOW"
            rounds = " ".join(f"{r:.2f}" for r in summary[f"{ratio} per round"])
            print(f"{ratio:<21} {summary[ratio]:>6.2f}   target ≥ {target}  {verdict}"
                  f"   (per round: {rounds})")
    if "riskgate-model/riskgate" in summary:
        rounds = " ".join(f"{r:.2f}" for r in summary["riskgate-model/riskgate per round"])
        print(f"{'riskgate-model/riskgate':<21} {summary['riskgate-model/riskgate']:>6.2f}   "
              f"the model's cost in throughput; "
              f"{summary['model_cpu_us_per_decision']:+.0f} µs CPU per decision "
              f"(per round: {rounds})")
    if "floor_budget" in summary:
        print_floor(summary["floor_budget"])
    if "riskgate2/riskgate" in summary:
        print(f"{'riskgate2/riskgate':<16} {summary['riskgate2/riskgate']:>6.2f}   "
              f"2 workers against 1, on {os.cpu_count()} CPUs shared with wrk and Redis")
    for name in ("riskgate", "riskgate2", "riskgate-model", "limits"):
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
            elif name == "riskgate-model":
                # Not all on the request path: label vectors go in batches after responses.
                line += "   (1 per decision, plus the label vectors' batches)"
            print(line)
            print(f"  run inside scripts per decision: "
                  f"{audit['called_by_scripts_per_decision']:.2f} "
                  f"({by_name(audit['called_by_scripts'])})")
        else:
            print(f"{name}: commands sent per decision not audited (--audit 0s)")
        print(f"  INFO commandstats over the timed runs: {row['commands_per_decision']:.2f} calls "
              f"per decision with the script's own, EVALSHA {row['evalsha_per_decision']:.3f}")


def print_floor(budget: dict[str, float]) -> None:
    versus_bare = f" (floor/bare {budget['floor/bare']:.2f})" if "floor/bare" in budget else ""
    print(f"floor: {budget['floor_us']:.0f} µs per decision for the server, the JSON, one "
          f"Redis script call and the answer{versus_bare}")
    for peer in ("bare", "limits"):
        key = f"left_at_target_{peer}_us"
        if key in budget:
            target = TARGETS[f"riskgate/{peer}"]
            print(f"  at riskgate/{peer} = {target}, riskgate's own work may cost "
                  f"{budget[key]:.0f} µs")
    for name in ("riskgate", "riskgate-model"):
        key = f"{name}_above_floor_us"
        if key in budget:
            print(f"  {name}'s own work costs {budget[key]:.0f} µs")


def print_proxy(summary: dict[str, Any]) -> None:
    print()
    print(f"proxy      {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'proxy CPU µs':>12}   "
          f"runs (req/s; p99 ms)")
    for phase in proxy_bench.PHASES:
        for target in proxy_bench.PROXY_TARGETS:
            row = summary[phase].get(target)
            if row is None:
                continue
            cpu = row.get("proxy_cpu_us_per_request")
            rates = " ".join(f"{r:,.0f}" for r in row["runs_rps"])
            p99s = " ".join(f"{p / 1000:.1f}" for p in row["runs_p99_us"])
            print(f"{phase:<5} {target:<7} {row['rps']:>8,.0f} {row['p50_us'] / 1000:>8.2f} "
                  f"{row['p99_us'] / 1000:>8.2f} {'' if cpu is None else f'{cpu:.0f}':>12}   "
                  f"{rates}; {p99s}" + ("  *" if row["noisy_runs"] else ""))
    if "max_through/direct" in summary:
        print(f"max throughput through/direct {summary['max_through/direct']:.3f}", end="")
        if "max_forward/direct" in summary:
            print(f"; forwarding alone (riskgate's ProxyApp, no decision) "
                  f"{summary['max_forward/direct']:.3f}", end="")
        print()
    if "p99_overhead_ms" in summary:
        goal = TARGETS["proxy_p99_overhead_ms"]
        rounds = " ".join(f"{v:.2f}" for v in summary["p99_overhead_ms per round"])
        print(f"at {summary['paced_rate_rps']:,.0f} req/s (half the proxy's max): p99 overhead "
              f"{summary['p99_overhead_ms']:.2f} ms  goal ≤ {goal:g} ms  "
              f"{'meets' if summary['meets_goal'] else 'MISSES'}   (per round: {rounds}); "
              f"p50 overhead {summary['p50_overhead_ms']:.2f} ms")
        if "forward_p99_overhead_ms" in summary:
            print(f"  forwarding alone at the same rate: p99 overhead "
                  f"{summary['forward_p99_overhead_ms']:.2f} ms")
        if "paced_through_busy" in summary:
            print(f"  the proxy's worker busy {summary['paced_through_busy']:.0%} of the time "
                  "at that rate")
    if "floor_p99_overhead_ms" in summary:
        rounds = " ".join(f"{v:.2f}" for v in summary["floor_p99_overhead_ms per round"])
        busy = summary.get("floor_forward_busy")
        print(f"the floor, forwarding alone at {summary['floor_rate_rps']:,.0f} req/s (half its "
              f"own max): p99 overhead {summary['floor_p99_overhead_ms']:.2f} ms (per round: "
              f"{rounds})" + ("" if busy is None else f", its worker busy {busy:.0%}"))
    shares = ", ".join(f"{d} {s:.1%}" for d, s in summary["decision_shares"].items())
    print(f"proxy decisions (riskgate_decisions_total, all through runs): {shares or 'none'}")
    print("  " + ", ".join(f"{k}={v}" for k, v in summary["decisions"].items()))


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


def write_results(args: argparse.Namespace, *, summary: dict[str, Any],
                  runs: dict[str, list[dict[str, Any]]], audits: dict[str, dict[str, Any]],
                  micro: dict[str, str], proxy: dict[str, Any] | None,
                  proxy_summary: dict[str, Any] | None, problems: list[str]) -> Path:
    """Everything measured, with the settings, machine and versions, to ``RESULTS``."""
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "settings": vars(args) | {"seed": workload.SEED},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "versions": versions(),
        "targets": TARGETS,
        "summary": summary,
        "runs": runs,
        "command_audit": audits,
        "micro": micro,
        "proxy": None if proxy is None else {"summary": proxy_summary, **proxy},
        "problems": problems,
    }, indent=2, default=str) + "\n", encoding="utf-8")
    return RESULTS
