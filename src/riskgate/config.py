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

from riskgate.decision.verdict import Action
from riskgate.errors import ConfigError, Problem
from riskgate.event.types import EVENTS, EventName
from riskgate.store import registry

SourceKind = Literal["body", "header", "cookie", "path", "query"]
SOURCE_KINDS: Final[tuple[SourceKind, ...]] = get_args(SourceKind)
#: What a route's attribute is converted to before rules see it (``type:`` of the attribute).
AttributeType = Literal["number", "string", "boolean"]
ATTRIBUTE_TYPES: Final[tuple[AttributeType, ...]] = get_args(AttributeType)
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


#: What a request gets while the store cannot be reached: ``rules`` decide on what is
#: left (signals, no counters), or this action is taken (a rule's ``block`` still blocks
#: under ``allow``, as with any allow entry).
FailMode = Literal["rules", "allow", "challenge", "block"]
FAIL_MODES: Final[tuple[FailMode, ...]] = get_args(FailMode)


def fail_action(mode: FailMode) -> Action | None:
    """The action a fail mode takes; None for ``rules``."""
    return None if mode == "rules" else mode


@dataclass(frozen=True, slots=True)
class Route:
    """A protected route of the upstream and how to read its request."""

    path: str
    method: str
    event: EventName
    account: ValueSource | None = None
    attributes: Mapping[str, ValueSource] = field(default_factory=dict)
    failure_statuses: frozenset[int] = frozenset()
    #: None: the configuration's top-level ``fail_mode``.
    fail_mode: FailMode | None = None
    #: Whether this route's challenges refuse answers while the store cannot prove an
    #: id unused; None: closed for login and booking (an account or seats at stake),
    #: open for the rest.
    challenge_fail_closed: bool | None = None
    #: Declared types of attributes; one without a type arrives as the request had it
    #: (a form field or header is text, a JSON value keeps its JSON type).
    attribute_types: Mapping[str, AttributeType] = field(default_factory=dict)

    @property
    def challenge_closed(self) -> bool:
        if self.challenge_fail_closed is not None:
            return self.challenge_fail_closed
        return self.event in ("login", "booking")


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
class ModelConfig:
    """The online model (``model:``); docs/model.md says what each key does."""

    enabled: bool = False
    #: Where snapshots go; each worker writes ``SNAPSHOT.<slot>`` (docs/model.md).
    #: None: nothing is kept across restarts.
    snapshot: Path | None = None
    snapshot_interval_minutes: float = 10.0
    #: Allowed requests a flow's detector learns before ``model.anomaly`` is given.
    warmup_samples: int = 500
    #: Labels of each kind (bot, human) before ``model.bot_probability`` is given.
    min_labels: int = 20
    #: The largest share of recent learned samples one address, prefix or device gives.
    max_share: float = 0.02
    #: Allowed requests each flow's detector learns per second at most, per worker.
    learn_per_second: float = 200.0
    #: One of riskgate.model.online.DETECTORS; the default was chosen by bench/model_eval.py.
    detector: str = "half-space-trees"


@dataclass(frozen=True, slots=True)
class Config:
    """The whole validated configuration; see CONTRACT §4 for each key."""

    secret: str
    upstream: str | None = None
    trusted_proxies: tuple[IPNetwork, ...] = ()
    #: Peers besides loopback and ``trusted_proxies`` that may reach the internal
    #: endpoints (decision API, feedback, nginx auth, metrics, admin) in proxy mode.
    internal_networks: tuple[IPNetwork, ...] = ()
    store: str = "memory://"
    rules: Path = Path("rules")
    geoip: GeoIPPaths = GeoIPPaths()
    signals: SignalSources = SignalSources()
    device_id: ValueSource = ValueSource("header", "x-device-id")
    routes: tuple[Route, ...] = ()
    max_body_bytes: int = 65536
    #: The request line and headers together, in bytes; larger heads are answered 431
    #: by the server before any parser or cache of riskgate's sees them.
    max_header_bytes: int = 32768
    challenge_status: int = 403
    #: How long a challenge takes an answer, in seconds. With the model on, one left
    #: unsolved that long labels its request a bot's (docs/model.md).
    challenge_ttl: float = 120.0
    admin_tokens: tuple[str, ...] = ()
    #: Reload rules when a file under ``rules`` changes (SIGHUP and the admin API always work).
    watch_rules: bool = True
    #: Where decision log lines go: ``-`` for standard output, a file path, or None.
    decision_log: str | None = "-"
    #: How long a decision can still receive feedback, in seconds.
    feedback_ttl: float = 900.0
    #: How long a decision waits for the store before it goes on without it, in seconds;
    #: the first such timeout opens the store's circuit breaker (store/breaker.py). A
    #: stall then costs a request at most this: 75 ms keeps the p99 of a stall under
    #: 50 ms while staying far above a healthy Redis round trip (well under 1 ms).
    store_timeout: float = 0.075
    #: What requests get while the store is unreachable (routes may set their own).
    fail_mode: FailMode = "rules"
    #: The ``memory://`` store's cap on entries, so a flood cannot exhaust memory.
    memory_store_max_entries: int = 1_000_000
    model: ModelConfig = ModelConfig()
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
_ROUTE_KEYS: Final = ("path", "method", "event", "account", "attributes", "failure_statuses",
                      "fail_mode", "challenge_fail_closed")
_ATTRIBUTE_KEYS: Final = ("source", "type")
_MODEL_KEYS: Final = tuple(ModelConfig.__dataclass_fields__)
#: Kept here, not imported from riskgate.model.online, so that reading a config never
#: imports River; tests/test_model.py holds the two lists equal.
MODEL_DETECTORS: Final = ("half-space-trees", "one-class-svm", "standard-distance")


#: Numeric keys: (type, smallest, largest, what the unit is). A value out of range is a
#: start-up error rather than a fault later (``feedback_ttl: 0`` made every Redis batch
#: fail, as Redis refuses a zero expiry).
_NUMBERS: Final[dict[str, tuple[type, float, float, str]]] = {
    "max_body_bytes": (int, 1, 64 * 2**20, "bytes"),
    "max_header_bytes": (int, 1024, 2**20, "bytes"),
    "challenge_status": (int, 400, 499, "a 4xx status"),
    "memory_store_max_entries": (int, 1000, 10**9, "entries"),
    "feedback_ttl": (float, 1, 7 * 86400, "seconds"),
    "challenge_ttl": (float, 1, 3600, "seconds"),
    "store_timeout": (float, 0.005, 10, "seconds"),
    "model.snapshot_interval_minutes": (float, 0.1, 24 * 60, "minutes"),
    "model.warmup_samples": (int, 0, 10**9, "samples"),
    "model.min_labels": (int, 1, 10**9, "labels"),
    "model.max_share": (float, 0.001, 1, "(a fraction of 1)"),
    "model.learn_per_second": (float, 1, 10**6, "samples per second"),
}


def _number(check: _Checker, node: yaml.Node, key: str) -> Any:
    kind, lowest, highest, unit = _NUMBERS[key]
    if kind is int:
        number = check.typed(node, key, int, "a whole number")
    else:
        number = check.typed(node, key, (int, float), f"a number of {unit}")
    if number is None:
        return None
    if key == "challenge_status" and not lowest <= number <= highest:
        # A 2xx or 3xx would tell clients (and caches) the request went through.
        check.problem(node, f"challenge_status must be a 4xx status such as 403 or 429, "
                            f"not {number}")
    elif number < lowest:
        check.problem(node, f"{key} must be positive" if lowest == 1 and kind is int
                      else f"{key} must be at least {lowest:g} {unit}, not {number}")
    elif number > highest:
        check.problem(node, f"{key} must be at most {highest:.0f} {unit}, not {number}")
    return kind(number)


def _parse_detector(text: str) -> str:
    if text not in MODEL_DETECTORS:
        raise ValueError(f"unknown detector `{text}`; use one of {', '.join(MODEL_DETECTORS)}")
    return text


def _load_model(check: _Checker, node: yaml.Node, base: Path) -> ModelConfig:
    values: dict[str, Any] = {}
    for name, n in check.mapping(node, "model", _MODEL_KEYS).items():
        what = f"model.{name}"
        if name == "enabled":
            values[name] = check.typed(n, what, bool, "true or false")
        elif name == "snapshot":
            text = check.typed(n, what, str, "a file path")
            values[name] = None if text is None else base / text
        elif name == "detector":
            values[name] = check.convert(n, what, _parse_detector)
        else:
            values[name] = _number(check, n, what)
    return ModelConfig(**{k: v for k, v in values.items() if v is not None})


def _admin_token(check: _Checker, node: yaml.Node) -> str | None:
    known = len(check.problems)
    token: str | None = check.typed(node, "admin_tokens", str, "a list of strings")
    if token is not None and len(check.problems) == known and (
            len(token.strip()) < _MIN_SECRET_LENGTH):
        # An empty or short token (an empty ${VAR} gives "") would let a header of
        # blanks, or a guess, into /admin.
        check.problem(node, f"admin_tokens: a token is {len(token.strip())} characters long; "
                      f"use a random value of at least {_MIN_SECRET_LENGTH}")
    return token


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
    registry.open_store(text, max_entries=2, timeout=1.0, secret=b"")
    return text


def _parse_network(text: str) -> IPNetwork:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(f"`{text}` is not an IP network such as 10.0.0.0/8 or ::1/128") from None


def _parse_fail_mode(text: str) -> FailMode:
    for mode in FAIL_MODES:
        if text == mode:
            return mode
    raise ValueError(f"`{text}` is not a fail mode; use one of {', '.join(FAIL_MODES)}")


def _parse_event(text: str) -> EventName:
    if text not in EVENTS:
        raise ValueError(f"unknown event `{text}`; use one of {', '.join(EVENTS)}")
    return text


def _parse_attribute_type(text: str) -> AttributeType:
    for kind in ATTRIBUTE_TYPES:
        if text == kind:
            return kind
    raise ValueError(f"unknown type `{text}`; use one of {', '.join(ATTRIBUTE_TYPES)}")


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
    types: dict[str, AttributeType] = {}
    if "attributes" in entries:
        for name, source_node in check.mapping(entries["attributes"], f"{what}.attributes",
                                               None).items():
            where = f"{what}.attributes.{name}"
            type_node = None
            if isinstance(source_node, yaml.MappingNode):  # {source: body:seats, type: number}
                typed = check.mapping(source_node, where, _ATTRIBUTE_KEYS)
                if "source" not in typed:
                    check.problem(source_node, f"{where} needs `source:`, e.g. "
                                               f"`{{source: body:{name}, type: number}}`")
                    continue
                source_node, type_node = typed["source"], typed.get("type")
            source = check.convert(source_node, where, ValueSource.parse)
            if source is not None:
                attributes[name] = source
            if type_node is not None:
                kind = check.convert(type_node, f"{where}.type", _parse_attribute_type)
                if kind is not None:
                    types[name] = kind
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
    fail_mode = check.convert(entries["fail_mode"], f"{what}.fail_mode", _parse_fail_mode) \
        if "fail_mode" in entries else None
    closed = check.typed(entries["challenge_fail_closed"], f"{what}.challenge_fail_closed",
                         bool, "true or false") if "challenge_fail_closed" in entries else None
    if path is None or event is None or method is None:
        return None
    return Route(path, method.upper(), event, account, attributes, frozenset(statuses),
                 fail_mode, closed, types)


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
        elif key in ("trusted_proxies", "internal_networks"):
            values[key] = tuple(check.convert(n, key, _parse_network)
                                for n in check.sequence(node, key))
        elif key == "admin_tokens":
            values[key] = tuple(_admin_token(check, n) for n in check.sequence(node, key))
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
        elif key in _NUMBERS:
            values[key] = _number(check, node, key)
        elif key == "watch_rules":
            values[key] = check.typed(node, key, bool, "true or false")
        elif key == "fail_mode":
            values[key] = check.convert(node, key, _parse_fail_mode)
        elif key == "model":
            values[key] = _load_model(check, node, base)
    secret = values.get("secret")
    if secret is None and "secret" not in entries:
        check.problem(root, "`secret` is missing; set `secret: ${RISKGATE_SECRET}` and export "
                      "a random value of at least 16 characters")
    elif isinstance(secret, str) and len(secret) < _MIN_SECRET_LENGTH and not any(
            p.line == entries["secret"].start_mark.line + 1 for p in check.problems):
        check.problem(entries["secret"], f"`secret` is {len(secret)} characters long; use a random "
                      f"value of at least {_MIN_SECRET_LENGTH}")
    if check.problems:
        raise ConfigError(check.problems, values.get("rules"))
    return Config(**values)
