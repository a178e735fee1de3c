"""``make bench``: riskgate's decision API against two peers, over HTTP, in one run.

What it does, all on 127.0.0.1 and cleaned up at the end (also on Ctrl-C or an error):

1. starts a throw-away ``redis-server`` (no persistence) on a free port;
2. starts the servers, one uvicorn worker each (uvloop, httptools, no access log):
   ``bare`` (Starlette, parse and answer), ``limits`` (plus the `limits` library's
   sliding-window limiter per IP on Redis), ``floor`` (bare plus one Redis script call,
   sent as riskgate's store sends its one) and ``riskgate serve`` on the bundled rules
   with the Redis store and the decision log on (to a temp file: it is part of the path),
   also with two workers and with the online model;
3. drives each with ``wrk`` and bench/decide.lua (varied bodies from bench/workload.py,
   fixed seed), a warm-up first, then ``--runs`` measured runs interleaved across the
   servers so drift hits all of them alike;
4. counts Redis commands per decision: the commands each decision *sends* from a short
   untimed audit run under ``MONITOR`` (the target: exactly 1, the EVALSHA), and
   ``INFO commandstats`` around every timed run (which also counts what scripts call);
5. prints medians and the ratios against the targets of issue #2, runs the in-process
   micro-benchmarks when they exist, and writes everything to bench/results/latest.json;
6. with ``proxy`` among ``--servers`` (the default), measures the reverse proxy (issue #5):
   a trivial upstream straight, through riskgate's forwarding alone and through
   ``riskgate serve``, interleaved, first at full speed, then all at a fixed rate of
   half the proxy's measured maximum, where the p99 overhead is held against the goal,
   then forwarding alone at half its own maximum: the same measure for a decision that
   cost nothing, the floor under the goal (see bench/proxy_bench.py).

Exit status: 0 when every run completed without a non-2xx answer or socket error, 1 if
not (including riskgate failing to start), 2 if the harness itself could not run. Missing
the performance targets is reported, not an error: this is a benchmark, not a test.

Modules: harness.py (processes, Redis, wrk, CPU accounting), decide_bench.py,
proxy_bench.py and report.py; this file only parses the arguments and runs them in turn.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

import decide_bench
import proxy_bench
import report
import workload  # bench/workload.py; bench/ is on sys.path as the script's folder
from decide_bench import SERVERS
from harness import HERE, ROOT, BenchError, redis_server, run_script, seconds

#: The reverse-proxy measurement, selected with the decide servers in --servers.
PROXY = "proxy"
#: Scripts run after the servers, each printing its own figures: the in-process
#: micro-benchmarks, the large-header attack, the Redis fault run and the model's evaluation.
MICRO_BENCHES = ("rules_bench.py", "signals_bench.py", "header_flood.py", "fault_run.py",
                 "model_eval.py")


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


def micro_benches() -> dict[str, str]:
    """Run the in-process micro-benchmarks that exist; each one's output lines."""
    return {script: run_script(HERE / script) if (HERE / script).exists()
            else "skipped: not written yet" for script in MICRO_BENCHES}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _sigterm)
    for tool in ("redis-server", "wrk"):
        if shutil.which(tool) is None:
            print(f"bench: `{tool}` is not installed; run: sudo apt-get install -y {tool}",
                  file=sys.stderr)
            return 2
    problems: list[str] = []
    proxy = None
    with tempfile.TemporaryDirectory(prefix="riskgate-bench-") as tmp_name, \
            redis_server(Path(tmp_name)) as redis:
        tmp = Path(tmp_name)
        bodies_file = tmp / "bodies.jsonl"
        bodies = workload.write_bodies(bodies_file, args.bodies)
        print(f"bench: redis-server on 127.0.0.1:{redis.port}; {len(bodies)} bodies "
              f"(seed {workload.SEED}); wrk {args.threads} thread(s), {args.connections} "
              f"connections, {args.warmup} warm-up, {args.runs} x {args.duration} per server; "
              f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}", flush=True)
        servers, audits = decide_bench.run(args, tmp, redis, bodies_file, bodies, problems)
        if PROXY in args.servers:
            try:
                proxy = proxy_bench.run(args, tmp, redis, problems)
            except (BenchError, OSError) as exc:
                problems.append(f"the proxy could not be measured: {exc}")
                print("!! the proxy could not be measured (why: at the end)", flush=True)

    micro = {} if args.no_micro else micro_benches()
    summary = decide_bench.summarize(servers, audits)
    proxy_summary = proxy_bench.summarize(proxy) if proxy is not None else None
    runs = {name: server.runs for name, server in servers.items()}
    report.print_report(summary, runs, audits, micro, proxy_summary, problems)
    results = report.write_results(args, summary=summary, runs=runs, audits=audits,
                                   micro=micro, proxy=proxy, proxy_summary=proxy_summary,
                                   problems=problems)
    print(f"results: {results.relative_to(ROOT)}")
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
