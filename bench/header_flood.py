"""A large-header attack on the reverse proxy: does ``/healthz`` stay fast? (issue 14)

Starts a trivial upstream and ``riskgate serve`` in proxy mode on the shipped rules
(memory store), measures ``GET /healthz`` latency idle, then again while attacker
threads post to a scored route (``/api/login``) with a 1 MB ``User-Agent`` as fast as
they can. Before the server bounded request heads, one such request froze every
request of the gateway for about a second. The attackers are paced (see
``ATTACKS_PER_SECOND``). Goal: the median under attack stays within
2 x the idle median (the p99 is printed too; on a 2-core machine the attacker's own
threads compete for the CPU). All on 127.0.0.1, bounded in requests and time.
"""

from __future__ import annotations

import contextlib
import http.client
import multiprocessing
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from harness import (
    ROOT,
    Child,
    free_port,
    riskgate_argv,
    riskgate_config,
    start_upstream,
    stopping,
)
from proxy_bench import PROXY_ROUTES

#: How long each phase probes /healthz, back to back on one connection.
PROBE_SECONDS = 3.0
#: Attacker processes, not threads: threads would share this process's interpreter
#: lock with the probe and inflate the latency it measures.
ATTACKERS = 2
#: Each attacker's pace. 100 one-megabyte heads a second in all: enough to freeze an
#: unbounded server outright (one such head cost it ~1 s), while a flood of new
#: connections as fast as the machine allows would measure connection handling
#: rather than header work.
ATTACKS_PER_SECOND = 50
ATTACK_LIMIT_S = 30.0
HUGE_AGENT = "Mozilla/5.0 " + "A" * 2**20
GOAL = 2.0


def probe_latencies(port: int, seconds: float) -> list[float]:
    """Sequential /healthz requests for ``seconds`` on one kept-alive connection, in ms."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    latencies: list[float] = []
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            started = time.perf_counter()
            conn.request("GET", "/healthz")
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"/healthz answered {response.status}")
            latencies.append((time.perf_counter() - started) * 1000)
    finally:
        conn.close()
    return latencies


def attack(port: int, stop: Any, statuses: Any) -> None:
    """Post a 1 MB User-Agent to a scored route until ``stop``; count the answers."""
    head = (f"POST /api/login HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: {HUGE_AGENT}\r\n"
            "Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}").encode()
    started = time.monotonic()
    deadline, sent = started + ATTACK_LIMIT_S, 0
    while not stop.is_set() and time.monotonic() < deadline:
        sent += 1
        time.sleep(max(0.0, started + sent / ATTACKS_PER_SECOND - time.monotonic()))
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 10) \
                as conn:
            with contextlib.suppress(OSError):
                conn.sendall(head)
            line = conn.makefile("rb").readline()
            status = int(line.split()[1]) if line else 0
            with statuses.get_lock():
                statuses[0] += 1
                statuses[1] += status == 431


def summary(latencies: list[float]) -> tuple[float, float]:
    ordered = sorted(latencies)
    return statistics.median(ordered), ordered[int(len(ordered) * 0.99) - 1]


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="riskgate-flood-") as name:
        tmp = Path(name)
        children: list[Child] = []
        with stopping(children):
            upstream, upstream_port = start_upstream(tmp)
            children.append(upstream)
            gateway_port = free_port()
            config = riskgate_config(
                tmp / "riskgate.yaml", "memory://", ROOT / "rules", None,
                f"upstream: http://127.0.0.1:{upstream_port}\n" + PROXY_ROUTES)
            children.append(Child.listening("riskgate", riskgate_argv(config, gateway_port),
                                            gateway_port, tmp / "riskgate.log"))
            probe_latencies(gateway_port, 0.5)  # warm-up
            idle = summary(probe_latencies(gateway_port, PROBE_SECONDS))
            stop, statuses = multiprocessing.Event(), multiprocessing.Array("l", 2)
            attackers = [multiprocessing.Process(target=attack, args=(gateway_port, stop,
                                                                      statuses))
                         for _ in range(ATTACKERS)]
            for process in attackers:
                process.start()
            try:
                time.sleep(0.5)  # let the flood build up
                flooded = summary(probe_latencies(gateway_port, PROBE_SECONDS))
            finally:
                stop.set()
                for process in attackers:
                    process.join(ATTACK_LIMIT_S + 15)
                    if process.is_alive():
                        process.kill()
    ratios = [flooded[i] / idle[i] if idle[i] else float("inf") for i in (0, 1)]
    verdict = "meets" if ratios[0] <= GOAL else "MISSES"
    sent, refused = statuses[0], statuses[1]
    print(f"header flood: /healthz p50 {idle[0]:.2f} ms idle, {flooded[0]:.2f} ms under attack "
          f"({ratios[0]:.2f}x, goal <= {GOAL:g}x {verdict}); p99 {idle[1]:.2f} -> "
          f"{flooded[1]:.2f} ms ({ratios[1]:.2f}x); {sent} attack requests of 1 MB "
          f"({ATTACKERS * ATTACKS_PER_SECOND}/s), "
          f"{refused} answered 431")
    return 0


if __name__ == "__main__":
    sys.exit(main())
