"""Where a decision's CPU goes: py-spy samples `riskgate serve` under the bench's load.

Starts Redis and one `riskgate serve` worker (the bench's configuration: the bundled
rules, the decision log to a file), drives `/v1/decide` with wrk and the bench's bodies,
and samples the worker with py-spy. With ``--proxy``, riskgate is the reverse proxy of
the proxy bench instead (its routes, in front of the trivial upstream, driven with the
proxy workload). It prints each stage's share of the samples, from
the innermost frame that says which stage it is, and writes the folded stacks (open them
in https://www.speedscope.app or flamegraph.pl) next to the results.

    make bench-profile            # or: .venv/bin/python bench/profile.py --duration 10
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import proxy_workload
import workload
from harness import (
    HERE,
    BenchError,
    Child,
    free_port,
    redis_server,
    riskgate_argv,
    riskgate_config,
    seconds,
    start_upstream,
    stopping,
    wrk,
)
from proxy_bench import PROXY_ROUTES

#: Stages by the file a frame runs in (py-spy names it from its package, as in
#: ``(uvicorn/server.py:12)``), most specific first; the first that matches
#: the innermost frame wins, so time spent in a library on a stage's behalf (hiredis
#: parsing for the store, ua-parser for signals) is charged to the library, and the
#: riskgate frame that called it is what the "via" column names.
STAGES: tuple[tuple[str, str], ...] = (
    ("riskgate/store/", "store client (riskgate)"),
    ("riskgate/signals/", "signals"),
    ("riskgate/rules/", "rules"),
    ("riskgate/model/", "model"),
    ("riskgate/engine/", "engine (planning, stages)"),
    ("riskgate/decision/", "decision"),
    ("riskgate/event/", "request parsing"),
    ("riskgate/observability/", "metrics and decision log"),
    ("riskgate/http/", "http (riskgate)"),
    ("riskgate/", "riskgate, other"),
    ("(redis/", "redis-py"),
    ("hiredis", "redis-py"),
    ("(prometheus_client/", "metrics and decision log"),
    ("orjson", "json (orjson)"),
    ("(river/", "model"),
    ("(ua_parser/", "signals"),
    ("(maxminddb/", "signals"),
    ("(uvicorn/", "server (uvicorn, httptools)"),
    ("httptools", "server (uvicorn, httptools)"),
    ("(starlette/", "starlette"),
    ("(aiohttp/", "upstream client (aiohttp)"),
    ("(multidict/", "upstream client (aiohttp)"),
    ("(yarl/", "upstream client (aiohttp)"),
    ("(asyncio/", "event loop (asyncio, uvloop)"),
    ("uvloop", "event loop (asyncio, uvloop)"),
)


def stage_of(stack: list[str]) -> str:
    """The stage of one sampled stack (frames outermost first, as py-spy folds them).

    >>> stage_of(["run (uvloop/__init__.py:82)", "decide (riskgate/engine/core.py:120)",
    ...           "facts (riskgate/signals/extractor.py:130)"])
    'signals'
    >>> stage_of(["run (uvloop/__init__.py:82)"])
    'event loop (asyncio, uvloop)'
    """
    for frame in reversed(stack):
        for marker, stage in STAGES:
            if marker in frame:
                return stage
    return "other (interpreter, C)"


def shares(folded: Path) -> tuple[collections.Counter[str], int]:
    """Samples per stage, and the total, from py-spy's raw (folded) output."""
    per_stage: collections.Counter[str] = collections.Counter()
    total = 0
    for line in folded.read_text(encoding="utf-8").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        per_stage[stage_of(stack.split(";"))] += samples
        total += samples
    return per_stage, total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds sampled")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--model", action="store_true", help="with the online model on")
    parser.add_argument("--proxy", action="store_true",
                        help="profile the reverse proxy (the proxy bench's set-up)")
    parser.add_argument("--paced", type=float, metavar="REQ_PER_S",
                        help="with --proxy: send this fixed rate instead of flat out (the "
                             "proxy bench's paced phase runs at half the proxy's maximum)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "profile.folded")
    args = parser.parse_args(argv)
    if args.paced is not None and not args.proxy:
        parser.error("--paced needs --proxy: only proxy.lua paces its requests")
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        raise SystemExit("py-spy is not installed: pip install -e '.[bench]'")
    with tempfile.TemporaryDirectory(prefix="riskgate-profile-") as name:
        tmp = Path(name)
        with redis_server(tmp) as redis:
            children: list[Child] = []
            with stopping(children):
                store = f"redis://127.0.0.1:{redis.port}/0"
                extra = "model: {enabled: true}\n" if args.model else ""
                if args.proxy:
                    upstream, upstream_port = start_upstream(tmp)
                    children.append(upstream)
                    extra += (f"upstream: http://127.0.0.1:{upstream_port}\n"
                              "trusted_proxies: [127.0.0.1/32]\n"
                              "device_id: header:X-Device-Id\n" + PROXY_ROUTES)
                    script, path, requests = "proxy.lua", "/", tmp / "requests.tsv"
                    proxy_workload.write_requests(requests)
                else:
                    script, path, requests = "decide.lua", "/v1/decide", tmp / "bodies.jsonl"
                    workload.write_bodies(requests)
                port = free_port()
                config = riskgate_config(tmp / "riskgate.yaml", store, HERE.parent / "rules",
                                         tmp / "decisions.jsonl", extra)
                server = Child.listening("riskgate", riskgate_argv(config, port), port,
                                         tmp / "riskgate.log")
                children.append(server)
                url = f"http://127.0.0.1:{port}{path}"
                wrk(script, url, "3s", 1, args.connections, str(requests))  # warm-up
                args.out.parent.mkdir(parents=True, exist_ok=True)
                # --gil: only samples of the thread holding the GIL count, so the shares
                # are of the Python work that bounds one worker, not of threads waiting
                # (the decision log's writer) or of the loop waiting in epoll.
                sampler = subprocess.Popen(
                    [py_spy, "record", "--gil", "--pid", str(server.proc.pid),
                     "--rate", str(args.rate),
                     "--duration", str(args.duration), "--format", "raw", "--output",
                     str(args.out), "--nonblocking"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                # proxy.lua paces each wrk thread alone; the profile runs one thread.
                pacing = () if args.paced is None else (f"{args.paced:.3f}",)
                load = wrk(script, url, f"{args.duration + 2}s", 1, args.connections,
                           str(requests), *pacing)
                _, err = sampler.communicate(timeout=seconds(f"{args.duration}s") + 30)
                if sampler.returncode != 0:
                    raise BenchError(f"py-spy failed: {err.decode(errors='replace')}")
    per_stage, total = shares(args.out)
    served = "requests" if args.proxy else "decisions"
    pace = "paced" if args.paced is not None else "under load"
    print(f"profile: {load['rps']:,.0f} {served}/s {pace}, {total} samples "
          f"at {args.rate}/s; folded stacks: {args.out}")
    for stage, samples in per_stage.most_common():
        print(f"  {stage:<34} {100 * samples / total:5.1f} %")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as error:
        print(f"profile: {error}", file=sys.stderr)
        sys.exit(1)
