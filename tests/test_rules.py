"""Rule sets: loading, validation with located messages, evaluation and rule tests."""

from __future__ import annotations

import contextlib
import faulthandler
import json
import tempfile
import textwrap
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from riskgate.decision.verdict import Match, Thresholds
from riskgate.errors import RuleSetError
from riskgate.event.types import EVENTS
from riskgate.rules.loader import RULE_TEST_KEYER, load_ruleset
from riskgate.rules.model import CounterSpec, RuleSet
from riskgate.rules.testing import run_rule_tests
from riskgate.signals.keys import Keyer

RULESETS = Path(__file__).parent / "rulesets"
GOOD = RULESETS / "good"
BAD = RULESETS / "bad"


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def problems(path: Path, **kwargs: date) -> list[str]:
    with pytest.raises(RuleSetError) as caught:
        load_ruleset(path, **kwargs)
    return [str(p) for p in caught.value.problems]


# --- the example folders --------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(p for p in GOOD.iterdir()), ids=lambda p: p.name)
def test_good_examples_load_and_their_rule_tests_pass(path: Path) -> None:
    ruleset = load_ruleset(path)
    assert ruleset.rules
    assert [str(r) for r in run_rule_tests(ruleset) if not r.passed] == []


@pytest.mark.parametrize("path", sorted(p for p in BAD.iterdir() if p.suffix != ".expected"),
                         ids=lambda p: p.name)
def test_bad_examples_report_every_problem_with_file_line_column_rule_and_fix(path: Path) -> None:
    expected = (BAD / f"{path.stem}.expected").read_text().splitlines()
    assert problems(path) == [line.replace("{bad}", str(BAD)) for line in expected]


def test_the_contract_example_loads_and_its_test_passes(tmp_path: Path) -> None:
    write(tmp_path, "lists/bad_networks.txt", "203.0.113.0/24\n")
    path = write(tmp_path, "rules.yaml", """\
        counters:
          login_accounts_per_ip: {events: [login], key: ip, distinct: account, window: 10m}
        thresholds:
          login: {challenge: 50, block: 80}
        lists:
          bad_networks: {file: lists/bad_networks.txt, type: cidr}
        rules:
          - id: login-credential-stuffing
            description: One IP tries many different accounts
            events: [login]
            when: counters.login_accounts_per_ip > 8
            score: 60
        tests:
          - name: ten accounts from one IP are challenged
            event: {event: login, ip: 203.0.113.5}
            counters: {login_accounts_per_ip: 10}
            expect: {decision: challenge, rules: [login-credential-stuffing]}
        """)
    ruleset = load_ruleset(path)
    assert [r.passed for r in run_rule_tests(ruleset)] == [True]
    assert ruleset.counters["login_accounts_per_ip"] == CounterSpec(
        "login_accounts_per_ip", frozenset({"login"}), ("ip",), "distinct", "account", 600.0)


# --- files and folders ---------------------------------------------------------------------------


def test_files_of_a_folder_merge_in_name_order(tmp_path: Path) -> None:
    write(tmp_path, "b.yml", "rules: [{id: second, when: 'true', score: 1}]\n")
    write(tmp_path, "a.yaml", "rules: [{id: first, when: 'true', score: 1}]\n")
    write(tmp_path, "notes.txt", "not a rule file")
    assert [r.id for r in load_ruleset(tmp_path).rules] == ["first", "second"]


def test_rules_may_use_counters_and_lists_declared_in_another_file(tmp_path: Path) -> None:
    write(tmp_path, "z-counters.yaml", "counters: {fails: {key: ip, window: 1m}}\n")
    write(tmp_path, "a-rules.yaml", "rules: [{id: r, when: counters.fails > 1, score: 1}]\n")
    assert load_ruleset(tmp_path).evaluate("login", {}, {"fails": 2}) == [Match("r", 1.0)]


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({}, "{dir}: no *.yaml or *.yml rule files in this folder"),
        ({"a.yaml": "- just a list\n"}, "{dir}/a.yaml:1:1: a rule file must be a mapping of "
                                        "`key: value`"),
        ({"a.yaml": "rules: {id: x}\n"}, "{dir}/a.yaml:1:8: `rules` must be a list of rules, "
                                         "each starting `- id: ...`"),
    ],
)
def test_folder_and_file_shape_problems(tmp_path: Path, files: dict[str, str], message: str
                                        ) -> None:
    for name, text in files.items():
        write(tmp_path, name, text)
    assert problems(tmp_path) == [message.replace("{dir}", str(tmp_path))]


def test_a_missing_path_is_reported(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    assert problems(missing) == [f"{missing}: no such rule file or folder"]


def test_an_empty_file_is_an_empty_rule_set(tmp_path: Path) -> None:
    ruleset = load_ruleset(write(tmp_path, "empty.yaml", ""))
    assert ruleset.rules == () and ruleset.evaluate("login", {}, {}) == []
    assert ruleset.thresholds == {event: Thresholds() for event in EVENTS}


def test_the_version_is_a_short_hash_of_rule_and_list_files(tmp_path: Path) -> None:
    rules = write(tmp_path, "r.yaml", "lists: {l: {file: l.txt, type: string}}\n")
    write(tmp_path, "l.txt", "a\n")
    first = load_ruleset(rules).version
    assert len(first) == 12 and load_ruleset(rules).version == first
    write(tmp_path, "l.txt", "b\n")
    assert load_ruleset(rules).version != first


# --- counters -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "key_facts", "kind", "distinct_fact", "window_s"),
    [
        ("{key: ip, window: 30s}", ("ip",), "count", None, 30.0),
        ("{key: ip_prefix, window: 10m}", ("ip.prefix",), "count", None, 600.0),
        ("{key: account+flight, window: 1.5h}", ("account.key", "attributes.flight"), "count",
         None, 5400.0),
        ("{key: device, distinct: email_domain, window: 1d}", ("device.key",), "distinct",
         "account.email_domain", 86400.0),
        ("{key: email_domain, kind: distinct, distinct: ip, window: 90}",
         ("account.email_domain",), "distinct", "ip", 90.0),
    ],
)
def test_counter_keys_map_to_the_facts_they_read(
    tmp_path: Path, spec: str, key_facts: tuple[str, ...], kind: str, distinct_fact: str | None,
    window_s: float,
) -> None:
    counter = load_ruleset(write(tmp_path, "c.yaml", f"counters: {{c: {spec}}}\n")).counters["c"]
    assert (counter.key_facts, counter.kind, counter.distinct_fact, counter.window_s) == (
        key_facts, kind, distinct_fact, window_s)
    assert counter.events == frozenset(EVENTS)


def test_feedback_counters_keep_their_outcomes_and_events_select_counters(tmp_path: Path) -> None:
    ruleset = load_ruleset(write(tmp_path, "c.yaml", """\
        counters:
          fails: {events: [login], key: account, window: 1h, on: [login_failed, fraud]}
          holds: {events: [booking], key: account, window: 1h}
        """))
    assert ruleset.counters["fails"].on == frozenset({"login_failed", "fraud"})
    assert [c.name for c in ruleset.counters_for("login")] == ["fails"]


def test_a_counter_with_distinct_and_kind_count_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml",
                 "counters: {c: {key: ip, distinct: account, kind: count, window: 1m}}\n")
    assert problems(path) == [f"{path}:1:50: counter `c` is kind count but has `distinct:`; "
                              "remove one of them"]


# --- rules ----------------------------------------------------------------------------------------


@pytest.fixture
def ruleset(tmp_path: Path) -> RuleSet:
    return load_ruleset(write(tmp_path, "r.yaml", """\
        counters:
          fails: {events: [login], key: ip, window: 10m}
          seats: {events: [booking], key: account, window: 10m}
        rules:
          - {id: fails, events: [login], when: counters.fails > 3, score: 40}
          - {id: fails-shadow, events: [login], when: counters.fails > 1, score: 90, mode: shadow}
          - {id: vip, when: attributes.vip == true, action: allow}
          - {id: ratio, events: [login], when: counters.fails / counters.seats > 1, score: 1}
          - {id: soon-gone, when: "true", score: 5, expires: 2030-01-31}
        """), today=date(2030, 1, 20))


def test_enforcing_and_shadow_matches_are_both_returned(ruleset: RuleSet) -> None:
    assert ruleset.evaluate("login", {}, {"fails": 5}, now=0) == [
        Match("fails", 40.0), Match("fails-shadow", 90.0, shadow=True), Match("soon-gone", 5.0)]


def test_rules_only_run_for_their_events(ruleset: RuleSet) -> None:
    assert ruleset.evaluate("booking", {"attributes.vip": True}, {"fails": 5}, now=0) == [
        Match("vip", action="allow"), Match("soon-gone", 5.0)]


def test_an_unknown_event_runs_the_rules_for_every_event(ruleset: RuleSet) -> None:
    assert ruleset.evaluate("checkin", {}, {}, now=0) == [Match("soon-gone", 5.0)]


def test_missing_counters_read_as_missing_and_never_match(ruleset: RuleSet) -> None:
    assert ruleset.evaluate("login", {}, {}, now=0) == [Match("soon-gone", 5.0)]


def test_a_rule_that_raises_does_not_match_and_is_counted(ruleset: RuleSet) -> None:
    for _ in range(2):
        assert "ratio" not in [m.rule for m in
                               ruleset.evaluate("login", {}, {"fails": 1, "seats": 0}, now=0)]
    assert ruleset.evaluation_errors == {"ratio": 2}


def test_a_rule_stops_matching_after_its_expiry_date(ruleset: RuleSet) -> None:
    last_day = datetime(2030, 1, 31, 23, 59, tzinfo=UTC).timestamp()
    next_day = datetime(2030, 2, 1, tzinfo=UTC).timestamp()
    assert ruleset.evaluate("promotion", {}, {}, now=last_day) == [Match("soon-gone", 5.0)]
    assert ruleset.evaluate("promotion", {}, {}, now=next_day) == []
    assert ruleset.evaluate("promotion", {}, {}, now=last_day) == [Match("soon-gone", 5.0)]


def test_rules_expiring_within_two_weeks_are_warned_about(ruleset: RuleSet) -> None:
    assert [str(w) for w in ruleset.warnings] == [
        f"{ruleset.source}:9:54: warning: rule soon-gone: expires on 2030-01-31 (in 11 days) "
        "and then stops matching; extend `expires` or remove the rule"]


def test_expired_rules_are_warned_about(tmp_path: Path) -> None:
    path = write(tmp_path, "r.yaml", "rules: [{id: old, when: 'true', score: 1, "
                                     "expires: 2020-01-01}]\n")
    assert [str(w) for w in load_ruleset(path, today=date(2024, 1, 1)).warnings] == [
        f"{path}:1:52: warning: rule old: expired on 2020-01-01 and no longer matches; remove "
        "the rule or move `expires` later"]


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("{when: 'true', score: 1}", "1:9: a rule needs `id:`, a unique name such as "
                                     "login-credential-stuffing"),
        ("{id: 'a b', when: 'true', score: 1}", "1:14: rule a b: rule id `a b` may hold letters, "
                                                "digits and - _ . : only"),
        ("{id: r, score: 1}", "1:9: rule r: a rule needs `when:`, a condition such as "
                              "`counters.login_fails > 5`"),
        ("{id: r, when: '', score: 1}", "1:23: rule r: `when` must be a condition such as "
                                        "`counters.login_fails > 5`"),
        ("{id: r, when: 'true', score: 1, action: block}",
         "1:9: rule r: a rule needs exactly one of `score:` (added to the risk score) or "
         "`action:` (allow, challenge or block)"),
        ("{id: r, when: 'true', score: high}", "1:38: rule r: score must be a number, not `high`"),
        ("{id: r, when: 'true', score: 500}", "1:38: rule r: score 500 is outside -100 to 100"),
        ("{id: r, when: 'true', score: 1, expires: soon}",
         "1:50: rule r: expires `soon` is not a date; write YYYY-MM-DD"),
        ("{id: r, when: 'true', score: 1, events: []}",
         "1:49: rule r: `events` is empty; list at least one or leave the key out"),
        ("{id: r, when: 'true', score: 1, tags: [{a: b}]}",
         "1:48: rule r: tag must be text, not a list or mapping"),
    ],
)
def test_rule_shape_problems(tmp_path: Path, rule: str, message: str) -> None:
    path = write(tmp_path, "r.yaml", f"rules: [{rule}]\n")
    assert problems(path) == [f"{path}:{message}"]


@pytest.mark.parametrize(
    ("when", "where"),
    [
        ('when: counters.nope > 1', "3:11"),
        ('when: "counters.nope > 1"', "3:12"),
        ("when: 'counters.nope > 1'", "3:12"),
        ('when: |\n      account.present\n      and counters.nope > 1', "5:11"),
        ('when: >\n      account.present and\n      counters.nope > 1', "5:7"),
        ('when: account.present and\n      counters.nope > 1', "4:7"),
    ],
)
def test_expression_problems_point_into_the_yaml_file(tmp_path: Path, when: str, where: str
                                                      ) -> None:
    path = write(tmp_path, "r.yaml", f"rules:\n  - id: r\n    {when}\n    score: 1\n")
    assert problems(path) == [f"{path}:{where}: rule r: unknown counter `nope`; no counters are "
                              "declared: add it under `counters:`"]


# --- lists ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "lines", "member", "outsider"),
    [
        ("cidr", "10.0.0.0/8\n2001:db8::/32\n192.0.2.1", "2001:db8::9", "11.0.0.1"),
        ("ip", "192.0.2.1\n2001:db8::1", "192.0.2.1", "192.0.2.2"),
        ("asn", "AS13335\n15169", 13335, 64512),
        ("domain", "mailinator.com\n*.yopmail.com", "x.yopmail.com", "gmail.com"),
        ("device", "d-1\nd-2", RULE_TEST_KEYER("device", "d-2"), RULE_TEST_KEYER("device", "d-3")),
        ("string", "SPRING\nSUMMER # inline comment", "SUMMER", "WINTER"),
        ("ua_pattern", "^curl/\nHeadless", "Mozilla HeadlessChrome", "Mozilla Firefox"),
    ],
)
def test_lists_load_from_files_next_to_the_rule_file(
    tmp_path: Path, kind: str, lines: str, member: object, outsider: object
) -> None:
    write(tmp_path, "lists/l.txt", f"# comment\n\n{lines}\n")
    ruleset = load_ruleset(write(tmp_path, "r.yaml",
                                 f"lists: {{l: {{file: lists/l.txt, type: {kind}}}}}\n"))
    members = ruleset.lists["l"].members
    assert (member in members, outsider in members, None in members) == (True, False, False)


DEVICE_LIST_RULES = """\
    lists:
      stolen_devices: {file: lists/stolen.txt, type: device}
    rules:
      - {id: stolen-device, when: device.key in lists.stolen_devices, action: block}
    tests:
      - name: a listed device is blocked
        event: {event: login, device_id: d-stolen-1}
        expect: {decision: block, rules: [stolen-device]}
      - name: another device is allowed
        event: {event: login, device_id: d-mine}
        expect: {decision: allow, rules: []}
    """


def test_a_device_list_matches_the_keyed_device_id_and_never_the_raw_one(
    tmp_path: Path,
) -> None:
    write(tmp_path, "lists/stolen.txt", "d-stolen-1\n")
    keyer = Keyer(b"the service's own secret")
    ruleset = load_ruleset(write(tmp_path, "r.yaml", DEVICE_LIST_RULES), keyer=keyer)
    keyed = ruleset.evaluate("login", {"device.key": keyer("device", "d-stolen-1")}, {})
    raw = ruleset.evaluate("login", {"device.key": "d-stolen-1"}, {})
    assert ([m.rule for m in keyed], raw) == (["stolen-device"], [])


def test_rule_tests_can_exercise_device_lists(tmp_path: Path) -> None:
    write(tmp_path, "lists/stolen.txt", "d-stolen-1\n")
    ruleset = load_ruleset(write(tmp_path, "r.yaml", DEVICE_LIST_RULES))
    assert [str(r) for r in run_rule_tests(ruleset) if not r.passed] == []


def test_a_bad_regex_in_a_pattern_list_is_located(tmp_path: Path) -> None:
    listed = write(tmp_path, "ua.txt", "ok\n(unclosed\n")
    path = write(tmp_path, "r.yaml", "lists: {ua: {file: ua.txt, type: ua_pattern}}\n")
    assert problems(path) == [f"{listed}:2:1: list `ua` (ua_pattern): bad entry `(unclosed`: bad "
                              "regex '(unclosed': missing ): (unclosed; RE2 syntax: "
                              "https://github.com/google/re2/wiki/Syntax; fix or remove the line"]


# --- regexes: linear time whatever the analyst writes -----------------------------------------

#: Backtracking engines take exponential time on this pattern and a long run of "a"
#: that does not end the way it wants.
CATASTROPHIC = "(a+)+$"
LONG_AGENT = "a" * 100_000 + "!"


@contextlib.contextmanager
def hang_guard(seconds: int = 120) -> Iterator[None]:
    """Kill the test run with a traceback instead of hanging forever if the code under
    test never returns (a backtracking regex holds the GIL, so no thread can stop it).
    Not a timing assertion: a pass takes milliseconds, a failure never ends."""
    faulthandler.dump_traceback_later(seconds, exit=True)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


def test_a_catastrophic_regex_in_when_evaluates_a_100_kb_user_agent_and_returns(
    tmp_path: Path,
) -> None:
    ruleset = load_ruleset(write(tmp_path, "r.yaml", f"""\
        rules:
          - {{id: stuck, when: 'matches(device.user_agent, "{CATASTROPHIC}")', score: 10}}
          - {{id: long-agent, when: 'matches(device.user_agent, "a{{500}}!$")', score: 10}}
        """))
    with hang_guard():
        matched = ruleset.evaluate("login", {"device.user_agent": LONG_AGENT}, {})
    assert [m.rule for m in matched] == ["long-agent"]


def test_a_catastrophic_ua_pattern_list_entry_tests_a_100_kb_user_agent_and_returns(
    tmp_path: Path,
) -> None:
    write(tmp_path, "lists/agents.txt", f"{CATASTROPHIC}\nheadless\n")
    ruleset = load_ruleset(write(tmp_path, "r.yaml", """\
        lists:
          agents: {file: lists/agents.txt, type: ua_pattern}
        rules:
          - {id: listed-agent, when: device.user_agent in lists.agents, score: 10}
        """))
    with hang_guard():
        long_agent = ruleset.evaluate("login", {"device.user_agent": LONG_AGENT}, {})
        headless = ruleset.evaluate("login", {"device.user_agent": "x HeadlessChrome"}, {})
    assert ([m.rule for m in long_agent], [m.rule for m in headless]) == ([], ["listed-agent"])


def test_a_regex_re2_cannot_run_is_refused_with_its_place_rule_and_fix(tmp_path: Path) -> None:
    path = write(tmp_path, "r.yaml", """\
        rules:
          - id: desktop-safari
            when: matches(device.user_agent, "(?<!Mobile )Safari")
            score: 10
        """)
    assert problems(path) == [
        f"{path}:3:38: rule desktop-safari: regex '(?<!Mobile )Safari' cannot run under RE2, "
        "which riskgate uses so that no regex can stall it (invalid perl operator: (?<!); "
        "RE2 has no look-ahead or look-behind: test the other part in its own condition, "
        'e.g. `matches(s, "b") and not matches(s, "ab")`']


def test_a_list_pattern_re2_cannot_run_is_refused_at_its_line_with_the_fix(
    tmp_path: Path,
) -> None:
    listed = write(tmp_path, "ua.txt", "curl/\\d\nbot\\Z\n")
    path = write(tmp_path, "r.yaml", "lists: {ua: {file: ua.txt, type: ua_pattern}}\n")
    assert problems(path) == [
        f"{listed}:2:1: list `ua` (ua_pattern): bad entry `bot\\Z`: regex 'bot\\\\Z' cannot run "
        "under RE2, which riskgate uses so that no regex can stall it (invalid escape sequence: "
        "\\Z); write `\\z` (or `$`) for the end of the text; fix or remove the line"]


@pytest.mark.parametrize(
    ("pattern", "agent", "matches"),
    [
        ("(?i)headless", "Mozilla/5.0 HeadlessChrome/120", True),
        ("headless", "Mozilla/5.0 HeadlessChrome/120", False),
        ("(?i:bot)/[0-9]+", "SomeBOT/2", True),
        ("(?s)a.b", "a\nb", True),
        ("(?m)^curl", "x\ncurl/8", True),
        ("^curl/(?P<major>\\d+)", "curl/8.4.0", True),
        ("\\bPython\\b", "Python-urllib/3.11", True),
    ],
)
def test_regexes_keep_the_python_syntax_analysts_write(
    tmp_path: Path, pattern: str, agent: str, matches: bool
) -> None:
    when = json.dumps(f"matches(device.user_agent, {pattern!r})")  # JSON is YAML
    ruleset = load_ruleset(write(tmp_path, "r.yaml", f"rules: [{{id: r, when: {when}, score: 1}}]"))
    assert bool(ruleset.evaluate("login", {"device.user_agent": agent}, {})) is matches


# --- rule tests -----------------------------------------------------------------------------------


def test_a_failing_rule_test_says_what_was_expected_and_what_came_out(tmp_path: Path) -> None:
    path = write(tmp_path, "r.yaml", """\
        counters: {fails: {key: ip, window: 1m}}
        rules:
          - {id: fails, when: counters.fails > 3, score: 40}
        tests:
          - name: expects too much
            event: {event: login}
            counters: {fails: 9}
            expect: {decision: block, rules: [fails]}
          - name: expects nothing
            event: {event: login}
            counters: {fails: 9}
            expect: {rules: []}
        """)
    assert [str(r) for r in run_rule_tests(load_ruleset(path))] == [
        f"{path}:5: FAIL expects too much: expected decision block, got allow (score 40)",
        f"{path}:9: FAIL expects nothing: expected rules [], got [fails]",
    ]


def test_rule_tests_build_facts_through_the_signal_extractor(tmp_path: Path) -> None:
    path = write(tmp_path, "r.yaml", """\
        rules:
          - {id: prefix, when: ip.prefix == '203.0.113.0/24', score: 10}
          - {id: domain, when: account.email_domain == 'example.com', score: 10}
          - {id: geo, when: ip.country == 'RU', score: 10}
          - {id: seats, when: attributes.seats > 4, score: 10}
        tests:
          - name: derived signals and overrides
            event:
              event: booking
              ip: 203.0.113.9
              account: alice@example.com
              attributes: {seats: 5}
              ip.country: RU
            expect: {rules: [prefix, domain, geo, seats]}
        """)
    assert [r.passed for r in run_rule_tests(load_ruleset(path))] == [True]


def test_rule_tests_reject_signal_values_of_the_wrong_type(tmp_path: Path) -> None:
    path = write(tmp_path, "r.yaml", """\
        tests:
          - name: wrong type
            event: {event: login, ip.asn: many}
            expect: {decision: allow}
        """)
    assert problems(path) == [f"{path}:3:35: test `wrong type` sets `ip.asn` to `many` but it "
                              "holds a num value"]


def test_rule_test_request_fields_must_have_their_shape(tmp_path: Path) -> None:
    path = write(tmp_path, "r.yaml", """\
        tests:
          - name: shapes
            event: {event: login, attributes: true, challenge_passed: maybe}
            expect: {decision: allow}
        """)
    assert problems(path) == [
        f"{path}:3:39: test `shapes`: `attributes` must be a mapping of name: value",
        f"{path}:3:63: test `shapes`: `challenge_passed` must be true or false",
    ]


# --- robustness -----------------------------------------------------------------------------------

YAML_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-1000, 1000), st.floats(allow_nan=False),
              st.text(max_size=12), st.sampled_from(["login", "ip", "10m", "block", "fails",
                                                     "counters.fails > 1", "2030-01-01"])),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.sampled_from(
                                ["id", "when", "score", "action", "events", "key", "window",
                                 "name", "event", "expect", "counters", "rules", "file", "type",
                                 "ip", "headers", "attributes", "decision", "fails", "on"]),
                                inner, max_size=4)),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["counters", "thresholds", "lists", "rules", "tests"]),
                       YAML_VALUES, max_size=4))
def test_any_yaml_either_loads_or_is_refused_with_problems(document: dict[str, object]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "r.yaml"
        path.write_text(yaml.safe_dump(document))
        try:
            ruleset = load_ruleset(path)
        except RuleSetError as error:
            assert error.problems
        else:
            run_rule_tests(ruleset)


def test_rule_ids_that_look_like_runtime_list_entries_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "r.yaml", """\
        rules:
          - id: runtime-block:42
            when: ip.version == 4
            score: 5
        """)
    assert problems(path) == [
        f"{path}:2:9: rule runtime-block:42: rule ids starting with `runtime-` are kept for "
        "runtime list entries; rename the rule"
    ]
