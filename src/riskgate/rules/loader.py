"""Rule sets: YAML to specs, specs validated, valid specs compiled (CONTRACT §5).

:func:`load_ruleset` reads one file or a folder of ``*.yaml``/``*.yml`` files (sorted,
merged) and returns a frozen :class:`RuleSet`, or raises :class:`RuleSetError` listing
every problem with file, line, column, rule id and the fix. :meth:`RuleSet.evaluate` is
one call of one compiled function per event; :func:`run_rule_tests` runs the ``tests:``.

>>> import pathlib, tempfile
>>> from riskgate.rules.testing import run_rule_tests
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> _ = (folder / "login.yaml").write_text('''
... counters:
...   fails: {events: [login], key: ip, window: 10m, on: [login_failed]}
... rules:
...   - {id: many-fails, events: [login], when: counters.fails > 5, action: block}
... tests:
...   - {name: blocks, event: {event: login}, counters: {fails: 9},
...      expect: {decision: block, rules: [many-fails]}}
... ''')
>>> rs = load_ruleset(folder)
>>> rs.evaluate("login", {}, {"fails": 9})
[Match(rule='many-fails', score=0.0, action='block', shadow=False)]
>>> [r.passed for r in run_rule_tests(rs)]
[True]
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import ipaddress
import re
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from os import PathLike
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

import yaml

from riskgate.decision.verdict import (
    ACTIONS,
    RUNTIME_RULE_PREFIX,
    Thresholds,
)
from riskgate.errors import Problem, RuleSetError
from riskgate.event.types import EVENTS, OUTCOMES, RiskEvent
from riskgate.rules.language import Expr, Namespace, check, did_you_mean
from riskgate.rules.members import LIST_PARSERS
from riskgate.rules.model import (
    EXPIRY_WARNING,
    LIST_TYPES,
    CounterKind,
    CounterSpec,
    Evaluator,
    ListSpec,
    Rule,
    RuleSet,
    RuleTest,
)
from riskgate.signals.extractor import SignalExtractor
from riskgate.signals.keys import Keyer

_UNITS: Final[dict[str, float]] = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_RULE_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]*")
_TOP_KEYS: Final = ("counters", "thresholds", "lists", "rules", "tests")
_COUNTER_KEYS: Final = ("events", "key", "distinct", "kind", "window", "on")
_LIST_KEYS: Final = ("file", "type")
_RULE_KEYS: Final = ("id", "description", "events", "when", "score", "action", "mode", "tags",
                     "owner", "expires")
_TEST_KEYS: Final = ("name", "event", "counters", "expect")
_EXPECT_KEYS: Final = ("decision", "rules")
#: Test event keys that build the request itself; any other key sets a signal.
_REQUEST_KEYS: Final = ("event", "ip", "account", "device_id", "user_agent", "headers",
                        "attributes", "challenge_passed")
_TEST_IP: Final = "192.0.2.1"  # TEST-NET-1, for tests that do not name an address
_KEY_HELP: Final = ("ip, ip_prefix, account, device, email_domain, fingerprint, site or an "
                    "attribute name, "
                    "joined with + for a combination such as account+flight")


#: Keys identities in rule sets loaded without a service's secret (``riskgate rules
#: check`` / ``test``): device lists and the facts of rule tests agree with each other.
RULE_TEST_KEYER: Final = Keyer(b"rule tests")


def load_ruleset(
    path: str | PathLike[str], *, today: date | None = None, keyer: Keyer | None = None
) -> RuleSet:
    """Read, validate and compile a rule file or folder; raise with every problem found.

    ``today`` (default: the current UTC date) decides which rules are reported on
    :attr:`RuleSet.warnings` as expiring within 14 days or already expired. ``keyer``
    keys the entries of ``type: device`` lists and the identities of rule tests as the
    serving extractor keys ``device.key``: pass the service's; the default,
    :data:`RULE_TEST_KEYER`, suits checking and testing a set without a config.
    """
    return _Loader(Path(path), today or datetime.now(UTC).date(), keyer or RULE_TEST_KEYER).load()


class _File:
    """One YAML file as nodes (which carry line and column) plus a constructor for values."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.name = str(path)
        self.lines = text.split("\n")
        self._loader = yaml.SafeLoader(text)
        try:
            self.root: yaml.Node | None = self._loader.get_single_node()
        finally:
            self._loader.dispose()

    def value(self, node: yaml.Node) -> Any:
        return self._loader.construct_object(node, deep=True)


def _where(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


class _Loader:
    """Collects every problem of a rule set before giving up, so one run shows them all."""

    def __init__(self, path: Path, today: date, keyer: Keyer) -> None:
        self.path = path
        self.today = today
        self.keyer = keyer
        self.problems: list[Problem] = []
        self.warnings: list[Problem] = []
        self.digest = hashlib.sha256()
        self.seen: dict[tuple[str, str], str] = {}  # (kind, name) -> where first defined

    # -- reporting and YAML helpers

    def err(self, f: _File, node: yaml.Node | None, message: str, rule: str | None = None) -> None:
        line, col = _where(node) if node is not None else (None, None)
        self.problems.append(Problem(f.name, line, col, message, rule=rule))

    def mapping(
        self, f: _File, node: yaml.Node, what: str, allowed: tuple[str, ...] | None = None,
        rule: str | None = None,
    ) -> dict[str, yaml.Node]:
        if not isinstance(node, yaml.MappingNode):
            self.err(f, node, f"{what} must be a mapping of `key: value`", rule)
            return {}
        out: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            # The key as written: YAML 1.1 would read `on:` (counters) as the boolean true.
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if not isinstance(key, str):
                self.err(f, key_node, f"{what}: keys must be names", rule)
            elif key in out:
                self.err(f, key_node, f"duplicate key `{key}` in {what}", rule)
            elif allowed is not None and key not in allowed:
                self.err(f, key_node, f"unknown key `{key}` in {what}"
                         + did_you_mean(key, allowed, "allowed"), rule)
            else:
                out[key] = value_node
        return out

    def scalar(
        self, f: _File, node: yaml.Node, kinds: tuple[type, ...], what: str, wanted: str,
        rule: str | None = None,
    ) -> Any:
        value = f.value(node) if isinstance(node, yaml.ScalarNode) else node
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
            shown = f"`{value}`" if isinstance(node, yaml.ScalarNode) else "a list or mapping"
            self.err(f, node, f"{what} must be {wanted}, not {shown}", rule)
            return None
        return value

    def names(
        self, f: _File, node: yaml.Node, allowed: tuple[str, ...], what: str, noun: str,
        rule: str | None = None,
    ) -> frozenset[str] | None:
        items = node.value if isinstance(node, yaml.SequenceNode) else [node]
        out = set()
        for item in items:
            name = self.scalar(f, item, (str,), what, f"one of {', '.join(allowed)}", rule)
            if name is None:
                continue
            if name not in allowed:
                self.err(f, item, f"unknown {noun} `{name}` in {what}"
                         + did_you_mean(name, allowed, "known"), rule)
            out.add(name)
        if not items:
            self.err(f, node, f"{what} is empty; list at least one or leave the key out", rule)
        return frozenset(out)

    def unique(self, f: _File, node: yaml.Node, kind: str, name: str) -> bool:
        first = self.seen.get((kind, name))
        line, _ = _where(node)
        if first is not None:
            self.err(f, node, f"duplicate {kind} `{name}`; first defined at {first}; rename one",
                     rule=name if kind == "rule id" else None)
            return False
        self.seen[kind, name] = f"{f.name}:{line}"
        return True

    # -- files

    def files(self) -> list[_File]:
        if self.path.is_dir():
            paths = sorted(p for p in self.path.iterdir()
                           if p.suffix in (".yaml", ".yml") and p.is_file())
            if not paths:
                self.problems.append(Problem(str(self.path), None, None,
                                             "no *.yaml or *.yml rule files in this folder"))
        elif self.path.is_file():
            paths = [self.path]
        else:
            self.problems.append(Problem(str(self.path), None, None,
                                         "no such rule file or folder"))
            paths = []
        out = []
        for path in paths:
            try:
                text = path.read_text(encoding="utf-8")
                self.digest.update(path.name.encode() + b"\0" + text.encode() + b"\0")
                out.append(_File(path, text))
            except (OSError, UnicodeDecodeError) as e:
                self.problems.append(Problem(str(path), None, None, f"cannot read: {e}"))
            except yaml.MarkedYAMLError as e:
                mark = e.problem_mark or e.context_mark
                line, col = (mark.line + 1, mark.column + 1) if mark else (None, None)
                self.problems.append(Problem(str(path), line, col,
                                             f"not valid YAML: {e.problem or e.context}"))
        return out

    def load(self) -> RuleSet:
        sections: dict[str, list[tuple[_File, yaml.Node]]] = {k: [] for k in _TOP_KEYS}
        for f in self.files():
            if f.root is not None:
                for key, node in self.mapping(f, f.root, "a rule file", _TOP_KEYS).items():
                    sections[key].append((f, node))
        counters = self.each(sections["counters"], "counters", self.counter)
        lists = self.each(sections["lists"], "lists", self.list_spec)
        thresholds = {e: Thresholds() for e in EVENTS} | self.each(
            sections["thresholds"], "thresholds", self.threshold)
        ns = Namespace.build(counters, {name: spec.members for name, spec in lists.items()})
        rules = tuple(r for f, node in sections["rules"] for r in self.rule_list(f, node, ns))
        tests = tuple(t for f, node in sections["tests"]
                      for t in self.test_list(f, node, ns, counters, rules))
        if self.problems:
            raise RuleSetError(sorted(self.problems, key=_order))
        return RuleSet(
            version=self.digest.hexdigest()[:12], source=str(self.path),
            counters=MappingProxyType(counters), thresholds=MappingProxyType(thresholds),
            lists=MappingProxyType(lists), rules=rules, tests=tests,
            warnings=tuple(self.warnings), _evaluator=Evaluator(rules, ns),
        )

    def each(
        self, found: list[tuple[_File, yaml.Node]], section: str,
        build: Callable[[_File, str, yaml.Node], Any],
    ) -> dict[str, Any]:
        """Build every ``name: spec`` entry of one section across files."""
        out: dict[str, Any] = {}
        for f, node in found:
            for name, value in self.mapping(f, node, f"`{section}`").items():
                built = build(f, name, value)
                if built is not None and self.unique(f, value, section.rstrip("s"), name):
                    out[name] = built
        return out

    # -- counters, thresholds, lists

    def counter(self, f: _File, name: str, node: yaml.Node) -> CounterSpec | None:
        what = f"counter `{name}`"
        m = self.mapping(f, node, what, _COUNTER_KEYS)
        before = len(self.problems)
        if not _NAME.fullmatch(name):
            self.err(f, node, f"{what}: a counter name is letters, digits and _")
        events = (self.names(f, m["events"], EVENTS, f"{what} `events`", "event")
                  if "events" in m else None)
        key: tuple[str, ...] = ()
        if "key" not in m:
            self.err(f, node, f"{what} needs `key:`: {_KEY_HELP}")
        else:
            text = self.scalar(f, m["key"], (str,), f"{what} key", _KEY_HELP)
            key = tuple(p.strip() for p in text.split("+")) if text else ()
            if text and not all(_NAME.fullmatch(p) for p in key):
                self.err(f, m["key"], f"{what} key `{text}` is not {_KEY_HELP}")
        distinct = None
        if "distinct" in m:
            distinct = self.scalar(f, m["distinct"], (str,), f"{what} distinct",
                                   "a field name such as account")
            if distinct and not _NAME.fullmatch(distinct):
                self.err(f, m["distinct"], f"{what} distinct `{distinct}` is not a field name; "
                                           "use ip, ip_prefix, account, device, email_domain, "
                                           "fingerprint or an attribute name")
        kind: CounterKind = "distinct" if "distinct" in m else "count"
        if "kind" in m:
            given = self.scalar(f, m["kind"], (str,), f"{what} kind", "count or distinct")
            if given not in (None, "count", "distinct"):
                self.err(f, m["kind"], f"{what} kind `{given}` is unknown; use count or distinct")
            elif given == "distinct" and "distinct" not in m:
                self.err(f, m["kind"], f"{what} is kind distinct but says not of what; add "
                                       "`distinct: FIELD`, e.g. `distinct: account`")
            elif given == "count" and "distinct" in m:
                self.err(f, m["kind"], f"{what} is kind count but has `distinct:`; "
                                       "remove one of them")
        window = self.window(f, m.get("window"), node, what)
        on = (self.names(f, m["on"], OUTCOMES, f"{what} `on`", "outcome")
              if "on" in m else frozenset())
        if len(self.problems) > before or window is None:
            return None
        return CounterSpec(name, events or frozenset(EVENTS), key, kind, distinct, window,
                           on or frozenset())

    def window(self, f: _File, node: yaml.Node | None, parent: yaml.Node, what: str
               ) -> float | None:
        if node is None:
            self.err(f, parent, f"{what} needs `window:`, e.g. `window: 10m`")
            return None
        value = f.value(node) if isinstance(node, yaml.ScalarNode) else None
        if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
            return float(value)
        found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", str(value))
        if found and float(found[1]) > 0:
            return float(found[1]) * _UNITS[found[2]]
        self.err(f, node, f"{what} window `{value}` is not a duration; write a number and "
                          "s, m, h or d, e.g. `10m`")
        return None

    def threshold(self, f: _File, event: str, node: yaml.Node) -> Thresholds | None:
        if event not in EVENTS:
            self.err(f, node, f"thresholds for unknown event `{event}`"
                     + did_you_mean(event, EVENTS, "known"))
            return None
        what = f"thresholds for {event}"
        m = self.mapping(f, node, what, ("challenge", "block"))
        values = {}
        for key, value_node in m.items():
            value = self.scalar(f, value_node, (int, float), f"{what}: {key}",
                                "a score from 0 to 100")
            if value is not None and not 0 <= value <= 100:
                self.err(f, value_node, f"{what}: {key} {value} is outside 0 to 100")
            elif value is not None:
                values[key] = float(value)
        found = Thresholds(**values)
        if found.challenge > found.block:
            self.err(f, node, f"{what}: challenge {found.challenge:g} is above block "
                              f"{found.block:g}; challenge must be the lower score")
            return None
        return found

    def list_spec(self, f: _File, name: str, node: yaml.Node) -> ListSpec | None:
        what = f"list `{name}`"
        m = self.mapping(f, node, what, _LIST_KEYS)
        if "file" not in m or "type" not in m:
            self.err(f, node, f"{what} needs `file:` and `type:` ({', '.join(LIST_TYPES)})")
            return None
        kind = self.scalar(f, m["type"], (str,), f"{what} type", ", ".join(LIST_TYPES))
        rel = self.scalar(f, m["file"], (str,), f"{what} file", "a path")
        if kind is not None and kind not in LIST_TYPES:
            self.err(f, m["type"], f"{what} has unknown type `{kind}`"
                     + did_you_mean(kind, LIST_TYPES, "known"))
            return None
        if kind is None or rel is None:
            return None
        path = f.path.parent / rel
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            reason = e.strerror if isinstance(e, OSError) else "not UTF-8 text"
            self.err(f, m["file"], f"{what}: cannot read `{path}`: {reason}; the path is "
                                   f"relative to {f.path.parent}")
            return None
        self.digest.update(rel.encode() + b"\0" + text.encode() + b"\0")
        parse, build = LIST_PARSERS[kind]
        if kind == "device":
            # Facts carry device ids only keyed with the secret (`device.key`), so the raw
            # ids analysts list are keyed the same way once, here.
            parse = functools.partial(self.keyer, "device")
        entries = []
        for number, raw in enumerate(text.split("\n"), start=1):
            entry = raw.split(" #")[0].strip()  # " #" so a pattern may still contain "#"
            if not entry or entry.startswith("#"):
                continue
            try:
                entries.append(parse(entry))
            except ValueError as e:
                self.problems.append(Problem(str(path), number, 1,
                                             f"{what} ({kind}): bad entry `{entry}`: {e}; "
                                             "fix or remove the line"))
        try:
            members = build(entries)
        except ValueError as e:  # entries that each compile may not compile joined
            self.err(f, m["file"], f"{what} ({kind}): the entries of `{path}` together: {e}")
            return None
        return ListSpec(name, kind, str(path), members, len(entries))

    # -- rules

    def rule_list(self, f: _File, node: yaml.Node, ns: Namespace) -> list[Rule]:
        if not isinstance(node, yaml.SequenceNode):
            self.err(f, node, "`rules` must be a list of rules, each starting `- id: ...`")
            return []
        return [r for item in node.value if (r := self.rule(f, item, ns)) is not None]

    def rule(self, f: _File, node: yaml.Node, ns: Namespace) -> Rule | None:
        rid = _peek(node, "id")  # so that even the first problems name the rule
        m = self.mapping(f, node, "a rule", _RULE_KEYS, rid)
        if not m:
            return None
        before = len(self.problems)
        if "id" not in m:
            self.err(f, node, "a rule needs `id:`, a unique name such as "
                              "login-credential-stuffing")
        elif not isinstance(rid, str) or not _RULE_ID.fullmatch(rid):
            self.err(f, m["id"], f"rule id `{rid}` may hold letters, digits and - _ . : only",
                     rid)
        elif rid.startswith(RUNTIME_RULE_PREFIX):
            self.err(f, m["id"], f"rule ids starting with `{RUNTIME_RULE_PREFIX}` are kept for "
                                 "runtime list entries; rename the rule", rid)
        else:
            self.unique(f, m["id"], "rule id", rid)
        events = (self.names(f, m["events"], EVENTS, "`events`", "event", rid) if "events" in m
                  else frozenset(EVENTS))
        if ("score" in m) == ("action" in m):
            self.err(f, node, "a rule needs exactly one of `score:` (added to the risk score) "
                              "or `action:` (allow, challenge or block)", rid)
        score = 0.0
        if "score" in m:
            given = self.scalar(f, m["score"], (int, float), "score", "a number", rid)
            if given is not None and not -100 <= given <= 100:
                self.err(f, m["score"], f"score {given} is outside -100 to 100", rid)
            score = float(given or 0)
        action = self.choice(f, m.get("action"), ACTIONS, "action", rid)
        mode = self.choice(f, m.get("mode"), ("enforce", "shadow"), "mode", rid) or "enforce"
        text = {k: self.scalar(f, m[k], (str,), k, "text", rid) or ""
                for k in ("description", "owner") if k in m}
        tags = tuple(self.scalar(f, t, (str,), "tag", "text", rid) or "" for t in
                     (m["tags"].value if isinstance(m.get("tags"), yaml.SequenceNode) else
                      [m["tags"]] if "tags" in m else []))
        expires = self.expires(f, m["expires"], rid) if "expires" in m else None
        expr = None
        if "when" not in m:
            self.err(f, node, "a rule needs `when:`, a condition such as "
                              "`counters.login_fails > 5`", rid)
        else:
            expr = self.when(f, m["when"], ns, rid)
        if len(self.problems) > before or not isinstance(rid, str):
            return None
        return Rule(
            id=rid, when=expr.source if expr else "", events=events or frozenset(EVENTS),
            score=score, action=action, mode=mode, description=text.get("description", ""),  # type: ignore[arg-type]
            tags=tags, owner=text.get("owner"), expires=expires, file=f.name,
            line=_where(node)[0], expr=expr,
        )

    def choice(
        self, f: _File, node: yaml.Node | None, allowed: tuple[str, ...], what: str,
        rid: str | None, context: str = "",
    ) -> Any:
        if node is None:
            return None
        value = self.scalar(f, node, (str,), what, " or ".join(allowed), rid)
        if value is not None and value not in allowed:
            self.err(f, node, f"{context}unknown {what} `{value}`"
                     + did_you_mean(value, allowed, "use"), rid)
            return None
        return value

    def expires(self, f: _File, node: yaml.Node, rid: str) -> date | None:
        value = f.value(node) if isinstance(node, yaml.ScalarNode) else None
        if isinstance(value, datetime):
            value = value.date()
        if isinstance(value, str) and re.fullmatch(r"\d{4}-\d\d-\d\d", value):
            with contextlib.suppress(ValueError):
                value = date.fromisoformat(value)
        if not isinstance(value, date):
            self.err(f, node, f"expires `{value}` is not a date; write YYYY-MM-DD", rid)
            return None
        line, col = _where(node)
        if value < self.today:
            self.warnings.append(Problem(f.name, line, col, f"expired on {value} and no longer "
                                        "matches; remove the rule or move `expires` later",
                                        rid, "warning"))
        elif value - self.today <= EXPIRY_WARNING:
            days = (value - self.today).days
            self.warnings.append(Problem(f.name, line, col, f"expires on {value} (in {days} "
                                        "days) and then stops matching; extend `expires` or "
                                        "remove the rule", rid, "warning"))
        return value

    def when(self, f: _File, node: yaml.Node, ns: Namespace, rid: str | None) -> Expr | None:
        value = f.value(node) if isinstance(node, yaml.ScalarNode) else None
        if isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not value.strip():
            self.err(f, node, "`when` must be a condition such as `counters.login_fails > 5`",
                     rid)
            return None
        expr, problems = check(value, ns)
        locate = _locator(node, f.lines)
        for p in problems:
            line, col = locate(p.line, p.column)
            self.problems.append(Problem(f.name, line, col, p.message, rule=rid))
        return expr

    # -- rule tests

    def test_list(
        self, f: _File, node: yaml.Node, ns: Namespace, counters: Mapping[str, CounterSpec],
        rules: tuple[Rule, ...],
    ) -> list[RuleTest]:
        if not isinstance(node, yaml.SequenceNode):
            self.err(f, node, "`tests` must be a list of tests, each starting `- name: ...`")
            return []
        by_id = {r.id: r for r in rules}
        return [t for item in node.value
                if (t := self.test(f, item, ns, counters, by_id)) is not None]

    def test(
        self, f: _File, node: yaml.Node, ns: Namespace, counters: Mapping[str, CounterSpec],
        rules: Mapping[str, Rule],
    ) -> RuleTest | None:
        m = self.mapping(f, node, "a test", _TEST_KEYS)
        if not m:
            return None
        before = len(self.problems)
        name = self.scalar(f, m["name"], (str,), "test name", "text") if "name" in m else None
        what = f"test `{name}`" if name else "a test"
        for key in ("name", "event", "expect"):
            if key not in m:
                self.err(f, node, f"{what} needs `{key}:`")
        facts = self.test_facts(f, m["event"], ns, what) if "event" in m else {}
        values: dict[str, float] = {}
        given = self.mapping(f, m["counters"], f"{what} counters") if "counters" in m else {}
        for counter, value_node in given.items():
            if counter not in counters:
                self.err(f, value_node, f"{what} sets unknown counter `{counter}`"
                         + did_you_mean(counter, counters, "known"))
            value = self.scalar(f, value_node, (int, float), f"counter `{counter}`", "a number")
            values[counter] = float(value or 0)
        expect = self.mapping(f, m["expect"], f"{what} expect", _EXPECT_KEYS) if "expect" in m \
            else {}
        decision = self.choice(f, expect.get("decision"), ACTIONS, "decision", None,
                               f"{what}: ")
        expected_rules = None
        if "rules" in expect:
            expected_rules = self.expected_rules(f, expect["rules"], rules, what)
        if len(self.problems) > before or not name:
            return None
        return RuleTest(name, facts["event"], facts, values, decision, expected_rules, f.name,
                        _where(node)[0])

    def expected_rules(
        self, f: _File, node: yaml.Node, rules: Mapping[str, Rule], what: str
    ) -> frozenset[str]:
        items = node.value if isinstance(node, yaml.SequenceNode) else [node]
        out = set()
        for item in items:
            rid = self.scalar(f, item, (str,), f"{what} expect rules", "rule ids")
            if rid is None:
                continue
            if rid not in rules:
                self.err(f, item, f"{what} expects unknown rule `{rid}`"
                         + did_you_mean(rid, rules, "known"))
            elif rules[rid].mode == "shadow":
                self.err(f, item, f"{what} expects shadow rule `{rid}`; shadow matches never "
                                  "decide, so leave it out of `rules`")
            out.add(rid)
        return frozenset(out)

    def test_facts(self, f: _File, node: yaml.Node, ns: Namespace, what: str) -> dict[str, Any]:
        """Facts of a minimal request built through the signal extractor, then overridden."""
        raw: dict[str, Any] = {}
        overrides: list[tuple[str, Any, yaml.Node]] = []
        m = self.mapping(f, node, f"{what} event")
        for key, value_node in m.items():
            nested = isinstance(value_node, yaml.MappingNode)
            if key in _REQUEST_KEYS and (key in ("headers", "attributes") or not nested):
                raw[key] = f.value(value_node)
            else:
                overrides.extend(self.flatten(f, key, value_node))
        for key, shape, wanted in (("headers", dict, "a mapping of name: value"),
                                   ("attributes", dict, "a mapping of name: value"),
                                   ("challenge_passed", bool, "true or false")):
            if key in raw and not isinstance(raw[key], shape):
                self.err(f, m[key], f"{what}: `{key}` must be {wanted}")
                del raw[key]
        event = raw.get("event")
        ip = str(raw.get("ip", _TEST_IP))
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            self.err(f, m["ip"], f"{what}: ip `{ip}` is not an IPv4 or IPv6 address")
            address = ipaddress.ip_address(_TEST_IP)
        if event not in EVENTS:
            self.err(f, m.get("event", node), f"{what} event needs `event:` one of "
                                              f"{', '.join(EVENTS)}")
            event = EVENTS[0]
        try:
            request = RiskEvent(
                request_id=f"test:{what}", event=event, time=0.0,
                ip=address,
                account=_text(raw.get("account")), device_id=_text(raw.get("device_id")),
                user_agent=_text(raw.get("user_agent")),
                headers={str(k).lower(): str(v) for k, v in (raw.get("headers") or {}).items()},
                attributes=dict(raw.get("attributes") or {}),
                challenge_passed=bool(raw.get("challenge_passed", False)),
            )
        except (ValueError, AttributeError) as e:
            self.err(f, node, f"{what} event is not a valid request: {e}")
            return {"event": event}
        facts = dict.fromkeys(ns.signals) | SignalExtractor(self.keyer).facts(request)
        for name, value, value_node in overrides:
            root = name.split(".")[0]
            kind = ns.signals.get(name) or (
                "any" if root in ns.families and name.count(".") == 1 else None)
            if kind is None:
                self.err(f, value_node, f"{what} sets unknown signal `{name}`"
                         + did_you_mean(name, ns.signals, ""))
            elif not _fits(value, kind):
                self.err(f, value_node, f"{what} sets `{name}` to `{value}` but it holds a "
                                        f"{kind} value")
            else:
                facts[name] = value
        return facts

    def flatten(self, f: _File, name: str, node: yaml.Node) -> list[tuple[str, Any, yaml.Node]]:
        if not isinstance(node, yaml.MappingNode):
            return [(name, f.value(node), node)]
        return [item for key, value in self.mapping(f, node, f"`{name}`").items()
                for item in self.flatten(f, f"{name}.{key}", value)]


def _order(p: Problem) -> tuple[str, int, int]:
    return p.file, p.line or 0, p.column or 0


def _peek(node: yaml.Node, key: str) -> Any:
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode) and k.value == key and isinstance(v, yaml.ScalarNode):
                return v.value
    return None


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _fits(value: Any, kind: str) -> bool:
    if value is None or kind == "any":
        return True
    if kind == "num":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, {"str": str, "bool": bool}[kind])


def _locator(node: yaml.Node, lines: list[str]) -> Callable[[int, int], tuple[int, int]]:
    """Map (line, column) inside a ``when`` string to its 1-based place in the YAML file."""
    first, last = node.start_mark.line, node.end_mark.line
    style = node.style if isinstance(node, yaml.ScalarNode) else None
    if style in ("|", ">"):
        last = last if node.end_mark.column else last - 1  # the end mark sits on the next key
        body = [(i, lines[i]) for i in range(first + 1, min(last + 1, len(lines)))]
        if style == "|":  # a literal block keeps the lines as written, indented under the key
            indent = next((len(t) - len(t.lstrip(" ")) for _, t in body if t.strip()), 0)
            return lambda line, col: (first + 1 + line, indent + col + 1)
        segments = [(i, len(t) - len(t.lstrip(" ")), len(t.strip())) for i, t in body if t.strip()]
    else:  # plain and quoted scalars fold their lines into one, joined by spaces
        start = node.start_mark.column + (1 if style in ("'", '"') else 0)
        segments = [(first, start, len(lines[first]) - start)]
        segments += [(i, len(lines[i]) - len(lines[i].lstrip(" ")), len(lines[i].strip()))
                     for i in range(first + 1, min(last + 1, len(lines)))]

    def locate(line: int, col: int) -> tuple[int, int]:
        for number, begin, length in segments if line == 1 else ():
            if col <= length:
                return number + 1, begin + col + 1
            col -= length + 1
        number, begin, _ = segments[0] if segments else (first, 0, 0)
        return number + 1, begin + 1

    return locate
