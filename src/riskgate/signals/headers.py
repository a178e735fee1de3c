"""Header consistency: does the rest of the request agree with the browser the UA claims?

A script that copies a browser's User-Agent rarely copies the headers that browser
always sends, or keeps its client hints in step with the UA. The thresholds below are
the versions from which each engine sends a header on every request:
``sec-fetch-*`` from Chrome 80, Firefox 90 and Safari 16.4; ``sec-ch-ua`` from
Chromium 90 on secure origins (riskgate protects HTTPS flows, so it is expected).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from riskgate.signals.useragent import UAInfo

_SEC_FETCH: Final = ("sec-fetch-site", "sec-fetch-mode", "sec-fetch-dest")
_ALWAYS: Final = ("accept-language", "accept-encoding")


@dataclass(frozen=True, slots=True)
class _Engine:
    sec_fetch_from: int  # first major version that always sends sec-fetch-*
    client_hints_from: int | None  # first major version that always sends sec-ch-ua


# ua-parser family -> what that browser sends. iOS browsers (CriOS, FxiOS) are WebKit
# with their own versions, so they are left out rather than guessed.
_ENGINES: Final[dict[str, _Engine]] = {
    "Chrome": _Engine(80, 90),
    "Chrome Mobile": _Engine(80, 90),
    "Edge": _Engine(80, 90),
    "Edge Mobile": _Engine(80, 90),
    "Firefox": _Engine(90, None),
    "Firefox Mobile": _Engine(90, None),
    "Safari": _Engine(16, None),
    "Mobile Safari": _Engine(16, None),
}
_CHROMIUM_MAJOR: Final = re.compile(r"Chrome/(\d+)")
_BRAND: Final = re.compile(r'"([^"]*)"\s*;\s*v\s*=\s*"(\d+)')
_CHROMIUM_BRANDS: Final = ("Chromium", "Google Chrome", "Microsoft Edge", "HeadlessChrome")
# sec-ch-ua-platform -> UA OS families it may describe. Android's "desktop site"
# mode sends a Linux UA with the Android platform hint, so Linux is allowed there.
_PLATFORMS: Final[dict[str, frozenset[str]]] = {
    "windows": frozenset({"Windows"}),
    "macos": frozenset({"Mac OS X"}),
    "android": frozenset({"Android", "Linux"}),
    "linux": frozenset({"Linux", "Ubuntu", "Fedora"}),
    "chrome os": frozenset({"Chrome OS"}),
    "chromium os": frozenset({"Chrome OS"}),
}


@dataclass(frozen=True, slots=True)
class HeaderFacts:
    """Header consistency verdicts; None where the UA gives nothing to compare with."""

    missing_browser_headers: bool | None
    #: Not one of the expected headers beyond Accept-Encoding (which HTTP libraries send).
    browser_headers_absent: bool | None
    client_hints_mismatch: bool | None
    headless_hint: bool


def _safari_version(ua: str, info: UAInfo) -> int | None:
    # ua-parser reads Safari's Version/16.4 as major 16; 16.4 is where sec-fetch began.
    match = re.search(r"Version/(\d+)\.(\d+)", ua)
    if match is None:
        return info.browser_major
    major, minor = int(match[1]), int(match[2])
    return major if (major, minor) >= (16, 4) else min(major, 15)


def check_headers(user_agent: str, info: UAInfo, headers: Mapping[str, str]) -> HeaderFacts:
    """Compare lower-case-named ``headers`` with what the UA's browser always sends.

    >>> from riskgate.signals.useragent import UAClassifier
    >>> ua = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:109.0) Gecko/20100101 Firefox/117.0"
    >>> check_headers(ua, UAClassifier()(ua), {"accept": "*/*"}).missing_browser_headers
    True
    """
    engine = _ENGINES.get(info.browser or "") if not info.is_bot else None
    missing: bool | None = None
    absent: bool | None = None
    if engine is not None and info.browser_major is not None:
        version = (
            _safari_version(user_agent, info) if "Safari" in (info.browser or "")
            else info.browser_major
        )
        expected = list(_ALWAYS)
        if version is not None and version >= engine.sec_fetch_from:
            expected.extend(_SEC_FETCH)
        chromium = _chromium_major(user_agent)
        if engine.client_hints_from is not None and chromium is not None and (
            chromium >= engine.client_hints_from
        ):
            expected.append("sec-ch-ua")
        missing = any(name not in headers for name in expected)
        absent = not any(name in headers for name in expected if name != "accept-encoding")
    brands = headers.get("sec-ch-ua")
    return HeaderFacts(
        missing_browser_headers=missing,
        browser_headers_absent=absent,
        client_hints_mismatch=_hints_mismatch(user_agent, info, brands, headers),
        headless_hint=brands is not None and "headless" in brands.lower(),
    )


def _chromium_major(user_agent: str) -> int | None:
    match = _CHROMIUM_MAJOR.search(user_agent)
    return int(match[1]) if match else None


def _hints_mismatch(
    user_agent: str, info: UAInfo, brands: str | None, headers: Mapping[str, str]
) -> bool | None:
    platform = headers.get("sec-ch-ua-platform")
    if brands is None and platform is None:
        return None
    chromium = _chromium_major(user_agent)
    if brands is not None:
        versions = {name: int(v) for name, v in _BRAND.findall(brands)}
        claimed = [versions[b] for b in _CHROMIUM_BRANDS if b in versions]
        # Only Chromium sends client hints: hints next to a Firefox or Safari UA, or
        # a brand version that is not the UA's Chrome version, mean one was forged.
        if chromium is None or not claimed or any(v != chromium for v in claimed):
            return True
    if platform is not None:
        allowed = _PLATFORMS.get(platform.strip().strip('"').lower())
        if allowed is not None and info.os is not None and info.os not in allowed:
            return True
    return False
