"""The signal catalog: every built-in fact a rule can read, its type, meaning, source and cost.

A leaf: the rule language imports it to check names without loading GeoIP or config.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Literal

SignalType = Literal["str", "int", "float", "bool"]


@dataclass(frozen=True, slots=True)
class SignalSpec:
    """What one signal means: its name in rules, type, meaning, where it comes from, cost."""

    name: str
    type: SignalType
    doc: str
    source: str
    cost: str = "negligible"


_GEO_COST: Final = "~1 µs per configured database (mmap, C extension)"
_UA_COST: Final = "~15 µs per new UA string, <1 µs cached"


def _catalog(specs: Iterable[SignalSpec]) -> dict[str, SignalSpec]:
    return {spec.name: spec for spec in specs}


CATALOG: Final[dict[str, SignalSpec]] = _catalog(
    [
        SignalSpec("event", "str", "The protected flow: registration, login, promotion, booking.",
                   "request"),
        SignalSpec("ip", "str", "The client IP address, as text.", "request"),
        SignalSpec("ip.version", "int", "4 or 6.", "request"),
        SignalSpec("ip.prefix", "str", "The client's network: /24 for IPv4, /48 for IPv6.",
                   "request"),
        SignalSpec("account.present", "bool", "The request names an account.", "request"),
        SignalSpec("account.key", "str", "The account id keyed with the HMAC secret.", "request"),
        SignalSpec("account.email_domain", "str",
                   "Lower-case domain of the email (attribute `email`, or an account that is one).",
                   "request"),
        SignalSpec("device.present", "bool", "The request carries a device id.", "request"),
        SignalSpec("device.key", "str", "The device id keyed with the HMAC secret.", "request"),
        SignalSpec("device.user_agent", "str", "The User-Agent header, as sent.", "request"),
        SignalSpec("device.header_count", "int", "How many request headers the client sent.",
                   "request"),
        SignalSpec("challenge.passed", "bool",
                   "The client holds a valid proof-of-work pass bound to it.", "pass cookie"),
        # IP intelligence (geoip.py). None when no configured database could answer.
        SignalSpec("ip.network", "str",
                   "The network the database stores the address in (City first, then ASN, "
                   "ISP, Anonymous-IP, Connection-Type).", "MaxMind", _GEO_COST),
        SignalSpec("ip.country", "str", "ISO country code where the address is used.",
                   "MaxMind City/Country", _GEO_COST),
        SignalSpec("ip.registered_country", "str",
                   "ISO country code where the network is registered.",
                   "MaxMind City/Country", _GEO_COST),
        SignalSpec("ip.city", "str", "City name (English).", "MaxMind City", _GEO_COST),
        SignalSpec("ip.lat", "float", "Approximate latitude.", "MaxMind City", _GEO_COST),
        SignalSpec("ip.lon", "float", "Approximate longitude.", "MaxMind City", _GEO_COST),
        SignalSpec("ip.asn", "int", "Autonomous system number.", "MaxMind ASN or ISP",
                   _GEO_COST),
        SignalSpec("ip.asn_org", "str", "Organisation of the autonomous system.",
                   "MaxMind ASN or ISP", _GEO_COST),
        SignalSpec("ip.isp", "str", "Internet service provider name.", "MaxMind ISP",
                   _GEO_COST),
        SignalSpec("ip.is_anonymous", "bool", "Any anonymiser: VPN, proxy, Tor, hosting.",
                   "MaxMind Anonymous-IP", _GEO_COST),
        SignalSpec("ip.is_vpn", "bool", "A commercial VPN exit.", "MaxMind Anonymous-IP",
                   _GEO_COST),
        SignalSpec("ip.is_proxy", "bool", "A public proxy.", "MaxMind Anonymous-IP",
                   _GEO_COST),
        SignalSpec("ip.is_tor", "bool", "A Tor exit node.", "MaxMind Anonymous-IP", _GEO_COST),
        SignalSpec("ip.is_hosting", "bool", "A hosting or cloud provider network.",
                   "MaxMind Anonymous-IP", _GEO_COST),
        SignalSpec("ip.is_residential_proxy", "bool", "A residential proxy exit.",
                   "MaxMind Anonymous-IP", _GEO_COST),
        SignalSpec("ip.datacenter", "bool",
                   "Hosting flag, or the address/ASN is on a datacenter list (the "
                   "configured ones, else the bundled ASN list).",
                   "MaxMind Anonymous-IP + datacenter lists", "~1 µs (binary search)"),
        SignalSpec("ip.connection_type", "str",
                   "Cable/DSL, Cellular, Corporate, Satellite.", "MaxMind Connection-Type",
                   _GEO_COST),
        # Device (useragent.py, headers.py).
        SignalSpec("device.ua_missing", "bool", "No or an empty User-Agent header.", "request"),
        SignalSpec("device.browser", "str", "Browser family, e.g. Chrome, Mobile Safari.",
                   "ua-parser", _UA_COST),
        SignalSpec("device.browser_major", "int", "Browser major version.", "ua-parser",
                   _UA_COST),
        SignalSpec("device.os", "str", "Operating system family, e.g. Windows, iOS.",
                   "ua-parser", _UA_COST),
        SignalSpec("device.type", "str", "desktop, mobile, tablet, bot or other.",
                   "ua-parser + riskgate", _UA_COST),
        SignalSpec("device.is_bot_ua", "bool",
                   "The UA names a program: crawler (verified search engines included), "
                   "HTTP library, scanner, monitor, feed reader, AI agent, automation.",
                   "ua-parser Spider + riskgate tokens", _UA_COST),
        SignalSpec("device.is_headless", "bool", "A headless browser (UA or client hints).",
                   "UA, sec-ch-ua", _UA_COST),
        SignalSpec("device.automation", "str",
                   "The automation tool given away (headless-chrome, phantomjs, selenium, "
                   "playwright, puppeteer, cypress, ...), or null.", "UA, headers", _UA_COST),
        SignalSpec("device.missing_browser_headers", "bool",
                   "A browser UA without accept-language, accept-encoding, sec-fetch-* or "
                   "sec-ch-ua where that browser version always sends them.", "headers"),
        SignalSpec("device.client_hints_mismatch", "bool",
                   "sec-ch-ua brand version or sec-ch-ua-platform disagrees with the UA.",
                   "headers"),
        SignalSpec("device.tls_fingerprint", "str",
                   "JA3/JA4 fingerprint from the configured edge-proxy header.", "headers"),
        SignalSpec("device.browser_headers_absent", "bool",
                   "A browser UA with none of the headers that browser always sends besides "
                   "Accept-Encoding (no Accept-Language, sec-fetch-* or client hints): a "
                   "script wearing a browser's name.", "headers"),
        SignalSpec("device.fingerprint", "str",
                   "The client's HTTP stack, keyed: its own headers' names in order, the "
                   "User-Agent, Accept-Language, Accept-Encoding and client-hint values, and "
                   "the TLS fingerprint when configured. Counter key word `fingerprint`.",
                   "headers"),
        SignalSpec("device.app", "str",
                   "The native app's product name: a UA naming a product next to an app "
                   "HTTP stack (okhttp, Alamofire, CFNetwork, Dalvik) with an app-version "
                   "header. Name your own apps in a `string` list.", "UA, headers"),
        # Identity (identity.py). Raw values never appear; only keys and shapes.
        SignalSpec("account.email_key", "str",
                   "The normalised email (case, gmail dots, +tags) keyed with the secret.",
                   "request"),
        SignalSpec("account.disposable_email", "bool",
                   "The email domain or a parent is on the disposable-domain list (the "
                   "configured one, else the bundled disposable-email-domains package).",
                   "disposable-domain list"),
        SignalSpec("account.username_sequential", "bool",
                   "A word stem and a zero-padded or 5+ digit number (user0042).", "request"),
        SignalSpec("account.username_digit_ratio", "float",
                   "Share of digits in the user name.", "request"),
        SignalSpec("account.username_entropy", "float",
                   "Shannon entropy of the user name, bits per character.", "request"),
        # Remembered in the store between requests (history.py); part of the decision's
        # one store round trip, None when the store is unavailable.
        SignalSpec("device.first_seen_age", "float",
                   "Seconds since this device id was first seen on any request through the "
                   "gateway, scored or not (0 the first time).",
                   "store", "one op in the decision's round trip"),
        SignalSpec("device.browsed", "bool",
                   "This device id was seen on an unscored request (a page's script call, a "
                   "search) in the last hour. None without a device id, until the "
                   "gateway has seen any unscored request carry one (decision API alone, "
                   "or pages that never send it), and for an hour after the store lost one "
                   "of the device's sightings (it would read as one that never browsed).",
                   "store", "one op in the decision's round trip"),
        SignalSpec("account.travel_speed_kmh", "float",
                   "Great-circle speed from the account's previous login location, km/h.",
                   "store + MaxMind City", "one op in the decision's round trip"),
        SignalSpec("account.new_country", "bool",
                   "The login's country differs from the account's previous login.",
                   "store + MaxMind City", "one op in the decision's round trip"),
    ]
)

#: Families whose members are named by the user: `attributes.seats`, `counters.x`, ...
OPEN_FAMILIES: Final[tuple[str, ...]] = ("attributes",)

#: Attribute names whose values are identities: exposed to rules only keyed.
DEFAULT_PII_ATTRIBUTES: Final[frozenset[str]] = frozenset(
    {"email", "phone", "username", "name", "first_name", "last_name", "passport", "card"}
)
