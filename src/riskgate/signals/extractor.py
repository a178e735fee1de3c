"""Request to facts: everything riskgate knows about one request, under stable names.

:data:`CATALOG` names every built-in signal with its type and meaning; rules are
checked against it at load time and ``docs/signals.md`` is kept in sync with it by a
test. :class:`SignalExtractor` turns a :class:`RiskEvent` into a flat ``facts`` dict
keyed by those names. Identities (account, device, and attributes named as PII) only
ever appear keyed with the HMAC secret, so facts can be logged and replayed.
"""

from __future__ import annotations

from typing import Any, Final

from riskgate.config import Config
from riskgate.errors import SignalSourceError
from riskgate.event.types import RiskEvent
from riskgate.signals.catalog import DEFAULT_PII_ATTRIBUTES
from riskgate.signals.fingerprint import client_fingerprint, native_app
from riskgate.signals.geoip import (
    DEFAULT_DATACENTER_ASNS,
    GEO_FACTS,
    DatacenterLists,
    GeoIP,
    datacenter,
)
from riskgate.signals.headers import check_headers
from riskgate.signals.identity import DisposableDomains, IdentitySignals, username_shape
from riskgate.signals.keys import Keyer, email_domain, ip_prefix, ip_text
from riskgate.signals.useragent import UAClassifier


class SignalExtractor:
    """Turns risk events into facts; built once, called per request.

    Every source is optional: without ``geoip`` the MaxMind facts are None, without
    ``datacenter`` lists ``ip.datacenter`` falls back to the hosting flag, and without
    a disposable list ``account.disposable_email`` is None. :meth:`from_config` fills
    the two lists from the bundled defaults when the config names none.

    >>> import ipaddress
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
        try:
            datacenter_lists = DatacenterLists.from_files(
                sources.datacenter_asns or (DEFAULT_DATACENTER_ASNS,),
                sources.datacenter_networks)
        except SignalSourceError as error:
            warnings.append(f"{error}; ip.datacenter uses the hosting flag alone")
        disposable = None
        try:
            if sources.disposable_email_domains is not None:
                disposable = DisposableDomains.from_files(sources.disposable_email_domains,
                                                          sources.disposable_email_allowlist)
            else:
                disposable = DisposableDomains.bundled(sources.disposable_email_allowlist)
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
        tls = event.headers.get(self._tls_header) if self._tls_header else None
        facts: dict[str, Any] = {
            "event": event.event,
            "ip": ip_text(ip),
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
            "device.tls_fingerprint": tls,
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
        fingerprint = self._key("fingerprint", client_fingerprint(
            event.headers, event.headers.get(self._tls_header) if self._tls_header else None))
        if not ua:
            return {**_NO_UA, "device.fingerprint": fingerprint}
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
            "device.browser_headers_absent": checked.browser_headers_absent,
            "device.client_hints_mismatch": checked.client_hints_mismatch,
            "device.fingerprint": fingerprint,
            "device.app": native_app(ua, event.headers),
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
    "device.browser_headers_absent": None,
    "device.client_hints_mismatch": None,
    "device.app": None,
}
_USERNAME_FACTS: Final = (
    "account.username_sequential", "account.username_digit_ratio", "account.username_entropy",
)
