"""Header consistency on real captured browser requests and their mutations."""

from __future__ import annotations

import ipaddress
import json
from typing import Any

import pytest

from riskgate.event.types import RiskEvent
from riskgate.signals.extractor import SignalExtractor
from riskgate.signals.keys import Keyer
from support import SHARED_DATA

CAPTURES: list[dict[str, Any]] = json.loads(
    (SHARED_DATA / "headers" / "browser_headers.json")
    .read_text(encoding="utf-8")
)
CHROMIUM = [c for c in CAPTURES if c["browser"]["name"] in ("chrome", "edge")]
EXTRACTOR = SignalExtractor(Keyer(b"k"), tls_fingerprint_header="X-JA4")


def by_name(captures: list[dict[str, Any]]) -> Any:
    return pytest.mark.parametrize("capture", captures, ids=[c["name"] for c in captures])


def facts(headers: dict[str, str]) -> dict[str, Any]:
    return EXTRACTOR.facts(
        RiskEvent("r", "login", ipaddress.ip_address("192.0.2.1"), 0.0,
                  user_agent=headers.get("user-agent"), headers=headers)
    )


def headers_of(capture: dict[str, Any]) -> dict[str, str]:
    return {name.lower(): value for name, value in capture["headers"]}


@by_name(CAPTURES)
def test_real_browser_requests_are_consistent(capture: dict[str, Any]) -> None:
    f = facts(headers_of(capture))
    assert f["device.is_bot_ua"] is False
    assert f["device.missing_browser_headers"] is False
    assert f["device.client_hints_mismatch"] in (False, None)
    assert f["device.header_count"] == len(capture["headers"])


@by_name(CAPTURES)
@pytest.mark.parametrize("dropped", ["accept-language", "accept-encoding"])
def test_browser_without_language_or_encoding_is_missing_headers(
    capture: dict[str, Any], dropped: str
) -> None:
    headers = headers_of(capture)
    del headers[dropped]
    assert facts(headers)["device.missing_browser_headers"] is True


@by_name([c for c in CAPTURES if any(n == "sec-fetch-mode" for n, _ in c["headers"])])
def test_browser_that_sends_sec_fetch_is_missing_headers_without_it(
    capture: dict[str, Any],
) -> None:
    headers = {k: v for k, v in headers_of(capture).items() if not k.startswith("sec-fetch-")}
    assert facts(headers)["device.missing_browser_headers"] is True


@by_name(CAPTURES)
def test_curl_headers_with_a_browser_user_agent_are_missing_headers(
    capture: dict[str, Any],
) -> None:
    curl = {"user-agent": headers_of(capture)["user-agent"], "accept": "*/*"}
    assert facts(curl)["device.missing_browser_headers"] is True


@by_name(CHROMIUM)
def test_client_hint_version_other_than_the_ua_is_a_mismatch(capture: dict[str, Any]) -> None:
    headers = headers_of(capture)
    headers["sec-ch-ua"] = headers["sec-ch-ua"].replace('v="9', 'v="8').replace('v="1', 'v="8')
    assert facts(headers)["device.client_hints_mismatch"] is True


@by_name(CHROMIUM)
def test_client_hint_platform_other_than_the_ua_is_a_mismatch(capture: dict[str, Any]) -> None:
    headers = headers_of(capture)
    wrong = '"macOS"' if "Windows" in headers["user-agent"] else '"Windows"'
    headers["sec-ch-ua-platform"] = wrong
    assert facts(headers)["device.client_hints_mismatch"] is True


@by_name([c for c in CAPTURES if c["browser"]["name"] in ("firefox", "safari")])
def test_client_hints_next_to_a_non_chromium_ua_are_a_mismatch(capture: dict[str, Any]) -> None:
    headers = headers_of(capture)
    headers["sec-ch-ua"] = CHROMIUM[-1]["headers"][0][1]
    assert facts(headers)["device.client_hints_mismatch"] is True


def test_headless_brand_in_client_hints_reveals_automation() -> None:
    headers = headers_of(CHROMIUM[0])
    headers["sec-ch-ua"] = headers["sec-ch-ua"].replace("Google Chrome", "HeadlessChrome")
    f = facts(headers)
    assert (f["device.automation"], f["device.is_headless"], f["device.is_bot_ua"]) == (
        "headless-chrome", True, True,
    )


def test_tls_fingerprint_comes_from_the_configured_header() -> None:
    headers = headers_of(CAPTURES[0]) | {"x-ja4": "t13d1516h2_8daaf6152771_02713d6af862"}
    assert facts(headers)["device.tls_fingerprint"] == "t13d1516h2_8daaf6152771_02713d6af862"
    assert SignalExtractor(Keyer(b"k")).facts(
        RiskEvent("r", "login", ipaddress.ip_address("192.0.2.1"), 0.0, headers=headers)
    )["device.tls_fingerprint"] is None


def test_bot_user_agents_are_not_judged_on_browser_headers() -> None:
    f = facts({"user-agent": "python-requests/2.31.0", "accept": "*/*"})
    assert f["device.is_bot_ua"] is True and f["device.missing_browser_headers"] is None
