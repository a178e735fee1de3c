"""The configuration file (CONTRACT §4) to one typed, validated :class:`Config`.

Everything is checked at start-up, and every problem is reported together with the
file, the line and what to change, so an operator fixes a config in one pass.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, get_args
from urllib.parse import urlsplit

import yaml

from riskgate.errors import ConfigError, Problem
from riskgate.event.types import EVENTS, EventName
from riskgate.store import registry

SourceKind = Literal["body", "header", "cookie", "path", "query"]
SOURCE_KINDS: Final[tuple[SourceKind, ...]] = get_args(SourceKind)
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_ENV_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_MIN_SECRET_LENGTH: Final = 16
_RESOLVER: Final = yaml.resolver.Resolver()


@dataclass(frozen=True, slots=True)
class ValueSource:
    """Where a value comes from in a request: ``body:email``, ``header:X-Account-Id``...

    >>> ValueSource.parse("header:X-Device-Id")
    ValueSource(kind='header', name='x-device-id')
    """

    kind: SourceKind
    name: str

    @classmethod
    def parse(cls, text: str) -> ValueSource:
        kind, sep, name = text.partition(":")
        if not sep or kind not in SOURCE_KINDS or not name:
            raise ValueError(
                f"`{text}` is not a value source; write KIND:NAME with KIND one of "
                + ", ".join(SOURCE_KINDS)
            )
        # Header names are case-insensitive; everything else is matched as written.
        return cls(kind, name.lower() if kind == "header" else name)

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"


@dataclass(frozen=True, slots=True)
class Route:
    """A protected route of the upstream and how to read its request."""

    path: str
    method: str
    event: EventName
    account: ValueSource | None = None
    attributes: Mapping[str, ValueSource] = field(default_factory=dict)
    failure_statuses: frozenset[int] = frozenset()


@dataclass(frozen=True, slots=True)
class GeoIPPaths:
    """MaxMind database files, each optional."""

    city: Path | None = None
    asn: Path | None = None
    anonymous_ip: Path | None = None
    isp: Path | None = None
    connection_type: Path | None = None


@dataclass(frozen=True, slots=True)
class SignalSources:
    """Data files behind some signals, each optional (its signal is unknown without it)."""

    #: Hosting ASNs, one ``AS<number>`` per line, for ``ip.datacenter``.
    datacenter_asns: tuple[Path, ...] = ()
    #: Hosting networks, one CIDR per line, for ``ip.datacenter``.
    datacenter_networks: tuple[Path, ...] = ()
    #: Disposable email domains, one per line, for ``account.disposable_email``.
    disposable_email_domains: Path | None = None
    #: Domains that look disposable but are not, one per line.
    disposable_email_allowlist: Path | None = None
    #: The header an edge proxy puts a JA3/JA4 TLS fingerprint in.
    tls_fingerprint_header: str | None = None


@dataclass(frozen=True, slots=True)
class Config:
    """The whole validated configuration; see CONTRACT §4 for each key."""

    secret: str
    upstream: str | None = None
    trusted_proxies: tuple[IPNetwork, ...] = ()
    store: str = "memory://"
    rules: Path = Path("rules")
    geoip: GeoIPPaths = GeoIPPaths()
    signals: SignalSources = SignalSources()
    device_id: ValueSource = ValueSource("header", "x-device-id")
    routes: tuple[Route, ...] = ()
    max_body_bytes: int = 65536
    challenge_status: int = 403
    admin_tokens: tuple[str, ...] = ()
    #: Reload rules when a file under ``rules`` changes (SIGHUP and the admin API always work).
    watch_rules: bool = True
    #: Where decision log lines go: ``-`` for standard output, a file path, or None.
    decision_log: str | None = "-"
    #: How long a decision can still receive feedback, in seconds.
    feedback_ttl: float = 900.0
    #: The ``memory://`` store's cap on entries, so a flood cannot exhaust memory.
    memory_store_max_entries: int = 1_000_000
    source: Path | None = None


class _Checker:
    """Collects problems while walking the YAML node tree of one file."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[Problem] = []

    def problem(self, node: yaml.Node, message: str) -> None:
        mark = node.start_mark  # None on the empty mapping an empty file stands for
        self.problems.append(Problem(self.file, mark.line + 1 if mark else None,
                                     mark.column + 1 if mark else None, message))

    def scalar(self, node: yaml.Node, what: str) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            self.problem(node, f"{what} must be a single value, not a list or mapping")
            return None
        value = node.value
        if "${" in value:
            known_problems = len(self.problems)
            value = self._expand(node, value)
            if len(self.problems) > known_problems:
                return value  # already reported; resolving "" to null would report it twice
        if node.style is None:  # plain scalars get YAML's type resolution after expansion
            tag = _RESOLVER.resolve(yaml.ScalarNode, value, (True, False))  # type: ignore[no-untyped-call]
            plain = yaml.ScalarNode(tag, value)
            return yaml.constructor.SafeConstructor().construct_object(plain)
        return value

    def _expand(self, node: yaml.Node, value: str) -> str:
        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in os.environ:
                self.problem(node, f"environment variable {name} is not set; export it or "
                             "write the value in the file")
                return ""
            return os.environ[name]

        return _ENV_VAR.sub(replace, value)

    def mapping(
        self, node: yaml.Node, what: str, known: tuple[str, ...] | None
    ) -> dict[str, yaml.Node]:
        if not isinstance(node, yaml.MappingNode):
            self.problem(node, f"{what} must be a mapping of key: value")
            return {}
        entries: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            if key in entries:
                self.problem(key_node, f"`{key}` is given twice in {what}; keep one")
            elif known is not None and key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f"did you mean `{close[0]}`?" if close else "known: " + ", ".join(known)
                self.problem(key_node, f"unknown key `{key}` in {what}; {hint}")
            else:
                entries[key] = value_node
        return entries

    def sequence(self, node: yaml.Node, what: str) -> list[yaml.Node]:
        if not isinstance(node, yaml.SequenceNode):
            self.problem(node, f"{what} must be a list")
            return []
        return list(node.value)

    def typed(
        self, node: yaml.Node, what: str, expected: type | tuple[type, ...], hint: str
    ) -> Any:
        value = self.scalar(node, what)
        if value is None and not isinstance(node, yaml.ScalarNode):
            return None
        if (expected is int and isinstance(value, bool)) or not isinstance(value, expected):
            self.problem(node, f"{what} must be {hint}, not `{value}`")
            return None
        return value

    def convert(self, node: yaml.Node, what: str, parse: Callable[[str], Any]) -> Any:
        value = self.scalar(node, what)
        if value is None:
            return None
        try:
            return parse(str(value))
        except ValueError as exc:
            self.problem(node, f"{what}: {exc}")
            return None


_TOP_KEYS: Final = tuple(f for f in Config.__dataclass_fields__ if f != "source")
_ROUTE_KEYS: Final = ("path", "method", "event", "account", "attributes", "failure_statuses")


def _parse_upstream(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"`{text}` is not an http(s) URL such as http://127.0.0.1:9000")
    return text.rstrip("/")


def _parse_store(text: str) -> str:
    try:
        registry.backend_for(text)
    except ValueError:
        raise ValueError(f"`{text}` is not a store URL; use {registry.SUPPORTED}") from None
    # Opening a store connects nothing, so it is the check of the rest of the URL
    # (a cluster's host list, a Redis URL's options) before anything starts.
    registry.open_store(text, max_entries=2, timeout=1.0)
    return text


def _parse_network(text: str) -> IPNetwork:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(f"`{text}` is not an IP network such as 10.0.0.0/8 or ::1/128") from None


def _parse_event(text: str) -> EventName:
    if text not in EVENTS:
        raise ValueError(f"unknown event `{text}`; use one of {', '.join(EVENTS)}")
    return text


def _load_route(check: _Checker, node: yaml.Node, index: int) -> Route | None:
    what = f"routes[{index}]"
    entries = check.mapping(node, what, _ROUTE_KEYS)
    for required in ("path", "event"):
        if required not in entries and isinstance(node, yaml.MappingNode):
            check.problem(node, f"{what} needs `{required}`")
    path = check.typed(entries["path"], f"{what}.path", str, "a path such as /api/login") \
        if "path" in entries else None
    if isinstance(path, str) and not path.startswith("/"):
        check.problem(entries["path"], f"{what}.path must start with /, as in /api/login")
    event = check.convert(entries["event"], f"{what}.event", _parse_event) \
        if "event" in entries else None
    method = check.typed(entries["method"], f"{what}.method", str, "an HTTP method such as POST") \
        if "method" in entries else "POST"
    account = check.convert(entries["account"], f"{what}.account", ValueSource.parse) \
        if "account" in entries else None
    attributes: dict[str, ValueSource] = {}
    if "attributes" in entries:
        for name, source_node in check.mapping(entries["attributes"], f"{what}.attributes",
                                               None).items():
            source = check.convert(source_node, f"{what}.attributes.{name}", ValueSource.parse)
            if source is not None:
                attributes[name] = source
    statuses: set[int] = set()
    if "failure_statuses" in entries:
        for status_node in check.sequence(entries["failure_statuses"],
                                          f"{what}.failure_statuses"):
            status = check.typed(status_node, f"{what}.failure_statuses", int,
                                 "a list of HTTP status codes such as [401]")
            if status is not None:
                statuses.add(status)
        if event != "login" and statuses:
            check.problem(entries["failure_statuses"],
                          f"{what}.failure_statuses only applies to login routes")
    if path is None or event is None or method is None:
        return None
    return Route(path, method.upper(), event, account, attributes, frozenset(statuses))


def load_config(path: str | Path) -> Config:
    """Read and validate a configuration file; raise ConfigError listing every problem.

    Relative paths inside the file are taken from the file's own folder.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        reason = f"cannot read the configuration file: {exc.strerror}"
        raise ConfigError([Problem(str(path), None, None, reason)]) from None
    check = _Checker(str(path))
    try:
        root = yaml.compose(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        raise ConfigError([Problem(str(path), mark.line + 1 if mark else None,
                                   mark.column + 1 if mark else None,
                                   f"not valid YAML: {exc.problem}")]) from None
    if root is None:
        root = yaml.MappingNode("tag:yaml.org,2002:map", [])
    entries = check.mapping(root, "the configuration", _TOP_KEYS)
    base = path.parent
    values: dict[str, Any] = {"source": path, "rules": base / "rules"}

    def local_path(node: yaml.Node, what: str) -> Path | None:
        text = check.typed(node, what, str, "a file path")
        return None if text is None else base / text

    for key, node in entries.items():
        if key == "upstream":
            values[key] = check.convert(node, key, _parse_upstream)
        elif key == "store":
            values[key] = check.convert(node, key, _parse_store)
        elif key == "secret":
            values[key] = check.typed(node, key, str, "a string")
        elif key == "rules":
            values[key] = local_path(node, key)
        elif key == "decision_log":
            log = check.scalar(node, key)
            values[key] = None if log is None else log if log == "-" else str(base / str(log))
        elif key == "trusted_proxies":
            values[key] = tuple(check.convert(n, key, _parse_network)
                                for n in check.sequence(node, key))
        elif key == "admin_tokens":
            values[key] = tuple(check.typed(n, key, str, "a list of strings")
                                for n in check.sequence(node, key))
        elif key == "device_id":
            values[key] = check.convert(node, key, ValueSource.parse)
        elif key == "geoip":
            known = tuple(GeoIPPaths.__dataclass_fields__)
            values[key] = GeoIPPaths(**{name: local_path(n, f"geoip.{name}")
                                        for name, n in check.mapping(node, key, known).items()})
        elif key == "signals":
            known = tuple(SignalSources.__dataclass_fields__)
            sources: dict[str, Any] = {}
            for name, n in check.mapping(node, key, known).items():
                what = f"signals.{name}"
                if name.startswith("datacenter_"):
                    sources[name] = tuple(local_path(item, what)
                                          for item in check.sequence(n, what))
                elif name == "tls_fingerprint_header":
                    sources[name] = check.typed(n, what, str, "a header name such as X-JA4")
                else:
                    sources[name] = local_path(n, what)
            values[key] = SignalSources(**sources)
        elif key == "routes":
            values[key] = tuple(_load_route(check, n, i)
                                for i, n in enumerate(check.sequence(node, key)))
        elif key in ("max_body_bytes", "challenge_status", "memory_store_max_entries"):
            number = check.typed(node, key, int, "a whole number")
            if number is not None and number <= 0:
                check.problem(node, f"{key} must be positive")
            elif key == "challenge_status" and number is not None and not 400 <= number <= 499:
                # A 2xx or 3xx would tell clients (and caches) the request went through.
                check.problem(node, f"challenge_status must be a 4xx status such as 403 or "
                                    f"429, not {number}")
            values[key] = number
        elif key == "watch_rules":
            values[key] = check.typed(node, key, bool, "true or false")
        elif key == "feedback_ttl":
            values[key] = float(check.typed(node, key, (int, float), "a number of seconds") or 0)
    secret = values.get("secret")
    if secret is None and "secret" not in entries:
        check.problem(root, "`secret` is missing; set `secret: ${RISKGATE_SECRET}` and export "
                      "a random value of at least 16 characters")
    elif isinstance(secret, str) and len(secret) < _MIN_SECRET_LENGTH and not check.problems:
        check.problem(entries["secret"], f"`secret` is {len(secret)} characters long; use a random "
                      f"value of at least {_MIN_SECRET_LENGTH}")
    if check.problems:
        raise ConfigError(check.problems)
    return Config(**values)
