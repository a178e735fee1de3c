"""The `when` language: what it means, what it refuses, and that it never escapes."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from riskgate.rules.language import Namespace, check, compile_rules
from riskgate.rules.members import CidrSet, DomainSet, PatternSet, ValueSet
from riskgate.signals.catalog import CATALOG

NS = Namespace.build(
    counters=["fails", "accounts"],
    lists={"bad_networks": CidrSet(["10.0.0.0/8", "2001:db8::/32"]),
           "disposable": DomainSet(["mailinator.com"]),
           "bots": PatternSet(["^curl/", "headless"]),
           "vip_devices": ValueSet(["d-1"])},
)


def run(source: str, facts: dict[str, Any] | None = None,
        counters: dict[str, Any] | None = None) -> tuple[bool, list[int]]:
    expr, problems = check(source, NS)
    assert problems == [], problems
    assert expr is not None
    errors: list[int] = []
    fn = compile_rules([(expr, "hit")], NS, errors.append)
    return fn(facts or {}, counters or {}) == ["hit"], errors


@pytest.mark.parametrize(
    ("source", "facts", "counters", "matched"),
    [
        ("counters.fails > 5", {}, {"fails": 6}, True),
        ("counters.fails > 5", {}, {"fails": 5}, False),
        ("1 < counters.fails <= 3", {}, {"fails": 3}, True),
        ("1 < counters.fails <= 3", {}, {"fails": 4}, False),
        ("counters.fails / counters.accounts > 0.5", {}, {"fails": 3, "accounts": 4}, True),
        ("counters.fails % 2 == 1 and counters.fails - 1 == 2", {}, {"fails": 3}, True),
        ("-counters.fails < 0", {}, {"fails": 3}, True),
        ("ip.country in ['RU', 'CN']", {"ip.country": "CN"}, {}, True),
        ("ip.country not in ('RU', 'CN')", {"ip.country": "FR"}, {}, True),
        ("ip.asn in {1, -2}", {"ip.asn": -2}, {}, True),
        ("ip in lists.bad_networks", {"ip": "10.9.8.7"}, {}, True),
        ("ip in lists.bad_networks", {"ip": "2001:db8::1"}, {}, True),
        ("ip not in lists.bad_networks", {"ip": "192.0.2.1"}, {}, True),
        ("account.email_domain in lists.disposable", {"account.email_domain": "a.mailinator.com"},
         {}, True),
        ("device.user_agent in lists.bots", {"device.user_agent": "curl/8.1"}, {}, True),
        ("device.key in lists.vip_devices", {"device.key": "d-1"}, {}, True),
        ("matches(device.user_agent, '(?i)phantom')", {"device.user_agent": "PhantomJS"}, {}, True),
        ("startswith(device.user_agent, 'python')", {"device.user_agent": "python-x"}, {}, True),
        ("endswith(account.email_domain, '.ru')", {"account.email_domain": "mail.ru"}, {}, True),
        ("contains(device.user_agent, 'bot')", {"device.user_agent": "Googlebot"}, {}, True),
        ("contains(device.user_agent, attributes.needle)",
         {"device.user_agent": "xyz", "attributes.needle": "y"}, {}, True),
        ("lower(device.browser) == 'chrome'", {"device.browser": "Chrome"}, {}, True),
        ("len(attributes.promo_code) > 3", {"attributes.promo_code": "SPRING"}, {}, True),
        ("cidr(ip, '192.168.0.0/16', '10.0.0.0/8')", {"ip": "10.1.1.1"}, {}, True),
        ("cidr(ip, '192.168.0.0/16')", {"ip": "10.1.1.1"}, {}, False),
        ("min(counters.fails, counters.accounts) >= 2", {}, {"fails": 2, "accounts": 9}, True),
        ("max(counters.fails, 10) == 10", {}, {"fails": 2}, True),
        ("abs(counters.fails - 10) < 2", {}, {"fails": 9}, True),
        ("account.present and not challenge.passed",
         {"account.present": True, "challenge.passed": False}, {}, True),
        ("account.present == true", {"account.present": True}, {}, True),
        ("event == 'login' or event == 'booking'", {"event": "booking"}, {}, True),
        ("attributes.seats * 2 > 8", {"attributes.seats": 5}, {}, True),
        ("ip.country is None", {}, {}, True),
        ("ip.country is not None", {"ip.country": "FR"}, {}, True),
        ("model.bot_probability > 0.9 or model.anomaly > 0.5", {"model.anomaly": 0.7}, {}, True),
    ],
)
def test_expressions_mean_what_they_say(
    source: str, facts: dict[str, Any], counters: dict[str, Any], matched: bool
) -> None:
    assert run(source, facts, counters) == (matched, [])


@pytest.mark.parametrize(
    "source",
    [
        "counters.fails > 5",
        "counters.fails + 1 > 5",
        "ip.country == 'RU'",
        "ip.country != 'RU'",
        "ip.country not in ['RU']",
        "ip not in lists.bad_networks",
        "matches(device.user_agent, 'x')",
        "startswith(device.user_agent, 'x')",
        "lower(device.user_agent) == 'x'",
        "len(device.user_agent) > 1",
        "cidr(ip, '10.0.0.0/8')",
        "min(counters.fails, 3) < 5",
        "abs(model.anomaly) > 0",
        "-model.anomaly < 0",
    ],
)
def test_missing_values_make_conditions_false_without_raising(source: str) -> None:
    assert run(source) == (False, [])


@pytest.mark.parametrize(
    ("source", "facts", "counters"),
    [
        ("counters.fails / counters.accounts > 1", {}, {"fails": 1, "accounts": 0}),
        ("attributes.seats > 3", {"attributes.seats": "many"}, {}),
        ("ip.asn in [1, 2]", {"ip.asn": ["unhashable"]}, {}),
    ],
)
def test_a_rule_that_fails_at_run_time_does_not_match_and_is_reported(
    source: str, facts: dict[str, Any], counters: dict[str, Any]
) -> None:
    assert run(source, facts, counters) == (False, [0])


def test_values_of_the_wrong_type_never_do_arithmetic() -> None:
    # A string attribute times a number would build a huge string; it reads as missing.
    assert run("attributes.name * 100000000 > 1", {"attributes.name": "x"}) == (False, [])


def test_one_failing_rule_does_not_stop_the_others() -> None:
    broken, _ = check("counters.fails / counters.accounts > 1", NS)
    fine, _ = check("counters.fails > 0", NS)
    assert broken is not None and fine is not None
    errors: list[int] = []
    fn = compile_rules([(broken, "broken"), (fine, "fine")], NS, errors.append)
    assert fn({}, {"fails": 1, "accounts": 0}) == ["fine"]
    assert errors == [0]


ALLOWED = (
    "comparisons, and/or/not, + - * / %, `in`, and the functions matches, startswith, endswith, "
    "contains, lower, len, cidr, min, max, abs"
)


@pytest.mark.parametrize(
    ("source", "where", "message"),
    [
        ("ip.country > 5", (1, 0),
         "`ip.country > 5` compares a string with a number; `>` needs two numbers or two strings"),
        ("ip.version == '4'", (1, 0),
         "`ip.version` is a number and `'4'` is a string, so they are never equal; compare with "
         "a number such as 5"),
        ("ip.country in ['RU', 7]", (1, 0),
         "`ip.country` is a string and `7` is a number, so they are never equal; compare with a "
         "string such as \"RU\""),
        ("account.present > 0", (1, 0),
         "`account.present > 0` compares true/false with a number; `>` needs two numbers or two "
         "strings"),
        ("counters.fails + ip.country > 1", (1, 17),
         "`+` takes a number but `ip.country` is a string"),
        ("lower(counters.fails) == 'x'", (1, 6),
         "`lower()` takes a string but `counters.fails` is a number"),
        ("counters.fails", (1, 0),
         "`when` needs a condition but `counters.fails` is a number; compare it, e.g. "
         "`counters.fails > 0`"),
        ("ip.country and counters.fails > 1", (1, 0),
         "`and`/`or` needs a condition but `ip.country` is a string; compare it, e.g. "
         "`ip.country != \"\"`"),
        ("counters.fail > 3", (1, 0),
         "unknown counter `fail`; did you mean `fails`? known: accounts, fails"),
        ("device.is_bot > 3", (1, 0),
         "unknown signal `device.is_bot`; did you mean `device.is_bot_ua`? known: "
         + ", ".join(sorted(name for name in CATALOG if name.startswith("device.")))),
        ("acount.present", (1, 0),
         "unknown name `acount.present`; did you mean `account.present`? names start with: "
         "account, attributes, challenge, counters, device, event, ip, lists, model"),
        ("ip in lists.bad_network", (1, 6),
         "unknown list `bad_network`; did you mean `bad_networks`? known: bad_networks, bots, "
         "disposable, vip_devices"),
        ("lists.bots", (1, 0), "`lists.bots` can only be used after `in`, e.g. `ip in lists.bots`"),
        ("attributes.a.b == 1", (1, 0),
         "`attributes.a.b`: attributes are one level deep, e.g. `attributes.NAME`"),
        ("matches(device.user_agent, '([a-z]')", (1, 27),
         "bad regex '([a-z]': missing ): ([a-z]; RE2 syntax: "
         "https://github.com/google/re2/wiki/Syntax"),
        ("matches(device.user_agent, device.os)", (1, 27),
         "`matches()` takes the regex as a quoted string"),
        ("cidr(ip, '10.0.0.0/33')", (1, 9),
         "bad CIDR '10.0.0.0/33': '10.0.0.0/33' does not appear to be an IPv4 or IPv6 network"),
        ("cidr(ip, '10.0.0.1/8')", (1, 9), "bad CIDR '10.0.0.1/8': 10.0.0.1/8 has host bits set"),
        ("ip.country == None", (1, 14), "compare with None as `ip.country is None`"),
        ("ip.country is 'RU'", (1, 0), "`is` only tests for None (`x is None`); use `==`"),
        ("ip in 'abc'", (1, 6),
         "`in` takes a list such as `[\"RU\", \"CN\"]` or a declared list `lists.NAME`; for text "
         "inside text use `contains(s, \"part\")`"),
        ("ip.country in [device.os]", (1, 15),
         "`device.os`: a list after `in` holds literals only, e.g. `[\"RU\", \"CN\"]`"),
        ("counters.fails / 0 > 1", (1, 17), "`counters.fails / 0` divides by zero"),
        ("counters.fails ** 2 > 1", (1, 0),
         "`counters.fails ** 2`: this operator is not allowed; arithmetic is + - * / %"),
        ("len(ip, ip) > 1", (1, 0), "`len()` takes 1 arguments, got 2"),
        ("min(counters.fails) > 1", (1, 0), "`min()` takes 2 or more arguments, got 1"),
        ("lower(s=ip) == 'x'", (1, 0), "`lower()` takes plain arguments, no `name=` or `*`"),
        ("counters.fails > 1 and", (1, 22), "`when` is not a valid expression: invalid syntax"),
        ("counters.fails >> 1", (1, 0),
         "`counters.fails >> 1`: this operator is not allowed; arithmetic is + - * / %"),
        ("b'x' == ip", (1, 0), f"`b'x'` is not allowed; `when` allows {ALLOWED}"),
    ],
)
def test_mistakes_are_reported_with_their_place_and_the_fix(
    source: str, where: tuple[int, int], message: str
) -> None:
    expr, problems = check(source, NS)
    assert expr is None
    assert [((p.line, p.column), p.message) for p in problems] == [(where, message)]


def test_every_problem_of_an_expression_is_reported() -> None:
    _, problems = check("counters.fial > 1 and ip.countyr == 'RU' or matches(ip, '(')", NS)
    assert [(p.line, p.column) for p in problems] == [(1, 0), (1, 22), (1, 56)]


def test_columns_count_characters_not_bytes() -> None:
    _, problems = check("attributes.city == 'Zürich' and counters.nope > 1", NS)
    assert [(p.line, p.column) for p in problems] == [(1, 32)]


def test_lines_of_a_multi_line_expression_are_counted_from_one() -> None:
    _, problems = check("counters.fails > 1\nand ip.country > 5\n", NS)
    assert [(p.line, p.column) for p in problems] == [(2, 4)]


# --- the sandbox -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("ip.__class__ == 1", "`ip.__class__`: names starting with `_` are not allowed"),
        ("__builtins__", "`__builtins__`: names starting with `_` are not allowed"),
        ("().__class__.__bases__", "attribute access is only allowed on signal names such as "
                                   "`ip.prefix` or `counters.NAME`"),
        ("'x'.join(['a'])", "attribute access is only allowed on signal names such as "
                            "`ip.prefix` or `counters.NAME`"),
        ("__import__('os').system('id')", "attribute access is only allowed on signal names such "
                                          "as `ip.prefix` or `counters.NAME`"),
        ("__import__('os')", "unknown function `__import__`; allowed: abs, cidr, contains, "
                             "endswith, len, lower, matches, max, min, startswith"),
        ("eval('1')", "unknown function `eval`; allowed: abs, cidr, contains, endswith, len, "
                      "lower, matches, max, min, startswith"),
        ("open('/etc/passwd')", "unknown function `open`; allowed: abs, cidr, "
                                "contains, endswith, len, lower, matches, max, min, startswith"),
        ("ip.country()", "`ip.country` cannot be called; `when` can call only matches, startswith, "
                         "endswith, contains, lower, len, cidr, min, max, abs"),
        ("(lambda: 1)()", "`lambda` is not allowed"),
        ("lambda: 1", "`lambda` is not allowed"),
        ("[x for x in 'ab']", "comprehensions are not allowed"),
        ("min((x for x in 'ab'), 1) > 0", "comprehensions are not allowed"),
        ("{k: 1 for k in 'ab'}", "comprehensions are not allowed"),
        ("attributes['seats'] > 1", "subscripts (`x[...]`) are not allowed; name the value, e.g. "
                                    "`attributes.seats`"),
        ("f'{ip}' == 'x'", "f-strings are not allowed; use a plain string"),
        ("f'{eval(ip)}' == 'x'", "f-strings are not allowed; use a plain string"),
        ("(x := 1)", "`:=` is not allowed"),
        ("1 if ip else 2", "`... if ... else ...` is not allowed; combine conditions with and/or"),
        ("{'a': 1}", "dict literals are not allowed"),
        ("len(*ip) > 1", "`len()` takes plain arguments, no `name=` or `*`"),
    ],
)
def test_the_sandbox_refuses_everything_outside_the_whitelist(source: str, message: str) -> None:
    expr, problems = check(source, NS)
    assert expr is None
    assert message in [p.message for p in problems]


def test_generated_code_runs_without_builtins() -> None:
    expr, _ = check("counters.fails > 1", NS)
    assert expr is not None
    fn = compile_rules([(expr, "hit")], NS, print)
    assert fn.__globals__["__builtins__"] == {}


# --- properties ----------------------------------------------------------------------------------

ATOMS = st.sampled_from([
    "counters.fails", "counters.accounts", "model.anomaly", "ip.asn", "attributes.seats", "1",
    "0", "2.5", "-3", "ip.country", "device.user_agent", "'RU'", "''", "attributes.name",
    "account.present", "challenge.passed", "True", "ip", "lower(device.os)", "len(ip)",
])


@st.composite
def expressions(draw: st.DrawFn, depth: int = 0) -> str:
    if depth > 3 or draw(st.booleans()):
        return draw(ATOMS)
    left = draw(expressions(depth + 1))
    right = draw(expressions(depth + 1))
    op = draw(st.sampled_from(["and", "or", "+", "-", "*", "/", "%", "<", "==", "!=", ">=",
                               "in lists.bad_networks and", "not in ['a', 1] or"]))
    wrap = draw(st.sampled_from(["({})", "not ({})", "min({}, 1) > 0", "matches({}, 'a') or 1<2",
                                 "{}"]))
    return wrap.format(f"{left} {op} {right}")


FACT_VALUES = st.one_of(st.none(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                        st.text(max_size=8), st.booleans(), st.lists(st.integers(), max_size=2))


@settings(max_examples=300, deadline=None)
@given(expressions(), st.dictionaries(
    st.sampled_from(["ip.asn", "attributes.seats", "ip.country", "device.user_agent", "ip",
                     "attributes.name", "account.present", "model.anomaly", "device.os"]),
    FACT_VALUES), st.dictionaries(st.sampled_from(["fails", "accounts"]), FACT_VALUES))
def test_random_expressions_either_refuse_to_load_or_never_raise(
    source: str, facts: dict[str, Any], counters: dict[str, Any]
) -> None:
    expr, problems = check(source, NS)
    if expr is None:
        assert problems
        return
    errors: list[int] = []
    result = compile_rules([(expr, "hit")], NS, errors.append)(facts, counters)
    assert result in ([], ["hit"])


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz_.()[]{}'\" =<>+-*/%,:!@#0123456789",
               max_size=40))
def test_arbitrary_text_is_refused_or_compiled_never_crashes_the_loader(source: str) -> None:
    expr, problems = check(source, NS)
    assert (expr is None) == bool(problems)
    if expr is not None:
        compile_rules([(expr, "hit")], NS, print)({}, {})
