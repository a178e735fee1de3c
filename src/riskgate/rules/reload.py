"""Keeps the serving rule set current without a restart.

A reload — on a file change, on SIGHUP, or on ``POST /admin/rules/reload`` — loads
and validates the whole folder first and only then swaps the engine's reference in
one assignment. Requests read that reference once, so none sees half a rule set and
none is dropped. A set that fails validation is refused: the previous set keeps
serving, and the failure is logged, counted and shown on ``/readyz``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import watchfiles

from riskgate.errors import RuleSetError
from riskgate.observability import metrics
from riskgate.rules.loader import load_ruleset
from riskgate.rules.model import RuleSet
from riskgate.signals.keys import Keyer

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ReloadResult:
    """What one reload attempt did."""

    version: str
    problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems


class RuleReloader:
    """Validates and swaps rule sets for one engine.

    ``install`` receives each valid new set; the engine's attribute assignment is
    the atomic swap.
    """

    def __init__(self, path: Path, current: RuleSet, install: Callable[[RuleSet], None],
                 keyer: Keyer | None = None) -> None:
        self.path = path
        self.keyer = keyer  # the serving one: device lists must be keyed as facts are
        self._install = install
        self.version = current.version
        #: Problems of the last refused set, until a later reload succeeds.
        self.refused: tuple[str, ...] = ()
        self._lock = asyncio.Lock()
        self._pending: set[asyncio.Task[ReloadResult]] = set()

    async def reload(self) -> ReloadResult:
        """Load, validate and swap; the previous set stays when validation fails."""
        async with self._lock:  # two triggers at once must not race each other's swap
            try:
                ruleset = await asyncio.to_thread(load_ruleset, self.path, keyer=self.keyer)
            except RuleSetError as error:
                self.refused = tuple(str(p) for p in error.problems)
                metrics.RULE_RELOADS.labels("refused").inc()
                logger.error("rule set %s refused, version %s keeps serving:\n%s",
                             self.path, self.version, "\n".join(self.refused))
                return ReloadResult(self.version, self.refused)
            self._install(ruleset)
            self.refused = ()
            if ruleset.version != self.version:
                logger.info("rule set %s now serving version %s (was %s)",
                            self.path, ruleset.version, self.version)
            self.version = ruleset.version
            metrics.RULE_RELOADS.labels("swapped").inc()
            return ReloadResult(self.version)

    async def watch(self) -> None:
        """Reload whenever a file under the rule path changes; runs until cancelled."""
        async for _ in watchfiles.awatch(self.path, debounce=300, recursive=True):
            await self.reload()

    def on_sighup(self, loop: asyncio.AbstractEventLoop) -> None:
        """Reload on SIGHUP where the platform and thread allow a handler."""
        def start_reload() -> None:
            task = loop.create_task(self.reload())
            self._pending.add(task)  # the loop keeps only weak references to tasks
            task.add_done_callback(self._pending.discard)

        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGHUP, start_reload)
