"""Replay a decision log under candidate rules: what a rule change would have decided.

:func:`replay` reads a decision log (``decision`` and ``feedback`` lines, as
:class:`~riskgate.engine.Engine` writes them), sorts it by event time and runs it
through a fresh :class:`~riskgate.engine.Engine` on an empty :class:`MemoryStore`.
Each decision goes through :meth:`Engine.decide_facts` with the facts the log
recorded, so from facts onward (counters → rules → decision) a replay runs exactly
the code a live decision runs; each feedback line goes through
:meth:`Engine.record_outcome`, so counters fed by outcomes (failed logins) rebuild
too. ``label`` lines (what the gateway taught the model) count nothing and are passed
over. The event's own time is ``now`` everywhere, so a replay is deterministic.

"Before" is what the log recorded; "after" is what the candidate rules decide. The
:class:`ReplayReport` compares them per event and decision, per rule, and keeps a few
request ids of every changed cell so an analyst can look them up in the log.

>>> import asyncio, json, pathlib, tempfile
>>> from riskgate.rules import load_ruleset
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> _ = (folder / "rules.yaml").write_text(
...     "rules: [{id: no-ua, events: [login], when: device.ua_missing, action: block}]")
>>> line = {"type": "decision", "request_id": "r1", "time": 1.0, "event": "login",
...         "decision": "allow", "reasons": [], "shadow": [],
...         "facts": {"event": "login", "ip": "192.0.2.1", "device.ua_missing": True}}
>>> _ = (folder / "decisions.log").write_text(json.dumps(line) + "\\n")
>>> report = asyncio.run(replay(folder / "decisions.log", load_ruleset(folder)))
>>> [(c.event, c.before, c.after, c.samples) for c in report.changes]
[('login', 'allow', 'block', ('r1',))]
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any, Final

from riskgate.decision.verdict import ACTIONS, RUNTIME_RULE_PREFIX, Action
from riskgate.engine.core import Decision
from riskgate.errors import Problem, SourceError
from riskgate.event.types import EVENTS, OUTCOMES, EventName, Outcome
from riskgate.rules.model import RuleSet
from riskgate.service import replay_engine

__all__ = ["Change", "ReplayReport", "RuleHits", "replay"]

#: Entries the replay store may hold. Far above a gateway's memory store: a replay
#: runs offline on a day of traffic, and an evicted counter would change decisions
#: for reasons that have nothing to do with the rules under test.
REPLAY_MAX_ENTRIES: Final = 5_000_000
#: Counter keys only need to agree with each other within one replay, so any secret
#: will do; identities in the log are keyed already.
_REPLAY_SECRET: Final = b"riskgate replay"


@dataclass(frozen=True, slots=True)
class _Decided:
    """One ``decision`` line: what the live engine saw and decided."""

    line: int
    time: float
    request_id: str
    event: EventName
    decision: Action
    reasons: tuple[str, ...]
    shadow: tuple[str, ...]
    facts: Mapping[str, Any]
    degraded: bool
    rules_version: str | None


@dataclass(frozen=True, slots=True)
class _Feedback:
    """One ``feedback`` line: an outcome reported for an earlier decision."""

    line: int
    time: float
    request_id: str
    outcome: Outcome


class _Malformed(ValueError):
    """A log line that cannot be replayed; the message says why."""


@dataclass(frozen=True, slots=True)
class Change:
    """Requests of one event whose decision went from ``before`` to ``after``."""

    event: EventName
    before: Action
    after: Action
    count: int
    #: The first few request ids, in time order.
    samples: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RuleHits:
    """How often one rule matched, recorded and replayed, enforcing and in shadow."""

    enforce_before: int = 0
    enforce_after: int = 0
    shadow_before: int = 0
    shadow_after: int = 0


@dataclass(frozen=True)
class ReplayReport:
    """What the candidate rules would have changed on a recorded log."""

    log: str
    rules_version: str
    decisions: int
    feedback: int
    #: event -> decision -> (recorded count, replayed count); events in the log only.
    table: Mapping[EventName, Mapping[Action, tuple[int, int]]]
    changes: tuple[Change, ...]
    #: Only rules whose hit counts differ between recording and replay.
    rules: Mapping[str, RuleHits]
    #: Rule set versions the log was recorded under, with their decision counts.
    recorded_versions: Mapping[str, int] = field(default_factory=dict)
    #: Recorded decisions made without counters or a signal source; replay may differ.
    degraded: int = 0
    #: Recorded decisions a runtime list entry took part in: live operations, not
    #: policy, so replay rebuilds their counters but leaves them out of the comparison.
    runtime_listed: int = 0
    #: Feedback lines naming a request the log has no decision for.
    orphan_feedback: int = 0
    skipped: int = 0
    first_skipped: tuple[int, str] | None = None

    def to_json(self) -> dict[str, Any]:
        """The report as plain JSON values, for ``riskgate replay --json``."""
        return {
            "log": self.log,
            "rules_version": self.rules_version,
            "recorded_versions": dict(self.recorded_versions),
            "decisions": self.decisions,
            "feedback": self.feedback,
            "degraded": self.degraded,
            "runtime_listed": self.runtime_listed,
            "orphan_feedback": self.orphan_feedback,
            "skipped": {
                "count": self.skipped,
                "first_line": self.first_skipped[0] if self.first_skipped else None,
                "first_reason": self.first_skipped[1] if self.first_skipped else None,
            },
            "table": {event: {d: {"before": b, "after": a} for d, (b, a) in row.items()}
                      for event, row in self.table.items()},
            "changes": [{"event": c.event, "before": c.before, "after": c.after,
                         "count": c.count, "samples": list(c.samples)} for c in self.changes],
            "rules": [{"rule": rule,
                       "enforce": {"before": h.enforce_before, "after": h.enforce_after},
                       "shadow": {"before": h.shadow_before, "after": h.shadow_after}}
                      for rule, h in self.rules.items()],
        }

    def __str__(self) -> str:
        recorded = ", ".join(f"{v} ({n})" for v, n in self.recorded_versions.items())
        lines = [f"replayed {self.decisions} decisions and {self.feedback} feedback lines "
                 f"from {self.log}",
                 f"rules: recorded under {recorded or 'unknown'}; "
                 f"replayed under {self.rules_version}"]
        if self.skipped and self.first_skipped:
            line, reason = self.first_skipped
            lines.append(f"skipped {self.skipped} malformed {_plural(self.skipped, 'line')}, "
                         f"first at line {line} ({reason})")
        if self.degraded:
            lines.append(f"{self.degraded} recorded {_plural(self.degraded, 'decision')} "
                         "were degraded (made without counters or a signal source); "
                         "replay may differ on them whatever the rules")
        if self.runtime_listed:
            lines.append(f"{self.runtime_listed} recorded "
                         f"{_plural(self.runtime_listed, 'decision')} involved runtime list "
                         "entries, which replay does not apply; left out of the comparison")
        if self.orphan_feedback:
            lines.append(f"{self.orphan_feedback} feedback {_plural(self.orphan_feedback, 'line')}"
                         " name requests with no decision in the log; ignored")
        lines += ["", "decisions (recorded → replayed)", *_table(self.table), ""]
        if self.changes:
            lines.append("changed decisions")
            lines += [f"  {c.event}: {c.before} → {c.after}: {c.count} "
                      f"{_plural(c.count, 'request')}"
                      + (f", e.g. {', '.join(c.samples)}" if c.samples else "")
                      for c in self.changes]
        else:
            lines.append("no decision changed")
        lines.append("")
        if self.rules:
            title = "rules whose hits changed"
            width = max(len(title), *(len(rule) for rule in self.rules))
            lines.append(f"  {title:<{width}}  {'enforce':>15}  {'shadow':>15}")
            lines += [f"  {rule:<{width}}  {_arrow(h.enforce_before, h.enforce_after):>15}  "
                      f"{_arrow(h.shadow_before, h.shadow_after):>15}"
                      for rule, h in self.rules.items()]
        else:
            lines.append("no rule's hit count changed")
        return "\n".join(lines)


def _plural(n: int, word: str) -> str:
    return word if n == 1 else f"{word}s"


def _arrow(before: int, after: int) -> str:
    return f"{before} → {after}"


def _table(table: Mapping[EventName, Mapping[Action, tuple[int, int]]]) -> list[str]:
    width = max((len(event) for event in table), default=5)
    rows = [f"  {'event':<{width}}  " + "  ".join(f"{a:>15}" for a in ACTIONS)]
    rows += [f"  {event:<{width}}  " + "  ".join(f"{_arrow(*row[a]):>15}" for a in ACTIONS)
             for event, row in table.items()]
    return rows


# --- reading the log ---------------------------------------------------------------------------


def _text(entry: Mapping[str, Any], name: str) -> str:
    value = entry.get(name)
    if not isinstance(value, str) or not value:
        raise _Malformed(f"`{name}` is not a non-empty string")
    return value


def _time(entry: Mapping[str, Any]) -> float:
    value = entry.get("time")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _Malformed("`time` is not a number of seconds")
    return float(value)


def _rule_ids(entry: Mapping[str, Any], name: str) -> tuple[str, ...]:
    value = entry.get(name)
    if not isinstance(value, list) or not all(isinstance(rule, str) for rule in value):
        raise _Malformed(f"`{name}` is not a list of rule ids")
    return tuple(value)


def _parse(number: int, text: str) -> _Decided | _Feedback | None:
    try:
        entry = json.loads(text)
    except ValueError:
        raise _Malformed("not JSON") from None
    if not isinstance(entry, dict):
        raise _Malformed("not a JSON object")
    kind = entry.get("type")
    if kind == "label":
        return None  # the model's, not the counters': nothing to replay
    if kind == "feedback":
        outcome = entry.get("outcome")
        if outcome not in OUTCOMES:
            raise _Malformed(f"unknown outcome `{outcome}`")
        return _Feedback(number, _time(entry), _text(entry, "request_id"), outcome)
    if kind != "decision":
        raise _Malformed(f"type `{kind}` is not decision, feedback or label")
    event, decision, facts = entry.get("event"), entry.get("decision"), entry.get("facts")
    if event not in EVENTS:
        raise _Malformed(f"unknown event `{event}`")
    if decision not in ACTIONS:
        raise _Malformed(f"unknown decision `{decision}`")
    if not isinstance(facts, dict):
        raise _Malformed("`facts` is not an object")
    version = entry.get("rules_version")
    return _Decided(number, _time(entry), _text(entry, "request_id"), event, decision,
                    _rule_ids(entry, "reasons"), _rule_ids(entry, "shadow"), facts,
                    entry.get("degraded") is True, version if isinstance(version, str) else None)


def _read(path: Path) -> tuple[list[_Decided | _Feedback], int, tuple[int, str] | None]:
    """Every replayable line in time order, and how many lines were skipped, first why."""
    entries: list[_Decided | _Feedback] = []
    skipped, first = 0, None
    try:
        # Undecodable bytes become U+FFFD, so a damaged line is skipped, not fatal.
        with path.open(encoding="utf-8", errors="replace") as lines:
            for number, text in enumerate(lines, start=1):
                if not text.strip():
                    continue
                try:
                    parsed = _parse(number, text)
                except _Malformed as why:
                    skipped += 1
                    first = first or (number, str(why))
                    continue
                if parsed is not None:
                    entries.append(parsed)
    except OSError as exc:
        message = f"cannot read the decision log: {exc.strerror or exc}"
        raise SourceError([Problem(str(path), None, None, message)]) from None
    # Concurrent requests reach the log slightly out of order; counters need event order.
    # The sort is stable, so a feedback stamped with its decision's time stays after it.
    entries.sort(key=lambda e: e.time)
    return entries, skipped, first


# --- replaying ---------------------------------------------------------------------------------


async def replay(
    log: str | PathLike[str], ruleset: RuleSet, *, samples: int = 3,
    max_entries: int = REPLAY_MAX_ENTRIES,
) -> ReplayReport:
    """Re-run the decision log ``log`` under ``ruleset`` and compare with what it recorded.

    ``samples`` request ids are kept per changed (event, before, after) cell.
    Raise :class:`SourceError` when the log cannot be read; lines that cannot be
    replayed are counted on the report, never fatal.
    """
    path = Path(log)
    entries, skipped, first_skipped = _read(path)
    engine = replay_engine(ruleset, secret=_REPLAY_SECRET, max_entries=max_entries)
    # Only decisions that outcomes can still update are kept for their feedback.
    awaiting_outcomes: dict[str, Decision] = {}
    seen: set[str] = set()
    cells: Counter[tuple[EventName, Action, Action]] = Counter()
    cell_samples: dict[tuple[EventName, Action, Action], list[str]] = {}
    hits: dict[str, list[int]] = {}  # rule -> [enforce before, after, shadow before, after]
    versions: Counter[str] = Counter()
    decisions = feedback = degraded = orphans = runtime_listed = 0

    def count_hits(rules: tuple[str, ...], slot: int) -> None:
        for rule in rules:
            hits.setdefault(rule, [0, 0, 0, 0])[slot] += 1

    for entry in entries:
        if isinstance(entry, _Feedback):
            feedback += 1
            decided = awaiting_outcomes.get(entry.request_id)
            if decided is not None:
                await engine.record_outcome(decided, entry.outcome, entry.time)
            elif entry.request_id not in seen:
                orphans += 1
            continue
        decisions += 1
        seen.add(entry.request_id)
        versions[entry.rules_version or "unknown"] += 1
        degraded += entry.degraded
        result = await engine.decide_facts(entry.request_id, entry.event, dict(entry.facts),
                                           entry.time)
        if result.outcome_keys:
            awaiting_outcomes[entry.request_id] = result
        if any(rule.startswith(RUNTIME_RULE_PREFIX) for rule in entry.reasons):
            runtime_listed += 1
            continue
        after = result.verdict.decision
        cell = (entry.event, entry.decision, after)
        cells[cell] += 1
        if entry.decision != after and len(kept := cell_samples.setdefault(cell, [])) < samples:
            kept.append(entry.request_id)
        count_hits(entry.reasons, 0)
        count_hits(tuple(m.rule for m in result.verdict.reasons), 1)
        count_hits(entry.shadow, 2)
        count_hits(tuple(m.rule for m in result.verdict.shadow), 3)

    table: dict[EventName, dict[Action, tuple[int, int]]] = {}
    for event in EVENTS:
        if any(cell[0] == event for cell in cells):
            table[event] = {
                action: (sum(n for (e, b, _), n in cells.items() if e == event and b == action),
                         sum(n for (e, _, a), n in cells.items() if e == event and a == action))
                for action in ACTIONS
            }
    changes = tuple(
        Change(event, before, after, n, tuple(cell_samples[(event, before, after)]))
        for (event, before, after), n in sorted(
            cells.items(), key=lambda item: (EVENTS.index(item[0][0]), -item[1], item[0]))
        if before != after
    )
    changed_rules = {rule: RuleHits(*counts) for rule, counts in sorted(hits.items())
                     if counts[0] != counts[1] or counts[2] != counts[3]}
    return ReplayReport(
        log=str(path), rules_version=ruleset.version, decisions=decisions, feedback=feedback,
        table=table, changes=changes, rules=changed_rules,
        recorded_versions=dict(versions.most_common()), degraded=degraded,
        runtime_listed=runtime_listed, orphan_feedback=orphans, skipped=skipped,
        first_skipped=first_skipped,
    )
