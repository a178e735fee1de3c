"""``RiskGateMiddleware`` inside someone else's application leaves the host process alone
unless asked (issue 8): no collector freeze, no SIGHUP handler, no file watcher."""

from __future__ import annotations

import asyncio
import gc
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.types import ASGIApp, Message

from riskgate.config import Config
from riskgate.http import HostEffects, RiskGateMiddleware
from support import write_rules

RULES = "rules:\n  - {id: never, when: 'False', score: 1}\n"


def drive_lifespan(app: ASGIApp, while_running: Callable[[], Any]) -> Any:
    """Start ``app``'s lifespan on a loop in this (the main) thread, where a signal
    handler can be installed, call ``while_running``, then shut the app down."""

    async def run() -> Any:
        inbox: asyncio.Queue[Message] = asyncio.Queue()
        started = asyncio.Event()
        sent: list[Message] = []

        async def send(message: Message) -> None:
            sent.append(message)
            if message["type"].startswith("lifespan.startup."):
                started.set()

        await inbox.put({"type": "lifespan.startup"})
        task = asyncio.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"}},
                                        inbox.get, send))
        await asyncio.wait_for(started.wait(), 10)
        assert sent[-1]["type"] == "lifespan.startup.complete", sent
        try:
            return while_running()
        finally:
            await inbox.put({"type": "lifespan.shutdown"})
            await asyncio.wait_for(task, 10)

    return asyncio.run(run())


def host_state() -> tuple[int, Any]:
    return gc.get_freeze_count(), signal.getsignal(signal.SIGHUP)


@pytest.fixture
def config(tmp_path: Path) -> Config:
    # watch_rules is on in the config: the middleware still must not watch unless asked.
    return Config(secret="middleware-host-secret", rules=write_rules(tmp_path, RULES),
                  decision_log=None, watch_rules=True)


@pytest.fixture(autouse=True)
def unfrozen() -> Any:
    gc.unfreeze()
    yield
    gc.unfreeze()


def test_a_wrapped_app_keeps_its_signal_handlers_and_collector(config: Config) -> None:
    before = host_state()
    during = drive_lifespan(RiskGateMiddleware(Starlette(), config=config), host_state)
    assert during == before


def test_the_host_effects_are_there_when_asked_for(config: Config) -> None:
    before_freeze, before_handler = host_state()
    effects = HostEffects(freeze_gc=True, reload_on_sighup=True)
    frozen, handler = drive_lifespan(
        RiskGateMiddleware(Starlette(), config=config, effects=effects), host_state)
    assert frozen > before_freeze == 0
    assert handler != before_handler
