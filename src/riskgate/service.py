"""The composition root: everything a running riskgate is made of, built from one config.

:class:`Service` loads the rules, opens the store and the decision log, builds the
signal extractor, the engine (with its runtime lists and model stage), the challenge
issuer and the rule reloader, and starts and closes them. It has no HTTP in it: the
HTTP app (:mod:`riskgate.http.app`), the standalone middleware, the CLI and replay
all build what they need here, so there is one place that knows how the parts fit.

Process-wide side effects are opt-ins of :meth:`Service.start` (see :class:`HostEffects`):
``riskgate serve`` owns its process and takes them all; a middleware inside someone
else's application takes none unless asked.

>>> import pathlib, tempfile
>>> from riskgate.config import Config, ModelConfig
>>> rules = pathlib.Path(tempfile.mkdtemp())
>>> _ = (rules / "empty.yaml").write_text("rules: []")
>>> service = Service(Config(secret="doctest-secret-0123", rules=rules, decision_log=None))
>>> service.engine.ruleset.rules, service.config.store
((), 'memory://')
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from dataclasses import dataclass
from typing import Final

from riskgate.config import Config, ModelConfig
from riskgate.decision.challenge import Challenges
from riskgate.engine.core import Engine
from riskgate.engine.implicit import ImplicitLabels
from riskgate.errors import StoreError, StoreVersionError
from riskgate.model.base import Model
from riskgate.model.online import OnlineModel
from riskgate.model.snapshot import Snapshots
from riskgate.observability.decisionlog import DecisionLog
from riskgate.rules.loader import load_ruleset
from riskgate.rules.model import RuleSet
from riskgate.rules.reload import RuleReloader
from riskgate.rules.runtime_lists import RuntimeLists
from riskgate.rules.wiring import config_warnings
from riskgate.signals.extractor import SignalExtractor
from riskgate.signals.keys import Keyer
from riskgate.store import MemoryStore, open_store
from riskgate.store.breaker import CircuitBreaker

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class HostEffects:
    """What a started service may do to the process it runs in.

    ``freeze_gc``: move everything built at start (rule set, parsers, lists) out of the
    collector's sight, so a full collection walks only what serving made: 3-12 ms in the
    proxy bench, where the two before the freeze, over the start-up heap, took 25 and
    61 ms. Process-wide: it also freezes the host application's objects.
    ``reload_on_sighup``: install a SIGHUP handler on the running loop. ``watch_rules``:
    a task that reloads the rules when a file in the rules folder changes.
    """

    freeze_gc: bool = False
    reload_on_sighup: bool = False
    watch_rules: bool = False

    @classmethod
    def owning_process(cls, config: Config) -> HostEffects:
        """All of them, as ``riskgate serve`` takes them: it owns its process."""
        return cls(freeze_gc=True, reload_on_sighup=True, watch_rules=config.watch_rules)


#: What a service embedded in someone else's process does to it: nothing.
NO_HOST_EFFECTS: Final = HostEffects()


@dataclass(frozen=True, slots=True)
class Prepared:
    """What a config yields before anything is opened: the parts that fail on bad input."""

    ruleset: RuleSet
    keyer: Keyer
    signals: SignalExtractor
    #: Sources that could not be read but need not stop the service (a GeoIP file ...).
    warnings: tuple[str, ...]


def prepare(config: Config) -> Prepared:
    """Load the rules and the signal sources; raise on a rule set that cannot serve.

    ``riskgate serve`` calls it before it forks workers, so a bad rule set is refused
    once, with its problems, instead of in every worker.
    """
    keyer = Keyer(config.secret.encode())
    ruleset = load_ruleset(config.rules, keyer=keyer)
    signals, warnings = SignalExtractor.from_config(config, keyer)
    return Prepared(ruleset, keyer, signals, tuple(warnings))


def runtime_lists(config: Config) -> RuntimeLists:
    """The runtime lists in the configured store, for editing them from outside a server
    (``riskgate lists``); close ``.store`` when done."""
    return RuntimeLists(open_store(config.store, max_entries=config.memory_store_max_entries,
                                   secret=config.secret.encode()),
                        Keyer(config.secret.encode()))


def replay_engine(ruleset: RuleSet, *, secret: bytes, max_entries: int) -> Engine:
    """An engine for replaying recorded traffic (``riskgate replay``): its own embedded
    store, and neither runtime lists (live operations, not policy) nor a decision log."""
    keyer = Keyer(secret)
    return Engine(ruleset, MemoryStore(max_entries=max_entries), SignalExtractor(keyer), keyer)


def restore_model(settings: ModelConfig, state: object) -> tuple[OnlineModel, str | None]:
    """The model to serve: ``state`` (a restored snapshot's) under the config's current
    settings, or a fresh one and why ``state`` could not be used."""
    fresh = OnlineModel(warmup=settings.warmup_samples, min_labels=settings.min_labels,
                        max_share=settings.max_share, detector=settings.detector)
    if state is None:
        return fresh, None
    if not isinstance(state, OnlineModel):
        return fresh, "the model snapshot holds no riskgate model; starting fresh"
    if state.detector != settings.detector:
        return fresh, (f"the model snapshot was learned by {state.detector}, the config "
                       f"asks for {settings.detector}; starting fresh")
    # Settings are policy, not learning: a restart applies the config's current ones.
    state.warmup, state.min_labels = settings.warmup_samples, settings.min_labels
    state.max_share = settings.max_share
    return state, None


class Service:
    """The engine plus what it was built from; one per process (per uvicorn worker)."""

    def __init__(self, config: Config, *, model: Model | None = None) -> None:
        """Load rules, open the store and the log; raise on a config that cannot serve.

        ``model`` is the engine's model stage; None: the configured one (``model:``),
        restored from its snapshot, or rules alone when the config enables none.
        """
        self.config = config
        prepared = prepare(config)
        for warning in prepared.warnings:
            logger.warning("%s", warning)
        self.snapshots: Snapshots | None = None
        if model is None and config.model.enabled:
            model = self._configured_model(config)
        ruleset, keyer = prepared.ruleset, prepared.keyer
        store = CircuitBreaker(
            open_store(config.store, max_entries=config.memory_store_max_entries,
                       secret=config.secret.encode()),
            deadline=config.store_timeout)
        self.log = DecisionLog(config.decision_log) if config.decision_log else None
        self.engine = Engine(ruleset, store, prepared.signals, keyer, self.log,
                             config.feedback_ttl, runtime_lists=RuntimeLists(store, keyer),
                             model=model, learn_per_second=config.model.learn_per_second)
        self.challenges = Challenges(config.secret.encode(), store, ttl=config.challenge_ttl)
        #: With a model, how the gateway's challenges come out labels it.
        self.implicit = (None if model is None
                         else ImplicitLabels(self.engine, self.challenges))
        self.reloader = RuleReloader(config.rules, ruleset, self._install, keyer)
        self._watcher: asyncio.Task[None] | None = None
        self._background: list[asyncio.Task[None]] = []
        self._source_warnings = prepared.warnings
        self.rule_warnings: tuple[str, ...] = ()
        self._judge(ruleset)

    def _configured_model(self, config: Config) -> OnlineModel:
        state = None
        if config.model.snapshot is not None:
            self.snapshots = Snapshots(config.model.snapshot, config.secret.encode())
            state, why = self.snapshots.load()
            if why is not None:
                logger.warning("%s", why)
        model, why = restore_model(config.model, state)
        if why is not None:
            logger.warning("%s", why)
        return model

    def save_model(self) -> None:
        """Snapshot the model now (a no-op without a snapshot path)."""
        if self.snapshots is not None and self.engine.model is not None:
            self.snapshots.save(self.engine.model)

    @staticmethod
    async def _snapshot_every(snapshots: Snapshots, model: Model, minutes: float) -> None:
        while True:
            await asyncio.sleep(minutes * 60)
            try:
                # Pickled here, on the loop, so the learner cannot change the model
                # mid-way; only the disk write leaves it.
                data = snapshots.encode(model)
                await asyncio.to_thread(snapshots.write, data)
            except Exception:  # a full disk must not stop the service, nor later snapshots
                logger.exception("the model snapshot could not be written to %s",
                                 snapshots.path)

    @property
    def warnings(self) -> tuple[str, ...]:
        """What keeps signals or rules from working as written: sources that could not be
        opened, rules reading sources the config lacks. ``/readyz`` lists them."""
        return (*self._source_warnings, *self.rule_warnings)

    def _judge(self, ruleset: RuleSet) -> None:
        self.rule_warnings = tuple(str(w) for w in config_warnings(ruleset, self.config))
        for warning in self.rule_warnings:
            logger.warning("%s", warning)

    def _install(self, ruleset: RuleSet) -> None:
        self.engine.ruleset = ruleset
        self._judge(ruleset)

    async def start(self, effects: HostEffects = NO_HOST_EFFECTS) -> None:
        """Start background work; ``effects`` says what it may do to the process."""
        try:
            await self.engine.store.check_server()
        except StoreVersionError:
            raise  # serving would fail every batch: stop start-up with the fix
        except StoreError as exc:
            # Unreachable now: serve degraded (readiness says so) and let it come back.
            logger.warning("could not check the store's server at start-up: %s", exc)
        if effects.freeze_gc:
            gc.freeze()
        loop = asyncio.get_running_loop()
        if effects.reload_on_sighup:
            self.reloader.on_sighup(loop)
        if effects.watch_rules:
            self._watcher = loop.create_task(self.reloader.watch())
        if self.engine.model is not None:
            self._background.append(loop.create_task(self.engine.learn_in_background()))
            if self.snapshots is not None:
                self._background.append(loop.create_task(self._snapshot_every(
                    self.snapshots, self.engine.model,
                    self.config.model.snapshot_interval_minutes)))
        if self.implicit is not None:
            self._background.append(loop.create_task(self.implicit.run()))

    async def close(self) -> None:
        for task in [*self._background, *([self._watcher] if self._watcher else [])]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.engine.model is not None:
            await self.engine.learn_pending()
        if self.snapshots is not None:
            try:
                self.save_model()
            finally:
                self.snapshots.release()
        await self.engine.store.close()
        if self.log is not None:
            self.log.close()
