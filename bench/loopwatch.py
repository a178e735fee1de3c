"""``riskgate`` with its event loop timed: ``python bench/loopwatch.py OUT riskgate-args...``.

Runs riskgate's command line as ``riskgate`` would, with a timer on the serving loop that
is due every millisecond. When it comes more than ``STALL_S`` late, one JSON line goes
to OUT: when, how late, and how much CPU the loop's thread used meanwhile. A stall the
thread spent running is riskgate's own work (requests back to back, a long callback, a
garbage collection); one it spent not running is the machine's (the thread preempted,
or its virtual CPU not scheduled). bench/stalls.py reads OUT. ``make bench`` does not
use this: the timer's thousand wake-ups a second would change what it measures.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable
from typing import TextIO

import uvloop

from riskgate.cli import main

PERIOD_S = 0.001
#: libuv's timers have millisecond resolution, so up to a millisecond late is normal.
STALL_S = 0.003


def watched(new_loop: Callable[[], asyncio.AbstractEventLoop], out: TextIO,
            ) -> Callable[[], asyncio.AbstractEventLoop]:
    def new_event_loop() -> asyncio.AbstractEventLoop:
        loop = new_loop()
        due: float | None = None
        cpu_then = 0.0

        def tick() -> None:
            nonlocal due, cpu_then
            now, cpu = time.perf_counter(), time.thread_time()
            if due is not None and now - due > STALL_S:
                out.write(json.dumps({"at": time.time(), "late_ms": (now - due) * 1e3,
                                      "cpu_ms": (cpu - cpu_then) * 1e3}) + "\n")
                out.flush()
            due, cpu_then = now + PERIOD_S, cpu
            loop.call_later(PERIOD_S, tick)

        loop.call_soon(tick)
        return loop

    return new_event_loop


if __name__ == "__main__":
    with open(sys.argv[1], "a", encoding="utf-8") as stalls:
        # uvicorn asks uvloop for its loop factory when it starts serving, after this.
        uvloop.new_event_loop = watched(uvloop.new_event_loop, stalls)  # type: ignore[assignment]
        sys.exit(main(sys.argv[2:]))
