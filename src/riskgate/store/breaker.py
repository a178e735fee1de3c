"""A circuit breaker in front of a store: while it is unreachable, fail fast and probe.

Without it, a stalled Redis (paused, partitioned, swapping) holds every decision for
the store's full timeout, and requests pile up behind the few batches in flight:
measured before this existed, a 5 s stall under 200 req/s let through 3 to 60
decisions a second with latencies up to 3.8 s, and answers stayed slow for 4.4 s
after Redis came back.

With it, each call has a short ``deadline``. The first call that fails (a timeout,
a refused connection) opens the circuit, and the calls still waiting give up with it:
they wait on the same stalled store. From then on calls fail at once with
:class:`StoreError`, so decisions go on, degraded, at the offered rate. Meanwhile a
background probe asks the store's ``health`` every ``retry_after`` seconds and closes
the circuit when it answers; no request waits on a probe. So a stall costs any one
request at most ``deadline``.

>>> import asyncio
>>> from riskgate.store.memory import MemoryStore
>>> breaker = CircuitBreaker(MemoryStore(), deadline=0.1)
>>> from riskgate.store.base import Count
>>> asyncio.run(breaker.apply([Count("k", 60_000)], now=0.0)), breaker.is_open
([1.0], False)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Sequence
from typing import Any

from riskgate.errors import StoreError
from riskgate.store.base import Op, Result, Store

logger = logging.getLogger(__name__)


class _Wait:
    """One call waiting on the store: its deadline and its task, None once answered (a
    finished call's task and all it references must not live on until the timer)."""

    __slots__ = ("deadline", "expired", "task")

    def __init__(self, deadline: float, task: asyncio.Task[Any]) -> None:
        self.deadline = deadline
        self.task: asyncio.Task[Any] | None = task
        self.expired = False

    def expire(self) -> None:
        """End the call now, if it is still waiting."""
        if self.task is not None and not self.expired:
            self.expired = True
            self.task.cancel()


class CircuitBreaker(Store):
    """Wraps ``inner``: calls past ``deadline`` seconds fail and open the circuit."""

    def __init__(self, inner: Store, *, deadline: float, retry_after: float = 0.2) -> None:
        self.inner = inner
        self.deadline = deadline
        self.retry_after = retry_after
        #: The task asking an unreachable store until it answers; None: circuit closed.
        self._prober: asyncio.Task[None] | None = None
        self._reason = ""
        #: The calls now waiting on the store, oldest first (so deadline first: every
        #: call gets the same ``deadline``), and the one timer that ends the overdue.
        self._waiting: deque[_Wait] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return f"CircuitBreaker({self.inner!r}, deadline={self.deadline})"

    @property
    def is_open(self) -> bool:
        return self._prober is not None

    async def apply(self, ops: Sequence[Op], now: float) -> list[Result]:
        if self._prober is not None:
            raise StoreError(f"{self.inner!r} is unavailable ({self._reason}); failing fast "
                             f"until it answers again (checked every {self.retry_after:g} s)")
        # Not asyncio.timeout: one per call cost 5 µs (a Timeout, a timer in the loop's
        # heap, its cancellation), 4 % of a decision. Calls join a queue in deadline
        # order instead, and a single timer, armed for the oldest waiting call, cancels
        # each call still waiting at its deadline; its CancelledError becomes a timeout
        # here, as asyncio.timeout would make it.
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # another event loop (asyncio.run again): start afresh
            self._loop, self._waiting, self._timer = loop, deque(), None
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("the circuit breaker's deadline needs a task")
        cancelling = task.cancelling()  # cancellations already asked of the task
        wait = _Wait(loop.time() + self.deadline, task)
        self._waiting.append(wait)
        if self._timer is None:
            self._timer = loop.call_at(wait.deadline, self._end_overdue)
        try:
            try:
                return await self.inner.apply(ops, now)
            finally:
                wait.task = None  # the timer must not cancel what the task does next
                # Answered calls leave the queue from its head as they finish (they finish
                # about in order), not at the oldest one's deadline: otherwise a deadline's
                # worth of decisions stayed queued (6,810 in one run with a 10 s store
                # timeout), objects every garbage collection walked and that aged into
                # the full collections.
                waiting = self._waiting
                while waiting and waiting[0].task is None:
                    waiting.popleft()
        except asyncio.CancelledError:
            if not wait.expired or task.uncancel() > cancelling:
                raise  # cancelled by someone else: theirs to handle
        except TimeoutError:
            pass
        except StoreError as exc:
            self._trip(str(exc))
            raise
        self._trip(f"no answer within {self.deadline:g} s")
        raise StoreError(f"{self.inner!r}: no answer within {self.deadline:g} s; "
                         "failing fast until it answers again") from None

    def _end_overdue(self) -> None:
        """The timer: end every call past its deadline, then wait for the next one's."""
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        waiting = self._waiting
        while waiting:
            wait = waiting[0]
            if wait.task is not None and wait.deadline > now:
                self._timer = loop.call_at(wait.deadline, self._end_overdue)
                return
            waiting.popleft()
            wait.expire()

    def _trip(self, reason: str) -> None:
        if self._prober is not None:
            return
        logger.warning("store %r failed (%s); circuit open, failing fast", self.inner, reason)
        self._reason = reason
        self._prober = asyncio.get_running_loop().create_task(self._probe())
        # The calls still waiting wait on the same stalled store: end them too.
        waiting, self._waiting = self._waiting, deque()
        for wait in waiting:
            wait.expire()  # its caller fails on the loop's next turn

    async def _probe(self) -> None:
        """Ask the store until it answers, then close the circuit."""
        while True:
            await asyncio.sleep(self.retry_after)
            try:
                # The store's own timeout bounds this; a paused Redis answers the
                # pending PING the moment it resumes, so recovery is not held back.
                await self.inner.health()
            except StoreError as exc:
                self._reason = str(exc)
                continue
            logger.warning("store %r answers again; circuit closed", self.inner)
            self._prober = None
            return

    async def health(self) -> None:
        # Readiness asks the store itself: an open circuit must not hide its recovery.
        await self.inner.health()

    async def check_server(self) -> None:
        await self.inner.check_server()

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._prober is not None:
            self._prober.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._prober
            self._prober = None
        await self.inner.close()
