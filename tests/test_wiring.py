"""Rules that read what the deployment does not supply are named (issue 9): a source no one
configured (`ip.country` without a City database), or an attribute compared with a number
where a route delivers it as text. ``riskgate rules check --config`` and ``/readyz`` say so."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.testclient import TestClient

from riskgate.cli import main
from riskgate.config import Config
from riskgate.http.app import create_app
from riskgate.rules.wiring import NEEDS_NOTHING, SOURCE_NEEDS
from riskgate.signals.catalog import CATALOG
from support import SHARED_DATA, write_rules

SECRET = "wiring-test-secret-0123456789"
CITY_DB = SHARED_DATA / "maxmind" / "test-data" / "GeoIP2-City-Test.mmdb"
GEO_RULES = """\
rules:
  - id: sanctioned-country
    when: ip.country in ["KP", "IR"]
    action: block
"""
COUNTRY_WARNING = (
    "rule sanctioned-country: reads `ip.country`, which comes from MaxMind City/Country; the "
    "config sets no `geoip.city`, so it is always null and this rule never matches on it; add "
    "the database under `geoip:` (docs/geoip.md)")
SEATS_RULES = """\
rules:
  - id: party-too-large
    events: [booking]
    when: attributes.seats > 9
    score: 50
"""


def rules_check(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str]]:
    code = main(["rules", "check", *args])
    return code, capsys.readouterr().err.splitlines()


def config_file(tmp_path: Path, text: str = "") -> Path:
    path = tmp_path / "riskgate.yaml"
    path.write_text(f"secret: {SECRET}\n{text}")
    return path


def test_every_signal_source_in_the_catalog_is_known_to_need_a_key_or_nothing() -> None:
    sources = {spec.source for spec in CATALOG.values()}
    assert sources - set(SOURCE_NEEDS) - NEEDS_NOTHING == set()


def test_rules_check_with_a_config_warns_about_a_source_it_does_not_configure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = write_rules(tmp_path, GEO_RULES)
    code, err = rules_check(capsys, str(rules), "--config", str(config_file(tmp_path)))
    assert (code, err) == (0, [f"riskgate: {rules / 'rules.yaml'}:2: warning: {COUNTRY_WARNING}"])


def test_rules_check_says_nothing_about_sources_without_a_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert rules_check(capsys, str(write_rules(tmp_path, GEO_RULES))) == (0, [])


def test_a_configured_database_silences_the_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_file(tmp_path, f"geoip: {{city: {CITY_DB}}}\n")
    assert rules_check(capsys, str(write_rules(tmp_path, GEO_RULES)), "--config",
                       str(config)) == (0, [])


@pytest.mark.parametrize(
    ("seats", "warning"),
    [
        ("{source: body:seats, type: number}", None),
        ("{source: body:seats, type: string}",
         "compares `attributes.seats` with a number, but routes[0] (POST /api/bookings) "
         "declares it a string, so the comparison is never true there; declare `seats: "
         "{source: body:seats, type: number}` in the route or compare with a quoted string"),
        ("body:seats",
         "compares `attributes.seats` with a number, but routes[0] (POST /api/bookings) reads "
         "it from `body:seats` without a type: a form post sends it as text, which never "
         "compares with a number; declare `seats: {source: body:seats, type: number}` in the "
         "route"),
        ("header:X-Seats",
         "compares `attributes.seats` with a number, but routes[0] (POST /api/bookings) reads "
         "it from `header:x-seats` without a type: a header value is always text, which never "
         "compares with a number; declare `seats: {source: header:x-seats, type: number}` in "
         "the route"),
    ],
)
def test_rules_check_warns_where_a_route_delivers_a_compared_attribute_as_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], seats: str, warning: str | None
) -> None:
    rules = write_rules(tmp_path, SEATS_RULES)
    config = config_file(tmp_path, "routes:\n  - {path: /api/bookings, method: POST, "
                                   f"event: booking, attributes: {{seats: {seats}}}}}\n")
    code, err = rules_check(capsys, str(rules), "--config", str(config))
    expected = [] if warning is None else [
        f"riskgate: {rules / 'rules.yaml'}:2: warning: rule party-too-large: {warning}"]
    assert (code, err) == (0, expected)


def test_readyz_lists_the_warnings_of_the_serving_rule_set_until_a_reload_fixes_them(
    tmp_path: Path,
) -> None:
    rules = write_rules(tmp_path, GEO_RULES)
    token = "wiring-admin-token-0123456789"
    config = Config(secret=SECRET, rules=rules, decision_log=None, admin_tokens=(token,),
                    watch_rules=False)
    with TestClient(create_app(config)) as client:
        before = client.get("/readyz").json()
        (rules / "rules.yaml").write_text(SEATS_RULES)
        client.post("/admin/rules/reload", headers={"authorization": f"Bearer {token}"})
        after = client.get("/readyz").json()
    assert before["warnings"] == [f"{rules / 'rules.yaml'}:2: warning: {COUNTRY_WARNING}"]
    assert after["warnings"] == []
