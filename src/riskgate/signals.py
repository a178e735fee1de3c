"""Request to facts: everything riskgate knows about one request, under stable names.

:data:`CATALOG` names every built-in signal with its type and meaning; rules are
checked against it at load time and ``docs/signals.md`` is kept in sync with it by a
test. :class:`SignalExtractor` turns a :class:`RiskEvent` into a flat ``facts`` dict
keyed by those names. Identities (account, device, and attributes named as PII) only
ever appear keyed with the HMAC secret, so facts can be logged and replayed.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final, Literal

from riskgate.config import Config
from riskgate.errors import SignalSourceError
from riskgate.event import RiskEvent
from riskgate.geoip import GEO_FACTS, DatacenterLists, GeoIP, datacenter
from riskgate.headers import check_headers
from riskgate.identity import DisposableDomains, IdentitySignals, username_shape
from riskgate.useragent import UAClassifier

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
                   "Hosting flag, or the address/ASN is on a configured datacenter list.",
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
        # Identity (identity.py). Raw values never appear; only keys and shapes.
        SignalSpec("account.email_key", "str",
                   "The normalised email (case, gmail dots, +tags) keyed with the secret.",
                   "request"),
        SignalSpec("account.disposable_email", "bool",
                   "The email domain or a parent is on the disposable-domain list.",
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
                   "Seconds since this device id was first seen (0 the first time).",
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


class Keyer:
    """Keys identities with a secret so they can be counted and logged but not read back.

    Keyed BLAKE2b is a proper MAC and several times cheaper than ``hmac`` + SHA-256
    on the hot path; 96 bits keep collisions out of reach for counter keys.

    >>> k = Keyer(b"s3cret")
    >>> k("account", "alice@example.com") == k("account", "alice@example.com")
    True
    >>> k("account", "alice@example.com") == Keyer(b"other")("account", "alice@example.com")
    False
    >>> len(k("device", "d-1"))
    24
    """

    def __init__(self, secret: bytes) -> None:
        self._secret = hashlib.blake2b(secret).digest()  # any length in, 64-byte key out

    def __call__(self, kind: str, value: str) -> str:
        digest = hashlib.blake2b(
            value.encode(), key=self._secret, digest_size=12, person=kind.encode()[:16]
        )
        return digest.hexdigest()


def ip_prefix(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """The /24 (IPv4) or /48 (IPv6) network a client shares with its neighbours.

    >>> ip_prefix(ipaddress.ip_address("203.0.113.77"))
    '203.0.113.0/24'
    >>> ip_prefix(ipaddress.ip_address("2001:db8:1:2::7"))
    '2001:db8:1::/48'
    """
    # Masking the integer is ~10x cheaper than building an ip_network per request.
    if ip.version == 4:
        return f"{ipaddress.IPv4Address(int(ip) & _V4_24)}/24"
    return f"{ipaddress.IPv6Address(int(ip) & _V6_48)}/48"


_V4_24: Final = 0xFFFFFF00
_V6_48: Final = ((1 << 48) - 1) << 80


def email_domain(value: str | None) -> str | None:
    """The lower-case domain of an email address, or None when it is not one.

    >>> email_domain("Alice@Mail.Example.COM")
    'mail.example.com'
    >>> email_domain("alice") is None
    True
    """
    if not value:
        return None
    _, at, domain = value.rpartition("@")
    return domain.strip().lower() or None if at else None


class SignalExtractor:
    """Turns risk events into facts; built once, called per request.

    Every source is optional: without ``geoip`` the MaxMind facts are None, without
    ``datacenter`` lists ``ip.datacenter`` falls back to the hosting flag, and without
    a disposable list ``account.disposable_email`` is None.

    >>> x = SignalExtractor(Keyer(b"k"))
    >>> e = RiskEvent("r1", "login", ipaddress.ip_address("203.0.113.5"), 0.0,
    ...               account="A.l.i.c.e+x@gmail.com", user_agent="curl/8.4.0")
    >>> f = x.facts(e)
    >>> f["device.is_bot_ua"], f["account.email_domain"], f["ip.country"]
    (True, 'gmail.com', None)
    >>> import dataclasses
    >>> other = dataclasses.replace(e, account="alice@googlemail.com")
    >>> f["account.email_key"] == x.facts(other)["account.email_key"]
    True
    """

    def __init__(
        self,
        keyer: Keyer,
        pii_attributes: frozenset[str] = DEFAULT_PII_ATTRIBUTES,
        *,
        geoip: GeoIP | None = None,
        datacenter: DatacenterLists | None = None,
        ua: UAClassifier | None = None,
        identity: IdentitySignals | None = None,
        tls_fingerprint_header: str | None = None,
    ) -> None:
        self._key = keyer
        self._pii = pii_attributes
        self._geoip = geoip
        self._datacenter = datacenter
        self._ua = ua if ua is not None else UAClassifier()
        self._identity = identity if identity is not None else IdentitySignals()
        self._tls_header = tls_fingerprint_header.lower() if tls_fingerprint_header else None

    @classmethod
    def from_config(cls, config: Config, keyer: Keyer) -> tuple[SignalExtractor, list[str]]:
        """The extractor a configuration asks for, and warnings for sources it cannot use.

        A source that cannot be opened leaves its signals unknown (None) rather than
        stopping the gateway; the warnings say which and why.
        """
        warnings: list[str] = []
        paths = config.geoip
        geoip = None
        if any(getattr(paths, name) is not None for name in paths.__dataclass_fields__):
            geoip = GeoIP(paths.city, paths.asn, paths.anonymous_ip, paths.isp,
                          paths.connection_type)
            warnings += [f"{error}; its ip.* signals are unknown until it is fixed"
                         for error in geoip.startup_errors]
        sources = config.signals
        datacenter_lists = None
        if sources.datacenter_asns or sources.datacenter_networks:
            try:
                datacenter_lists = DatacenterLists.from_files(sources.datacenter_asns,
                                                              sources.datacenter_networks)
            except SignalSourceError as error:
                warnings.append(f"{error}; ip.datacenter uses the hosting flag alone")
        disposable = None
        if sources.disposable_email_domains is not None:
            try:
                disposable = DisposableDomains.from_files(sources.disposable_email_domains,
                                                          sources.disposable_email_allowlist)
            except SignalSourceError as error:
                warnings.append(f"{error}; account.disposable_email is unknown")
        extractor = cls(keyer, geoip=geoip, datacenter=datacenter_lists,
                        identity=IdentitySignals(disposable),
                        tls_fingerprint_header=sources.tls_fingerprint_header)
        return extractor, warnings

    @property
    def degraded(self) -> bool:
        """A configured GeoIP database is not answering, so decisions are made without it."""
        return self._geoip is not None and not self._geoip.all_loaded

    def facts(self, event: RiskEvent) -> dict[str, Any]:
        ip = event.ip
        email = event.attributes.get("email")
        if not isinstance(email, str):
            email = event.account if event.account and "@" in event.account else None
        domain = email_domain(email)
        normalised = self._identity.normalise(email) if email else None
        facts: dict[str, Any] = {
            "event": event.event,
            "ip": str(ip),
            "ip.version": ip.version,
            "ip.prefix": ip_prefix(ip),
            "account.present": event.account is not None,
            "account.key": self._key("account", event.account) if event.account else None,
            "account.email_domain": domain,
            "account.email_key": self._key("email", normalised) if normalised else None,
            "account.disposable_email": self._identity.is_disposable(domain),
            "device.present": event.device_id is not None,
            "device.key": self._key("device", event.device_id) if event.device_id else None,
            "device.user_agent": event.user_agent,
            "device.header_count": len(event.headers),
            "device.tls_fingerprint": (
                event.headers.get(self._tls_header) if self._tls_header else None
            ),
            "challenge.passed": event.challenge_passed,
        }
        geo = self._geoip.facts(ip) if self._geoip is not None else dict.fromkeys(GEO_FACTS)
        facts.update(geo)
        facts["ip.datacenter"] = datacenter(ip, geo, self._datacenter)
        facts.update(self._device(event))
        facts.update(self._username(event, email))
        for name, value in event.attributes.items():
            if name in self._pii and value is not None:
                value = self._key("attribute", str(value))
            facts[f"attributes.{name}"] = value
        return facts

    def _device(self, event: RiskEvent) -> dict[str, Any]:
        ua = event.user_agent.strip() if event.user_agent else ""
        if not ua:
            return dict(_NO_UA)
        info = self._ua(ua)
        checked = check_headers(ua, info, event.headers)
        automation = info.automation or ("headless-chrome" if checked.headless_hint else None)
        return {
            "device.ua_missing": False,
            "device.browser": info.browser,
            "device.browser_major": info.browser_major,
            "device.os": info.os,
            "device.type": "bot" if automation else info.device_type,
            "device.is_bot_ua": info.is_bot or automation is not None,
            "device.is_headless": info.is_headless or checked.headless_hint,
            "device.automation": automation,
            "device.missing_browser_headers": checked.missing_browser_headers,
            "device.client_hints_mismatch": checked.client_hints_mismatch,
        }

    def _username(self, event: RiskEvent, email: str | None) -> dict[str, Any]:
        # The shape of what the user chose: a username attribute, else the account
        # id when it is not an email, else the email's local part.
        name = event.attributes.get("username")
        if not isinstance(name, str):
            name = event.account if event.account and event.account != email else None
        if name is None and email:
            name = email.rpartition("@")[0]
        if not name:
            return dict.fromkeys(_USERNAME_FACTS)
        shape = username_shape(name)
        return {
            "account.username_sequential": shape.sequential,
            "account.username_digit_ratio": shape.digit_ratio,
            "account.username_entropy": shape.entropy,
        }


_NO_UA: Final[dict[str, Any]] = {
    "device.ua_missing": True,
    "device.browser": None,
    "device.browser_major": None,
    "device.os": None,
    "device.type": None,
    "device.is_bot_ua": None,
    "device.is_headless": None,
    "device.automation": None,
    "device.missing_browser_headers": None,
    "device.client_hints_mismatch": None,
}
_USERNAME_FACTS: Final = (
    "account.username_sequential", "account.username_digit_ratio", "account.username_entropy",
)


def catalog_markdown(catalog: dict[str, SignalSpec] = CATALOG) -> str:
    """The signal reference table of ``docs/signals.md``, generated from the catalog.

    >>> print(catalog_markdown({"ip": SignalSpec("ip", "str", "The IP.", "request")}))
    | name | type | meaning | source | cost |
    |---|---|---|---|---|
    | `ip` | str | The IP. | request | negligible |
    """
    rows = ["| name | type | meaning | source | cost |", "|---|---|---|---|---|"]
    for spec in catalog.values():
        cells = (f"`{spec.name}`", spec.type, spec.doc, spec.source, spec.cost)
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows)


if __name__ == "__main__":  # python -m riskgate.signals: print the docs table
    print(catalog_markdown())
