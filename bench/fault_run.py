"""The fault run (issues 9 and 14): steady decisions while Redis stalls, dies and forgets.

Starts a throw-away ``redis-server`` and ``riskgate serve`` (decision API, the shipped
rules, the Redis store, the decision log to a file), then offers decisions at a fixed
rate on 127.0.0.1 while, in turn:

1. Redis is paused for 5 s (SIGSTOP, then SIGCONT): connections stay open, nothing
   answers, the worst case for a client;
2. Redis is killed and started again, empty, on the same port;
3. Redis forgets its scripts (SCRIPT FLUSH), as after a failover to a fresh replica.

It prints the requests sent, unanswered, 5xx, answered ``degraded``, decision-log lines
lost (answered request ids missing from the log after a clean shutdown), and per fault
the seconds until decisions are whole again (the first non-degraded answer to a request
sent after the fault ended). During the stall it prints the share of the offered rate
answered and the p99 latency. Goals: 0 unanswered, 0 5xx, 0 log lines lost, recovery
< 1 s; during the stall >= 90 % of the offered rate answered and p99 <= 50 ms.

Everything is bounded: the run lasts about 25 s; requests time out after 5 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from harness import (
    ROOT,
    Child,
    free_port,
    redis_command,
    redis_server,
    riskgate_argv,
    riskgate_config,
    stopping,
)

from support import RedisServer

RATE = 200  # decisions offered per second
BODY = json.dumps({"event": "login", "ip": "198.51.100.7", "account": "fault@example.com",
                   "user_agent": "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 "
                                 "Firefox/128.0"})
STALL_S = 5.0


@dataclass
class Answer:
    sent: float  # seconds since the run started
    latency: float | None  # None: unanswered
    status: int = 0
    degraded: bool = False
    request_id: str = ""


@dataclass
class Fault:
    name: str
    started: float
    ended: float


async def one(session: aiohttp.ClientSession, url: str, start: float) -> Answer:
    sent = time.monotonic() - start
    try:
        async with session.post(url, data=BODY,
                                headers={"content-type": "application/json"}) as response:
            status = response.status
            payload = await response.json(content_type=None) if status == 200 else {}
    except (aiohttp.ClientError, TimeoutError):
        return Answer(sent, None)
    return Answer(sent, time.monotonic() - start - sent, status,
                  bool(payload.get("degraded")), str(payload.get("request_id", "")))


async def offer(url: str, seconds: float, start: float) -> list[Answer]:
    """Send ``RATE`` decisions a second for ``seconds``, whatever answers come back."""
    timeout = aiohttp.ClientTimeout(total=5)
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        tasks = []
        for n in range(int(seconds * RATE)):
            await asyncio.sleep(max(0.0, n / RATE - (time.monotonic() - start)))
            tasks.append(asyncio.create_task(one(session, url, start)))
        return list(await asyncio.gather(*tasks))


async def faults(redis: RedisServer, start: float) -> list[Fault]:
    """Stall, kill and flush Redis on a schedule; when each fault began and ended."""
    done = []
    await asyncio.sleep(3 - (time.monotonic() - start))
    began = time.monotonic() - start
    with redis.paused():
        await asyncio.sleep(STALL_S)
    done.append(Fault("paused 5 s (SIGSTOP)", began, time.monotonic() - start))
    await asyncio.sleep(4)
    began = time.monotonic() - start
    await asyncio.to_thread(redis.stop)
    await asyncio.to_thread(redis.start)
    done.append(Fault("killed and restarted", began, time.monotonic() - start))
    await asyncio.sleep(4)
    began = time.monotonic() - start
    redis_command(redis.port, "SCRIPT", "FLUSH")
    done.append(Fault("scripts flushed", began, time.monotonic() - start))
    return done


def recovery(answers: list[Answer], fault: Fault) -> float | None:
    """Seconds from the fault's end to the first whole answer to a request sent after."""
    for answer in answers:
        if answer.sent >= fault.ended and answer.status == 200 and not answer.degraded:
            return answer.sent + (answer.latency or 0) - fault.ended
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the load")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="riskgate-faults-") as name:
        tmp = Path(name)
        log = tmp / "decisions.jsonl"
        children: list[Child] = []
        with redis_server(tmp) as redis, stopping(children):
            port = free_port()
            config = riskgate_config(tmp / "riskgate.yaml", redis.url, ROOT / "rules", log)
            gateway = Child.listening("riskgate", riskgate_argv(config, port), port,
                                      tmp / "riskgate.log")
            children.append(gateway)

            async def run() -> tuple[list[Answer], list[Fault]]:
                start = time.monotonic()
                return await asyncio.gather(
                    offer(f"http://127.0.0.1:{port}/v1/decide", args.seconds, start),
                    faults(redis, start))

            answers, done = asyncio.run(run())
            gateway.stop()  # SIGTERM: a clean shutdown flushes the decision log
        logged = {json.loads(line).get("request_id") for line in log.read_text().splitlines()
                  if line.strip()}
    answered = [a for a in answers if a.latency is not None]
    ids = {a.request_id for a in answered if a.status == 200}
    stall = done[0]
    during = [a for a in answers if stall.started <= a.sent < stall.ended]
    during_answered = sorted(a.latency for a in during if a.latency is not None)
    share = len(during_answered) / len(during) if during else 0.0
    p99 = during_answered[int(len(during_answered) * 0.99) - 1] * 1000 if during_answered \
        else float("inf")
    lost = len(ids - logged)
    print(f"fault run: {len(answers)} requests at {RATE}/s; unanswered "
          f"{len(answers) - len(answered)}, 5xx {sum(a.status >= 500 for a in answered)}, "
          f"degraded {sum(a.degraded for a in answered)}, decision-log lines lost {lost}")
    print(f"  during the {STALL_S:g} s stall: {share:.1%} of the offered rate answered "
          f"(goal >= 90%), p99 {p99:.1f} ms (goal <= 50), median "
          f"{statistics.median(during_answered) * 1000 if during_answered else 0:.1f} ms")
    ok = share >= 0.9 and p99 <= 50 and lost == 0 and len(answered) == len(answers)
    for fault in done:
        seconds = recovery(answers, fault)
        ok = ok and seconds is not None and seconds < 1
        shown = "never" if seconds is None else f"{seconds:.2f} s"
        print(f"  {fault.name}: whole decisions again after {shown} (goal < 1 s)")
    print(f"  goals {'met' if ok else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
