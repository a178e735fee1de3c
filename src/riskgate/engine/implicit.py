"""Labels from what the gateway sees itself (issue 11): how its challenges come out.

In the gateway modes (proxy, middleware, nginx) riskgate answers a risky request with a
challenge and then sees what the client does:

- **Never solved** (not answered within the challenge's lifetime, or answered wrong):
  the challenged request is labelled a bot's. A browser solves a challenge by itself
  in seconds; what walks away from one is a script that cannot run it.
- **Solved, then normal behaviour**: when the client's next request carrying the pass it
  earned is normal traffic (allowed, and no rule adding risk matched: the test the
  model already uses for what it learns as normal), the challenged request is
  labelled a person's. Solving alone proves nothing — a script can pay for the work —
  and a client that goes on looking risky gives no label at all.
- **Login outcomes** teach nothing: a failed login is as often a person mistyping as a
  bot, and a successful one is exactly what an account takeover looks like; both are
  the attacker's to produce at will. They feed the counters that declare them, as
  before. (bench/model_eval.py ``--login-labels`` measures what they would add.)

A label takes the request id's one outcome (:meth:`Engine.label`), so a
``/v1/feedback`` for it afterwards answers 409, and counts nothing.

**Workers.** The worker that issued a challenge may not be the one that takes its
answer, nor the one that sees the client come back. The store is the shared truth: the
verify URL records how a challenge was answered under its id, whichever worker takes
the answer; the pass names the challenged request, so whichever worker sees the next
request can label it; and taking a label is atomic in the store, so no request is
labelled twice. What each worker keeps in memory is bounded: the challenges it issued
that have not expired yet (:data:`PENDING`, the oldest dropped beyond that, counted in
:attr:`ImplicitLabels.dropped`), and the passes it has already labelled from
(:data:`SETTLED`), so a pass used for many requests costs one store call per worker.
A worker that stops forgets its pending challenges: they are never labelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Final

from riskgate.decision.challenge import SOLVED, Challenges, Issued
from riskgate.engine.core import Engine, LabelSource
from riskgate.errors import StoreError
from riskgate.store import Get

logger = logging.getLogger(__name__)

#: Challenges one worker watches at once: 120 s of 80 challenges a second. A larger
#: wave is sampled, as learning is: its oldest challenges go unlabelled.
PENDING: Final = 10_000
#: Passes one worker remembers having labelled from (about 70 bytes each).
SETTLED: Final = 10_000
#: How long after a challenge expires its answer is read: an answer accepted just
#: before the expiry is still on its way to the store for up to the store's timeout.
GRACE_SECONDS: Final = 2.0
#: Answers read in one store call.
_CHUNK: Final = 64


class ImplicitLabels:
    """Turns how this worker's challenges come out into labels for the engine's model.

    The gateway calls :meth:`challenged` when it issues a challenge and
    :meth:`followed_normally` when a pass-holder's request was normal traffic;
    :meth:`run` (a task on the service's loop) labels them after the responses,
    :meth:`settle` at once.
    """

    def __init__(self, engine: Engine, challenges: Challenges, *, capacity: int = PENDING,
                 grace: float = GRACE_SECONDS, clock: Callable[[], float] = time.time) -> None:
        self._engine = engine
        self._challenges = challenges
        self._capacity = capacity
        self._grace = grace
        self._clock = clock
        self._pending: deque[Issued] = deque()
        self._passed: deque[str] = deque(maxlen=SETTLED)
        # A dict keeps insertion order: the oldest pass is the first to be forgotten.
        self._settled: dict[str, None] = {}
        self._wake = asyncio.Event()
        #: Challenges dropped unwatched because :data:`PENDING` were already watched.
        self.dropped = 0

    def challenged(self, challenge_id: str) -> None:
        """Watch a challenge this worker just issued, until it expires."""
        issued = self._challenges.issued(challenge_id)
        if issued is None:
            return
        if len(self._pending) >= self._capacity:
            self._pending.popleft()
            self.dropped += 1
        self._pending.append(issued)
        if len(self._pending) == 1:
            self._wake.set()  # the runner may be asleep with nothing to wait for

    def followed_normally(self, origin: str) -> None:
        """A client holding a pass earned for request ``origin`` sent normal traffic."""
        if origin in self._settled:
            return
        self._settled[origin] = None
        if len(self._settled) > SETTLED:
            del self._settled[next(iter(self._settled))]
        self._passed.append(origin)
        self._wake.set()

    async def settle(self, now: float) -> int:
        """Label every person whose pass was followed by normal traffic, and every
        challenge that expired unsolved by ``now`` (less the grace); how many labels the
        model got. A store failure loses the labels it was taking, nothing else."""
        labelled = 0
        while self._passed:
            labelled += await self._label(self._passed.popleft(), False, "passed-challenge",
                                          now)
        while self._pending and self._pending[0].expires + self._grace <= now:
            due: list[Issued] = []
            while (self._pending and len(due) < _CHUNK
                   and self._pending[0].expires + self._grace <= now):
                due.append(self._pending.popleft())
            try:
                answers = await self._engine.store.apply([Get(i.answer_key) for i in due], now)
            except StoreError as exc:
                logger.debug("%d expired challenges not labelled: %s", len(due), exc)
                continue
            for issued, answer in zip(due, answers, strict=True):
                if answer != SOLVED:
                    labelled += await self._label(issued.origin, True, "unsolved-challenge",
                                                  now)
        return labelled

    async def _label(self, request_id: str, label: bool, source: LabelSource,
                     now: float) -> int:
        try:
            return int(await self._engine.label(request_id, label, source, now) == "recorded")
        except StoreError as exc:
            logger.debug("%s label for %s not taken: %s", source, request_id, exc)
            return 0

    async def run(self) -> None:
        """Label as challenges expire and passes come back, for as long as the service
        runs; asleep while there is nothing to wait for."""
        while True:
            timeout = None
            if self._pending:
                timeout = max(0.0, self._pending[0].expires + self._grace - self._clock())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            self._wake.clear()
            await self.settle(self._clock())
