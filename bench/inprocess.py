"""CPU per decision inside the gateway's own process: the ASGI app without a server.

``make bench`` measures whole servers under wrk, where the server, the kernel and wrk
share the machine's cores and one change's effect drowns in their noise. This drives the
very app ``riskgate serve`` runs (bundled rules, a real Redis, the decision log to a
file) by calling it as uvicorn would, on uvloop, ``--concurrency`` requests in flight,
and reports the process's CPU time per decision (all threads: the decision log's
writer too). To compare two trees, run each tree's copy with its own interpreter,
alternating:

    .venv/bin/python bench/inprocess.py [--model]
    ../other/.venv/bin/python ../other/bench/inprocess.py

Where the time goes: ``.venv/bin/py-spy record --format speedscope -o /tmp/p.json --
.venv/bin/python bench/inprocess.py`` (no cProfile here: this folder's ``profile.py``
shadows the module cProfile is built on).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import uvloop
import workload
from harness import ROOT, redis_server, riskgate_config

from riskgate.config import load_config
from riskgate.http.app import create_app

Message = dict[str, Any]
ASGI = Callable[[Message, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
                Awaitable[None]]


async def _started(app: ASGI) -> tuple[asyncio.Queue[Message], asyncio.Task[None]]:
    """Run the app's lifespan start-up; the queue ends it, the task runs it."""
    inbox: asyncio.Queue[Message] = asyncio.Queue()
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    await inbox.put({"type": "lifespan.startup"})

    async def send(message: Message) -> None:
        if message["type"].startswith("lifespan.startup") and not ready.done():
            ready.set_result(message["type"])

    lifespan = asyncio.create_task(
        app({"type": "lifespan", "asgi": {"version": "3.0"}}, inbox.get, send))
    if await ready != "lifespan.startup.complete":
        raise SystemExit("riskgate did not start")
    return inbox, lifespan


async def _decide(app: ASGI, body: bytes) -> None:
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": "/v1/decide",
             "raw_path": b"/v1/decide", "query_string": b"", "root_path": "",
             "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8080),
             "headers": [(b"content-type", b"application/json"),
                         (b"content-length", b"%d" % len(body))]}
    status: list[int] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])

    await app(scope, receive, send)
    if status != [200]:
        raise SystemExit(f"/v1/decide answered {status}")


async def _measure(args: argparse.Namespace, redis_port: int, tmp: Path) -> list[float]:
    extra = "model: {enabled: true}\n" if args.model else ""
    config = riskgate_config(tmp / "riskgate.yaml", f"redis://127.0.0.1:{redis_port}/0",
                             ROOT / "rules", tmp / "decisions.log", extra)
    app: ASGI = create_app(load_config(config))
    shutdown, lifespan = await _started(app)
    bodies = [body.encode() for body in workload.bodies(args.decisions)]
    slots = asyncio.Semaphore(args.concurrency)

    async def one(body: bytes) -> None:
        async with slots:
            await _decide(app, body)

    await asyncio.gather(*(one(body) for body in bodies[:1000]))  # warm caches and the model
    per_decision = []
    for _ in range(args.rounds):
        started = time.process_time()
        await asyncio.gather(*(one(body) for body in bodies))
        await asyncio.sleep(0.05)  # what the model learns after the responses
        per_decision.append((time.process_time() - started) / len(bodies) * 1e6)
    await shutdown.put({"type": "lifespan.shutdown"})
    await lifespan
    return per_decision


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", action="store_true", help="with the online model on")
    parser.add_argument("--decisions", type=int, default=6000, help="per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory, redis_server(Path(directory)) as redis:
        # The event loop riskgate serve runs on (uvicorn picks uvloop when installed).
        runs = uvloop.run(_measure(args, redis.port, Path(directory)))
    print(f"inprocess: {statistics.median(runs):.0f} µs CPU per decision (median of "
          f"{len(runs)}: {' '.join(f'{run:.0f}' for run in runs)})"
          f"{' with the model' if args.model else ''}")


if __name__ == "__main__":
    main()
