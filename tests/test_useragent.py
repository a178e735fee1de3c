"""Bot and device classification of User-Agent strings, measured on labelled real UAs."""

from __future__ import annotations

import csv
import ipaddress
from collections.abc import Callable

import pytest
import yaml

from riskgate.event.types import RiskEvent
from riskgate.signals.extractor import SignalExtractor
from riskgate.signals.keys import Keyer
from riskgate.signals.useragent import UAClassifier
from support import SHARED_DATA

UA_DATA = SHARED_DATA / "useragents"


@pytest.fixture(scope="module")
def classify() -> UAClassifier:
    return UAClassifier()


def labelled(label: str, kind: str | None = None) -> list[str]:
    with (UA_DATA / "labelled_user_agents.csv").open(newline="", encoding="utf-8") as f:
        return [
            row["user_agent"] for row in csv.DictReader(f)
            if row["label"] == label and (kind is None or row["kind"] == kind)
        ]


def test_bot_recall_and_browser_false_positives_meet_goals(
    classify: UAClassifier, record_report: Callable[[str], None]
) -> None:
    bots, humans = labelled("bot"), labelled("human")
    missed = [ua for ua in bots if not classify(ua).is_bot]
    flagged = [ua for ua in humans if classify(ua).is_bot]
    recall = 1 - len(missed) / len(bots)
    fp_rate = len(flagged) / len(humans)
    report = (
        f"bot recall {recall:.2%} ({len(bots) - len(missed)}/{len(bots)}), "
        f"browser false positives {fp_rate:.2%} ({len(flagged)}/{len(humans)})"
    )
    record_report(f"user agents (shared/data labelled_user_agents.csv): {report}")
    assert recall >= 0.98 and fp_rate <= 0.005, report


def test_no_isbot_browser_fixture_is_flagged(classify: UAClassifier) -> None:
    groups = yaml.safe_load((UA_DATA / "isbot" / "browsers.yml").read_text(encoding="utf-8"))
    # isbot files two groups of real bots under browsers; they are bots here too.
    browsers = [ua for name, uas in groups.items() if "Insignificat bots" not in name
                for ua in uas]
    flagged = [ua for ua in browsers if classify(ua).is_bot]
    assert flagged == [], f"{len(flagged)} of {len(browsers)} browsers flagged"


@pytest.mark.parametrize("kind", ["browser_automation", "http_library"])
def test_every_automation_tool_and_http_library_is_a_bot(
    classify: UAClassifier, kind: str
) -> None:
    uas = labelled("bot", kind)
    missed = [ua for ua in uas if not classify(ua).is_bot]
    assert len(missed) <= len(uas) * 0.03, missed


@pytest.mark.parametrize(
    ("ua", "tool", "headless"),
    [
        ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
         "HeadlessChrome/119.0.0.0 Safari/537.36", "headless-chrome", True),
        ("Mozilla/5.0 (Unknown; Linux x86_64) AppleWebKit/538.1 (KHTML, like Gecko) "
         "PhantomJS/2.1.1 Safari/538.1", "phantomjs", True),
        ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
         "Cypress/13.6.1 Chrome/114.0.5735.289 Electron/25.8.4 Safari/537.36", "cypress", False),
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
         "Chrome/120.0.0.0 Safari/537.36", None, False),
    ],
)
def test_automation_tools_are_named(
    classify: UAClassifier, ua: str, tool: str | None, headless: bool
) -> None:
    info = classify(ua)
    assert (info.automation, info.is_headless, info.is_bot) == (tool, headless, tool is not None)


def test_verified_search_engine_crawlers_are_still_bots(classify: UAClassifier) -> None:
    googlebot = labelled("bot", "search_engine")
    assert all(classify(ua).is_bot for ua in googlebot if "Googlebot" in ua)


@pytest.mark.parametrize(
    ("ua", "device_type", "browser", "major"),
    [
        ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15 "
         "(KHTML, like Gecko) Version/17.4.1 Mobile/15E148 Safari/604.1",
         "mobile", "Mobile Safari", 17),
        ("Mozilla/5.0 (iPad; CPU OS 16_6_1 like Mac OS X) AppleWebKit/605.1.15 "
         "(KHTML, like Gecko) Version/16.6 Mobile/15E148 Safari/604.1",
         "tablet", "Mobile Safari", 16),
        ("Mozilla/5.0 (Linux; Android 12; Pixel 6) AppleWebKit/537.36 (KHTML, like Gecko) "
         "Chrome/99.0.4844.58 Mobile Safari/537.36", "mobile", "Chrome Mobile", 99),
        ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
         "(KHTML, like Gecko) Version/15.5 Safari/605.1.15", "desktop", "Safari", 15),
        ("curl/8.4.0", "bot", "curl", 8),
    ],
)
def test_device_type_browser_and_major(
    classify: UAClassifier, ua: str, device_type: str, browser: str, major: int
) -> None:
    info = classify(ua)
    assert (info.device_type, info.browser, info.browser_major) == (device_type, browser, major)


def test_each_distinct_string_is_parsed_once(classify: UAClassifier) -> None:
    ua = "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0 test-cache"
    before = classify.cache_info()
    classify(ua)
    classify(ua)
    after = classify.cache_info()
    assert (after.misses - before.misses, after.hits - before.hits) == (1, 1)


def test_cache_is_bounded() -> None:
    small = UAClassifier(cache_size=2)
    for i in range(5):
        small(f"agent-{i}/1.0")
    assert small.cache_info().currsize == 2


@pytest.mark.parametrize("ua", [None, "", "   "])
def test_missing_user_agent_is_flagged_and_other_device_facts_unknown(ua: str | None) -> None:
    facts = SignalExtractor(Keyer(b"k")).facts(
        RiskEvent("r", "booking", ipaddress.ip_address("192.0.2.1"), 0.0, user_agent=ua)
    )
    assert facts["device.ua_missing"] is True
    assert facts["device.is_bot_ua"] is None and facts["device.browser"] is None
