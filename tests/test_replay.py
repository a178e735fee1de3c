"""`riskgate replay`: recorded traffic re-run under candidate rules (issue 3, Replay).

Every log here is written by a real :class:`Engine` through a real :class:`DecisionLog`,
so the tests hold replay to the format the gateway actually writes.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from riskgate.engine.core import Decision, Engine
from riskgate.event.ip import parse_ip
from riskgate.event.types import Outcome, RiskEvent
from riskgate.observability.decisionlog import DecisionLog
from riskgate.replay import Change, ReplayReport, RuleHits, replay
from riskgate.rules.loader import load_ruleset
from riskgate.rules.model import RuleSet
from riskgate.signals.extractor import SignalExtractor
from riskgate.signals.keys import Keyer
from riskgate.store import MemoryStore
from support import SHARED_DATA

REPO = Path(__file__).resolve().parents[1]
APACHE_LOG = SHARED_DATA / "logs" / "elastic-apache-logs" / "apache_logs"
SECRET = b"replay-test-secret"
T0 = 1_700_000_000.0
BROWSER = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
           "Chrome/120.0.0.0 Safari/537.36")


@dataclass(frozen=True)
class Feedback:
    """A step of a script: an outcome reported to the engine's feedback API."""

    request_id: str
    outcome: Outcome
    time: float


def login(request_id: str, at: float, ip: str, account: str, ua: str = BROWSER) -> RiskEvent:
    return RiskEvent(request_id, "login", parse_ip(ip), T0 + at, account=account, user_agent=ua)


# Six logins and their outcomes, chosen so that each rule below decides at least once:
# alice fails twice, so her third login meets `account-under-attack` only through
# feedback; carol's login is the fourth from address A, so `busy-ip` challenges it;
# bob's curl login is seen by the shadow rule `bot-ua` and allowed.
SCRIPT: tuple[RiskEvent | Feedback, ...] = (
    login("r1", 0, "203.0.113.10", "alice"),
    Feedback("r1", "login_failed", T0 + 1),
    login("r2", 2, "203.0.113.10", "alice"),
    Feedback("r2", "login_failed", T0 + 3),
    login("r3", 4, "203.0.113.10", "alice"),
    login("r4", 5, "198.51.100.7", "bob", ua="curl/8.4.0"),
    login("r5", 6, "203.0.113.10", "carol"),
    login("r6", 7, "198.51.100.7", "bob"),
    Feedback("r6", "login_succeeded", T0 + 8),
)
RECORDED = {"r1": "allow", "r2": "allow", "r3": "challenge", "r4": "allow", "r5": "challenge",
            "r6": "allow"}


def rules_text(busy_over: int = 3, bot_mode: str = "shadow") -> str:
    """The scripted rule set; the parameters make the candidate variants."""
    return f"""
thresholds:
  login: {{challenge: 50, block: 90}}
counters:
  attempts_per_ip: {{events: [login], key: ip, window: 10m}}
  failures_per_account: {{events: [login], key: account, on: [login_failed], window: 1h}}
rules:
  - {{id: busy-ip, events: [login], when: counters.attempts_per_ip > {busy_over}, score: 50}}
  - id: account-under-attack
    events: [login]
    when: counters.failures_per_account >= 2
    action: challenge
  - {{id: bot-ua, events: [login], when: device.is_bot_ua, score: 60, mode: {bot_mode}}}
"""


def write_rules(folder: Path, text: str) -> RuleSet:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "rules.yaml").write_text(text)
    return load_ruleset(folder)


def record(log: Path, ruleset: RuleSet, script: tuple[RiskEvent | Feedback, ...]) -> list[Decision]:
    """Run ``script`` through a live engine that writes its decision log to ``log``."""

    async def run() -> list[Decision]:
        keyer = Keyer(SECRET)
        decision_log = DecisionLog(log)
        engine = Engine(ruleset, MemoryStore(), SignalExtractor(keyer), keyer, decision_log)
        decided = []
        for step in script:
            if isinstance(step, Feedback):
                assert await engine.feedback(step.request_id, step.outcome,
                                             step.time) == "recorded"
            else:
                decided.append(await engine.decide(step))
        decision_log.close()
        return decided

    return asyncio.run(run())


def run_replay(log: Path, ruleset: RuleSet, samples: int = 3) -> ReplayReport:
    return asyncio.run(replay(log, ruleset, samples=samples))


@pytest.fixture
def scripted(tmp_path: Path) -> tuple[Path, RuleSet]:
    """The scripted traffic recorded under the base rules: (log, base rule set)."""
    ruleset = write_rules(tmp_path / "base", rules_text())
    log = tmp_path / "decisions.log"
    decided = record(log, ruleset, SCRIPT)
    assert {d.request_id: d.verdict.decision for d in decided} == RECORDED
    return log, ruleset


def riskgate_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "riskgate", *args], capture_output=True,
                          text=True, timeout=60, check=False)


# --- the same rules reproduce the recording ---------------------------------------------------


def test_replay_under_the_recorded_rules_reproduces_every_decision(
    scripted: tuple[Path, RuleSet],
) -> None:
    log, ruleset = scripted
    report = run_replay(log, ruleset)
    # No (before, after) cell with before != after means each request decided the same.
    assert report.changes == ()
    assert report.rules == {}
    assert report.table == {"login": {"allow": (4, 4), "challenge": (2, 2), "block": (0, 0)}}
    assert (report.decisions, report.feedback) == (6, 3)
    assert report.recorded_versions == {ruleset.version: 6}
    assert (report.skipped, report.first_skipped, report.orphan_feedback) == (0, None, 0)


#: One scripted step: (seconds since the last step, address, account, fails afterwards).
STEPS = st.lists(st.tuples(st.integers(0, 400), st.sampled_from(["203.0.113.1", "203.0.113.2"]),
                           st.sampled_from(["alice", "bob", "carol"]), st.booleans()),
                 max_size=40)


@settings(max_examples=25, deadline=None)
@given(steps=STEPS)
def test_replay_reproduces_any_sequence_of_logins_and_failures(
    steps: list[tuple[int, str, str, bool]],
) -> None:
    script: list[RiskEvent | Feedback] = []
    at = 0.0
    for number, (gap, ip, account, fails) in enumerate(steps):
        at += gap
        script.append(login(f"r{number}", at, ip, account))
        if fails:
            script.append(Feedback(f"r{number}", "login_failed", T0 + at))
    with tempfile.TemporaryDirectory() as folder:
        ruleset = write_rules(Path(folder) / "rules", rules_text(busy_over=2))
        log = Path(folder) / "decisions.log"
        record(log, ruleset, tuple(script))
        report = run_replay(log, ruleset)
    assert (report.changes, report.rules, report.decisions) == ((), {}, len(steps))


def test_feedback_lines_rebuild_the_failure_counters(
    scripted: tuple[Path, RuleSet], tmp_path: Path,
) -> None:
    log, ruleset = scripted
    without_feedback = tmp_path / "no-feedback.log"
    without_feedback.write_text("".join(line for line in log.read_text().splitlines(True)
                                        if json.loads(line)["type"] == "decision"))
    # With its two failures replayed alice's third login is challenged as recorded;
    # without them the counter stays at zero and the challenge disappears.
    assert run_replay(log, ruleset).changes == ()
    report = run_replay(without_feedback, ruleset)
    assert report.changes == (Change("login", "challenge", "allow", 1, ("r3",)),)
    assert report.rules == {"account-under-attack": RuleHits(enforce_before=1)}


# --- what a candidate changes --------------------------------------------------------------


def test_a_stricter_rule_turns_allows_into_challenges_and_names_the_rule(
    scripted: tuple[Path, RuleSet], tmp_path: Path,
) -> None:
    log, _ = scripted
    stricter = write_rules(tmp_path / "stricter", rules_text(busy_over=1))
    report = run_replay(log, stricter)
    # busy-ip now also matches r2, r3 and r6; r3 was challenged already.
    assert report.changes == (Change("login", "allow", "challenge", 2, ("r2", "r6")),)
    assert report.rules == {"busy-ip": RuleHits(enforce_before=1, enforce_after=4)}
    assert report.table == {"login": {"allow": (4, 2), "challenge": (2, 4), "block": (0, 0)}}


def test_enforcing_a_shadow_rule_moves_its_hits_from_the_shadow_column(
    scripted: tuple[Path, RuleSet], tmp_path: Path,
) -> None:
    log, _ = scripted
    enforced = write_rules(tmp_path / "enforced", rules_text(bot_mode="enforce"))
    report = run_replay(log, enforced)
    assert report.changes == (Change("login", "allow", "challenge", 1, ("r4",)),)
    assert report.rules == {"bot-ua": RuleHits(enforce_after=1, shadow_before=1)}


def test_samples_are_the_first_request_ids_of_a_cell_in_time_order(
    scripted: tuple[Path, RuleSet], tmp_path: Path,
) -> None:
    log, _ = scripted
    stricter = write_rules(tmp_path / "stricter", rules_text(busy_over=1))
    assert run_replay(log, stricter, samples=1).changes[0].samples == ("r2",)
    assert run_replay(log, stricter, samples=0).changes[0].samples == ()


def test_lines_out_of_time_order_are_replayed_in_time_order(
    scripted: tuple[Path, RuleSet], tmp_path: Path,
) -> None:
    log, ruleset = scripted
    shuffled = tmp_path / "shuffled.log"
    shuffled.write_text("".join(reversed(log.read_text().splitlines(True))))
    assert run_replay(shuffled, ruleset).changes == ()


# --- damaged logs --------------------------------------------------------------------------


def test_malformed_lines_are_counted_and_the_first_is_located(
    scripted: tuple[Path, RuleSet], tmp_path: Path,
) -> None:
    log, ruleset = scripted
    lines = log.read_text().splitlines(True)
    damaged = tmp_path / "damaged.log"
    damaged.write_text("".join([*lines[:2], "{truncated\n", "\n", '{"type": "metric"}\n',
                                *lines[2:], "[1, 2]\n"]))
    report = run_replay(damaged, ruleset)
    assert (report.skipped, report.first_skipped) == (3, (3, "not JSON"))
    assert (report.decisions, report.changes) == (6, ())
    assert "skipped 3 malformed lines, first at line 3 (not JSON)" in str(report).splitlines()


def test_label_lines_are_passed_over_as_they_count_nothing(
    scripted: tuple[Path, RuleSet], tmp_path: Path,
) -> None:
    log, ruleset = scripted
    labelled = tmp_path / "labelled.log"
    label = {"type": "label", "request_id": "r3", "time": 3.0, "event": "login",
             "label": "bot", "source": "unsolved-challenge"}
    labelled.write_text(log.read_text() + json.dumps(label) + "\n")
    report = run_replay(labelled, ruleset)
    assert (report.skipped, report.changes) == (0, ())
    assert report.decisions == run_replay(log, ruleset).decisions


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("not json at all", "not JSON"),
        ('"a string"', "not a JSON object"),
        ('{"type": "metric"}', "type `metric` is not decision, feedback or label"),
        ('{"type": "feedback", "request_id": "r1", "time": 1, "outcome": "won"}',
         "unknown outcome `won`"),
        ('{"type": "feedback", "request_id": "r1", "time": "noon", "outcome": "fraud"}',
         "`time` is not a number of seconds"),
        ('{"type": "decision", "request_id": "r1", "time": 1, "event": "checkin"}',
         "unknown event `checkin`"),
        ('{"type": "decision", "request_id": "r1", "time": 1, "event": "login", '
         '"decision": "deny"}', "unknown decision `deny`"),
        ('{"type": "decision", "request_id": "r1", "time": 1, "event": "login", '
         '"decision": "allow", "facts": []}', "`facts` is not an object"),
        ('{"type": "decision", "request_id": "", "time": 1, "event": "login", '
         '"decision": "allow", "facts": {}, "reasons": [], "shadow": []}',
         "`request_id` is not a non-empty string"),
        ('{"type": "decision", "request_id": "r1", "time": 1, "event": "login", '
         '"decision": "allow", "facts": {}, "reasons": "busy-ip", "shadow": []}',
         "`reasons` is not a list of rule ids"),
    ],
)
def test_each_kind_of_malformed_line_is_skipped_with_its_reason(
    tmp_path: Path, line: str, reason: str,
) -> None:
    log = tmp_path / "one.log"
    log.write_text(line + "\n")
    report = run_replay(log, write_rules(tmp_path / "rules", rules_text()))
    assert (report.skipped, report.first_skipped, report.decisions) == (1, (1, reason), 0)


def test_feedback_for_a_request_missing_from_the_log_is_reported(
    scripted: tuple[Path, RuleSet], tmp_path: Path,
) -> None:
    log, ruleset = scripted
    partial = tmp_path / "partial.log"
    partial.write_text("".join(line for line in log.read_text().splitlines(True)
                               if json.loads(line)["request_id"] != "r1"
                               or json.loads(line)["type"] == "feedback"))
    report = run_replay(partial, ruleset)
    assert report.orphan_feedback == 1
    # Without r1, alice has one failure and address A one login fewer, so neither
    # alice's third login nor carol's is challenged any more.
    assert report.changes == (Change("login", "challenge", "allow", 2, ("r3", "r5")),)
    assert report.rules == {"account-under-attack": RuleHits(enforce_before=1),
                            "busy-ip": RuleHits(enforce_before=1)}


# --- the command line --------------------------------------------------------------------


def test_cli_prints_the_table_the_changed_cells_and_the_changed_rules(
    scripted: tuple[Path, RuleSet], tmp_path: Path,
) -> None:
    log, ruleset = scripted
    stricter = write_rules(tmp_path / "stricter", rules_text(busy_over=1))
    result = riskgate_cli("replay", str(log), "--rules", str(tmp_path / "stricter"))
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == f"""\
replayed 6 decisions and 3 feedback lines from {log}
rules: recorded under {ruleset.version} (6); replayed under {stricter.version}

decisions (recorded → replayed)
  event            allow        challenge            block
  login            4 → 2            2 → 4            0 → 0

changed decisions
  login: allow → challenge: 2 requests, e.g. r2, r6

  rules whose hits changed          enforce           shadow
  busy-ip                             1 → 4            0 → 0
"""


def test_cli_json_output_is_the_report_as_json(
    scripted: tuple[Path, RuleSet], tmp_path: Path,
) -> None:
    log, _ = scripted
    stricter = write_rules(tmp_path / "stricter", rules_text(busy_over=1))
    result = riskgate_cli("replay", str(log), "--rules", str(tmp_path / "stricter"), "--json",
                          "--samples", "1")
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout)
    assert output == run_replay(log, stricter, samples=1).to_json()
    assert output["changes"] == [{"event": "login", "before": "allow", "after": "challenge",
                                  "count": 2, "samples": ["r2"]}]
    assert output["rules"] == [{"rule": "busy-ip", "enforce": {"before": 1, "after": 4},
                                "shadow": {"before": 0, "after": 0}}]


def test_cli_exits_2_naming_a_log_it_cannot_read(tmp_path: Path) -> None:
    write_rules(tmp_path / "rules", rules_text())
    missing = tmp_path / "missing.log"
    result = riskgate_cli("replay", str(missing), "--rules", str(tmp_path / "rules"))
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (f"riskgate: {missing}: cannot read the decision log: "
                             "No such file or directory\n")


def test_cli_exits_2_on_a_bad_candidate_rule_set(
    scripted: tuple[Path, RuleSet], tmp_path: Path,
) -> None:
    log, _ = scripted
    missing = tmp_path / "no-rules"
    result = riskgate_cli("replay", str(log), "--rules", str(missing))
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == f"riskgate: {missing}: no such rule file or folder\n"
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "rules.yaml").write_text(
        "rules:\n  - {id: r1, events: [login], when: counters.nope > 1, score: 5}\n")
    result = riskgate_cli("replay", str(log), "--rules", str(tmp_path / "bad"))
    assert result.returncode == 2
    assert result.stderr.startswith(f"riskgate: {tmp_path / 'bad' / 'rules.yaml'}:2:")
    assert "unknown counter `nope`" in result.stderr


# --- real traffic ----------------------------------------------------------------------------

#: Combined log format; every request becomes a login from the line's address and UA.
APACHE_LINE = re.compile(r'(\S+) \S+ \S+ \[([^\]]+)\] "(?:GET|POST) [^"]*" \d+ \S+ "[^"]*" '
                         r'"([^"]*)"')
APACHE_SLICE = 4000  # lines: several thousand decisions, about a second each way
#: The candidate's extra rule: Googlebot's network (already challenged as a bot UA by
#: the shipped pack) and a browsing network (allowed), so both outcomes are exercised.
EXTRA_NETWORKS = ("66.249.73.0/24", "75.97.9.0/24")


def apache_events() -> list[RiskEvent]:
    events = []
    with APACHE_LOG.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if number > APACHE_SLICE:
                break
            if (m := APACHE_LINE.match(line)) is not None:
                at = datetime.strptime(m[2], "%d/%b/%Y:%H:%M:%S %z").timestamp()
                events.append(RiskEvent(f"apache-{number}", "login", parse_ip(m[1]), at,
                                        user_agent=m[3] if m[3] not in ("", "-") else None))
    return events


def test_replay_of_real_traffic_matches_the_recording_and_isolates_one_new_rule(
    tmp_path: Path,
) -> None:
    shipped = load_ruleset(REPO / "rules")
    events = apache_events()
    log = tmp_path / "apache-decisions.log"
    recorded = {d.request_id: d.verdict.decision for d in record(log, shipped, tuple(events))}
    assert len(recorded) > 3000

    same = run_replay(log, shipped)
    assert (same.changes, same.rules, same.skipped) == ((), {}, 0)
    by_decision = Counter(recorded.values())
    assert same.table == {"login": {a: (by_decision[a], by_decision[a])
                                    for a in ("allow", "challenge", "block")}}

    shutil.copytree(REPO / "rules", tmp_path / "candidate")
    (tmp_path / "candidate" / "extra.yaml").write_text(
        "rules:\n  - id: extra-networks\n    events: [login]\n    when: "
        + " or ".join(f'cidr(ip, "{n}")' for n in EXTRA_NETWORKS)
        + "\n    action: challenge\n")
    candidate = load_ruleset(tmp_path / "candidate")
    report = run_replay(log, candidate)

    networks = [ipaddress.ip_network(n) for n in EXTRA_NETWORKS]
    hit = {e.request_id for e in events if any(e.ip in n for n in networks)}
    flipped = {r for r in hit if recorded[r] == "allow"}
    assert flipped and hit - flipped  # both kinds occur, so the check below means something
    # The new rule is the only difference: it hits exactly the requests in its networks,
    # and of those only the allowed ones change, each to a challenge.
    assert report.rules == {"extra-networks": RuleHits(enforce_after=len(hit))}
    (change,) = report.changes
    assert (change.event, change.before, change.after, change.count) == (
        "login", "allow", "challenge", len(flipped))
    assert set(change.samples) <= flipped and len(change.samples) == 3
    assert report.table["login"]["allow"] == (by_decision["allow"],
                                              by_decision["allow"] - len(flipped))
    assert report.table["login"]["challenge"] == (by_decision["challenge"],
                                                  by_decision["challenge"] + len(flipped))


def test_decisions_a_runtime_list_entry_made_are_left_out_of_the_comparison(
    scripted: tuple[Path, RuleSet], tmp_path: Path,
) -> None:
    log, ruleset = scripted
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    first = next(line for line in lines if line["type"] == "decision")
    # As if an operator had blocked this client live: recorded as a block by the entry.
    first.update(decision="block", reasons=["runtime-block:0f3a"])
    listed = tmp_path / "listed.log"
    listed.write_text("".join(json.dumps(line) + "\n" for line in lines))
    report = run_replay(listed, ruleset)
    assert (report.runtime_listed, report.changes) == (1, ())
    assert "runtime-block:0f3a" not in report.rules
    assert ("1 recorded decision involved runtime list entries, which replay does not apply; "
            "left out of the comparison") in str(report).splitlines()
