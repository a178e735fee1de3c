"""Where the proxy's paced p99 goes: riskgate's own work, or time its thread did not run.

``make bench`` holds the proxy's p99 overhead at half its maximum load to 5 ms, and the
same code's rounds have measured from 2 ms to over 30 ms on this shared virtual
machine. This runs the proxy bench's set-up (its upstream, config, routes and request
mix) with riskgate started through bench/loopwatch.py: flat out once, as ``make bench``
drives it before its paced runs, then ``--rounds`` rounds at half that rate (or
``--rate``). Each round prints wrk's latencies, the event-loop stalls in it and, of
their time, how much the loop's thread spent running: running is riskgate's own work
(requests back to back, a long callback, a garbage collection); not running is the
machine's. Also printed: the thread's involuntary context switches, and the cores every
process on the machine used (wrk too), so a stall can be set against what else ran.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import proxy_workload  # bench/proxy_workload.py
from harness import (
    BIN,
    HERE,
    BenchError,
    Child,
    children_cpu_seconds,
    free_port,
    redis_server,
    start_upstream,
    stopping,
    wrk,
)
from proxy_bench import proxy_config


def involuntary_switches(pid: int) -> int:
    """The main thread's: its status line ``nonvoluntary_ctxt_switches``."""
    for line in Path(f"/proc/{pid}/task/{pid}/status").read_text().splitlines():
        if line.startswith("nonvoluntary_ctxt_switches:"):
            return int(line.split()[1])
    raise BenchError(f"/proc/{pid} has no context-switch count")


def cpu_by_process() -> dict[int, tuple[str, float]]:
    """Every process's command name and the CPU seconds it has used so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    used: dict[int, tuple[str, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        fields = stat[stat.rindex(")") + 2:].split()
        used[int(entry.name)] = (stat[stat.index("(") + 1:stat.rindex(")")],
                                 (int(fields[11]) + int(fields[12])) / ticks)
    return used


def cores_by_command(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]],
                     seconds: float, labels: dict[int, str]) -> dict[str, float]:
    """Cores each command used between two readings, by ``labels`` or command name.

    Per process first: a kernel worker renames itself for each job it takes, so its
    name at the end may not be its name at the start.
    """
    cores: dict[str, float] = collections.defaultdict(float)
    for pid, (name, used) in after.items():
        cores[labels.get(pid, name)] += (used - before.get(pid, (name, 0.0))[1]) / seconds
    return cores


def stalls_between(path: Path, start: float, end: float) -> list[dict[str, float]]:
    with path.open(encoding="utf-8") as lines:
        return [stall for stall in map(json.loads, lines) if start <= stall["at"] <= end]


def round_line(number: int, result: dict[str, Any], stalls: list[dict[str, float]],
               switches: int, cores: dict[str, float]) -> str:
    stalled = sum(stall["late_ms"] for stall in stalls)
    running = sum(min(stall["cpu_ms"], stall["late_ms"]) for stall in stalls)
    longest = max((stall["late_ms"] for stall in stalls), default=0.0)
    busiest = ", ".join(f"{name} {cores[name]:.2f}"
                        for name in sorted(cores, key=cores.__getitem__, reverse=True)[:4])
    return (f"round {number}: {result['rps']:,.0f} req/s  p50 {result['p50_us'] / 1e3:.2f}  "
            f"p99 {result['p99_us'] / 1e3:.2f}  max {result['max_us'] / 1e3:.1f} ms | "
            f"{len(stalls)} stalls, {stalled:.0f} ms (longest {longest:.1f}), "
            f"riskgate running in {running:.0f} ms of it | "
            f"{switches:,} involuntary switches | cores: {busiest}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--duration", default="10s", help="of each round and the flat-out run")
    parser.add_argument("--rate", type=float, help="requests/s (default: half of flat out)")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--rules", type=Path, default=HERE.parent / "rules")
    parser.add_argument("--decision-log", choices=("file", "off"), default="file")
    parser.add_argument("--stall-log", type=Path,
                        help="keep every stall here (JSON lines: at, late_ms, cpu_ms)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="riskgate-stalls-") as name:
        tmp = Path(name)
        with redis_server(tmp) as redis:
            children: list[Child] = []
            with stopping(children):
                upstream, upstream_port = start_upstream(tmp)
                children.append(upstream)
                port = free_port()
                config = proxy_config(tmp, redis.port, upstream_port, args)
                stall_log = args.stall_log or tmp / "stalls.jsonl"
                stall_log.write_text("")
                riskgate = Child.listening(
                    "riskgate", [str(BIN / "python"), str(HERE / "loopwatch.py"), str(stall_log),
                                 "serve", "--config", str(config), "--host", "127.0.0.1",
                                 "--port", str(port), "--workers", "1"],
                    port, tmp / "riskgate.log")
                children.append(riskgate)
                requests = tmp / "requests.tsv"
                proxy_workload.write_requests(requests)
                url = f"http://127.0.0.1:{port}/"
                wrk("proxy.lua", url, "3s", 1, args.connections, str(requests))  # warm-up
                rate = args.rate
                if rate is None:
                    flat_out = wrk("proxy.lua", url, args.duration, 1, args.connections,
                                   str(requests))
                    rate = flat_out["rps"] / 2
                    print(f"stalls: flat out {flat_out['rps']:,.0f} req/s; rounds at {rate:,.0f}")
                pid = riskgate.proc.pid
                # Both are "python" to the kernel.
                labels = {pid: "riskgate", upstream.proc.pid: "upstream"}
                for number in range(1, args.rounds + 1):
                    switches, cpu = involuntary_switches(pid), cpu_by_process()
                    waited_for = children_cpu_seconds()  # wrk's, once it has exited
                    start = time.time()
                    result = wrk("proxy.lua", url, args.duration, 1, args.connections,
                                 str(requests), f"{rate:.3f}")
                    end = time.time()
                    shares = cores_by_command(cpu, cpu_by_process(), end - start, labels)
                    shares["wrk"] = (children_cpu_seconds() - waited_for) / (end - start)
                    print(round_line(number, result, stalls_between(stall_log, start, end),
                                     involuntary_switches(pid) - switches, shares), flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as error:
        print(f"stalls: {error}", file=sys.stderr)
        sys.exit(1)
