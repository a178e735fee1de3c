"""What the gateway reads of a request: routes, the client IP, value sources, body fields."""

from __future__ import annotations

import ipaddress
import math
import posixpath
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qsl

from starlette.datastructures import Headers
from starlette.requests import Request, cookie_parser
from starlette.routing import compile_path

from riskgate.config import AttributeType, IPNetwork, Route, ValueSource
from riskgate.errors import InputError
from riskgate.event.body import decode_json, encodable, fits_64_bits
from riskgate.event.ip import parse_ip
from riskgate.event.types import IPAddress, capped

#: Stands in for a peer with no IP address (a Unix socket): one shared, untrusted client.
_UNKNOWN_PEER: Final = ipaddress.IPv4Address("0.0.0.0")
_BODY_SOURCES: Final = "body"
FORM_TYPE: Final = "application/x-www-form-urlencoded"


@dataclass(frozen=True, slots=True)
class RequestView:
    """What the gateway reads of one request, however it arrived.

    ``body`` is None when it was not read (no ``body:`` source needs it) or cannot be
    (nginx subrequests carry no body); ``body:`` sources then yield nothing.
    """

    method: str
    path: str
    query_string: str
    headers: Headers
    client_ip: IPAddress
    body: bytes | None = None


@dataclass(frozen=True, slots=True)
class RouteMatch:
    route: Route
    path_params: Mapping[str, str]

    @property
    def needs_body(self) -> bool:
        sources = [self.route.account, *self.route.attributes.values()]
        return any(s is not None and s.kind == _BODY_SOURCES for s in sources)


#: Where common frameworks let a client claim another method than the one it sent
#: (Symfony, Laravel, Express's method-override, Rails' ``_method``): an upstream that
#: honours one treats a GET carrying ``X-HTTP-Method-Override: POST`` as the POST it
#: protects, so each claim is matched too.
_OVERRIDE_HEADERS: Final = ("x-http-method-override", "x-http-method", "x-method-override")
_OVERRIDE_PARAM: Final = "_method"
_PATH_PARAMS: Final = re.compile(r";[^/]*")
#: What normalising could change, besides a trailing slash: a path parameter, a doubled
#: slash, a dot segment.
_ODD: Final = (";", "//", "/.")


def normalise_path(path: str) -> str:
    """The path as lenient upstreams route it, for matching only.

    Servlet containers drop ``;name=value`` path parameters, most servers collapse
    repeated slashes and resolve dot segments, and many frameworks ignore a trailing
    slash; an attacker's variant of a protected path must not slip past unscored.

    >>> normalise_path("//api/./v1/../login/;jsessionid=1")
    '/api/login'
    >>> normalise_path("/api/login;x=1/"), normalise_path("/")
    ('/api/login', '/')
    """
    if not any(odd in path for odd in _ODD) and (path == "/" or not path.endswith("/")):
        return path  # the common case, on every proxied request: nothing to normalise
    cleaned = posixpath.normpath("/" + _PATH_PARAMS.sub("", path))
    # normpath keeps a leading "//" (POSIX leaves it implementation-defined).
    return "/" + cleaned.lstrip("/")


def claimed_methods(method: str, headers: Headers, query_string: str) -> tuple[str, ...]:
    """The request's method and every other one it claims through an override.

    >>> claimed_methods("GET", Headers({"x-http-method-override": "post"}), "")
    ('GET', 'POST')
    >>> claimed_methods("POST", Headers({}), "_method=PUT&x=1")
    ('POST', 'PUT')
    """
    claims = [headers.get(name, "") for name in _OVERRIDE_HEADERS]
    if _OVERRIDE_PARAM in query_string:
        claims += [v for k, v in parse_qsl(query_string) if k == _OVERRIDE_PARAM]
    methods = [method.upper()]
    for claim in claims:
        claim = claim.strip().upper()
        if claim and claim not in methods:
            methods.append(claim)
    return tuple(methods)


class RouteMatcher:
    """Config routes compiled once; ``match`` finds the first for a method and path.

    Paths are compared as :func:`normalise_path` reads them and case-insensitively
    (``/API/Login`` reaches ``/api/login`` on IIS, Spring and many others); path
    parameters keep their case.

    >>> from riskgate.config import Route
    >>> m = RouteMatcher([Route("/api/promotions/{code}/redeem", "POST", "promotion")])
    >>> m.match("POST", "/api/promotions/SPRING/redeem").path_params
    {'code': 'SPRING'}
    >>> m.match("GET", "/api/promotions/SPRING/redeem") is None
    True
    >>> m.match(("GET", "POST"), "/API/Promotions/SPRING/redeem/").path_params
    {'code': 'SPRING'}
    """

    def __init__(self, routes: Iterable[Route]) -> None:
        self._routes = [(route, re.compile(compile_path(route.path)[0].pattern, re.IGNORECASE))
                        for route in routes]

    def match(self, methods: str | tuple[str, ...], path: str) -> RouteMatch | None:
        """The first route for any of ``methods`` (HEAD counts as GET) and ``path``."""
        wanted = {methods} if isinstance(methods, str) else set(methods)
        if "HEAD" in wanted:
            wanted.add("GET")
        normal = normalise_path(path)
        for route, pattern in self._routes:
            if route.method not in wanted:
                continue
            found = pattern.match(normal)
            if found is not None:
                return RouteMatch(route, found.groupdict())
        return None

    def match_view(self, view: RequestView) -> RouteMatch | None:
        """The route a request reaches, however it spells its method and path."""
        return self.match(claimed_methods(view.method, view.headers, view.query_string),
                          view.path)


def peer_host(request: Request) -> str | None:
    """The TCP peer's address as the server reports it; None on a Unix socket."""
    return request.client.host if request.client else None


class TrustedProxies:
    """The client IP rule of CONTRACT §3, with the trusted networks parsed once.

    >>> proxies = TrustedProxies([ipaddress.ip_network("10.0.0.0/8")])
    >>> str(proxies.client_ip("10.0.0.2", "203.0.113.9, 198.51.100.7, 10.0.0.1"))
    '198.51.100.7'
    >>> str(proxies.client_ip("192.0.2.50", "203.0.113.9"))  # untrusted peer: header ignored
    '192.0.2.50'
    """

    def __init__(self, networks: Iterable[IPNetwork]) -> None:
        self._networks = tuple(networks)

    def trusts(self, ip: IPAddress) -> bool:
        return any(ip in network for network in self._networks)

    def peer(self, host: str | None) -> IPAddress:
        if host is None:
            return _UNKNOWN_PEER
        try:
            return parse_ip(host)
        except ValueError:
            return _UNKNOWN_PEER

    def client_ip(self, peer_host: str | None, forwarded_for: str | None) -> IPAddress:
        """The peer, or the right-most untrusted X-Forwarded-For hop behind trusted peers."""
        client = self.peer(peer_host)
        if not forwarded_for or not self.trusts(client):
            return client
        for hop in reversed(forwarded_for.split(",")):
            try:
                address = parse_ip(hop.strip())
            except ValueError:
                # A trusted hop wrote something that is not an address: nothing to its
                # left can be believed, so the nearest address we could verify stands.
                return client
            client = address
            if not self.trusts(address):
                return address
        return client  # every hop is a trusted proxy: the left-most is the client


#: What is left of a UTF-16 surrogate after decoding: json.loads joins the valid pairs.
_SURROGATE: Final = re.compile("[\ud800-\udfff]")


def _field_value(value: Any) -> Any:
    """A body value usable as an account or attribute: a scalar, else nothing.

    A JSON string may hold lone surrogates (a ``\\ud800`` escape), which cannot be
    hashed, stored or logged as UTF-8: they become U+FFFD. An integer past 64 bits is
    dropped.

    >>> _field_value("a" + chr(0xD800) + "b") == "a" + chr(0xFFFD) + "b"
    True
    >>> _field_value(2**64), _field_value(7), _field_value([1])
    (None, 7, None)
    """
    if isinstance(value, str):
        return value if encodable(value) else _SURROGATE.sub("\ufffd", value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value if fits_64_bits(value) else None
    if isinstance(value, (float, bool)):
        return value
    return None


def parse_body_fields(content_type: str, body: bytes) -> Mapping[str, Any]:
    """The top-level fields of a JSON object or form body; {} when it is neither.

    A malformed body is the upstream's business to refuse: the gateway only scores
    what it can read, so it never answers an error of its own for one.

    >>> parse_body_fields("application/x-www-form-urlencoded", b"email=a%40b.c&seats=2")
    {'email': 'a@b.c', 'seats': '2'}
    >>> parse_body_fields("application/json; charset=utf-8", b'{"seats": 2}')
    {'seats': 2}
    >>> parse_body_fields("application/json", b'{"seats": ')
    {}
    """
    media_type = content_type.partition(";")[0].strip().lower()
    if media_type == FORM_TYPE:
        try:
            return dict(parse_qsl(body.decode(), keep_blank_values=True))
        except UnicodeDecodeError:
            return {}
    if media_type == "application/json" or media_type.endswith("+json"):
        try:
            payload = decode_json(body)
        except InputError:
            return {}
        return payload if isinstance(payload, dict) else {}
    return {}


_INTEGER: Final = re.compile(r"[+-]?\d{1,19}")
_TRUE: Final = frozenset({"true", "1", "yes", "on"})  # "on": an HTML checkbox
_FALSE: Final = frozenset({"false", "0", "no", "off"})


def convert_attribute(value: Any, kind: AttributeType) -> Any:
    """``value`` as the type a route declares, or None when it does not convert.

    Form fields, headers and query values are always text, so a rule's
    ``attributes.seats > 9`` only sees a number when the route declares one.

    >>> convert_attribute("20", "number"), convert_attribute(" 2.5 ", "number")
    (20, 2.5)
    >>> convert_attribute("twenty", "number"), convert_attribute("nan", "number")
    (None, None)
    >>> convert_attribute("on", "boolean"), convert_attribute(0, "boolean")
    (True, False)
    >>> convert_attribute(1234, "string"), convert_attribute(True, "number")
    ('1234', None)
    """
    if kind == "string":
        return str(value).lower() if isinstance(value, bool) else str(value)
    if kind == "boolean":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        return True if text in _TRUE else False if text in _FALSE else None
    if isinstance(value, bool):  # JSON true is not the number 1 a rule means
        return None
    if isinstance(value, int | float):
        return value if math.isfinite(value) else None
    text = str(value).strip()
    if _INTEGER.fullmatch(text):
        number = int(text)
        return number if fits_64_bits(number) else None
    try:
        decimal = float(text)
    except ValueError:
        return None
    return decimal if math.isfinite(decimal) else None


class ValueReader:
    """Reads value sources (``body:``, ``header:``, ``cookie:``, ``path:``, ``query:``)
    of one request, parsing the body, cookies and query string at most once each."""

    def __init__(self, view: RequestView, path_params: Mapping[str, str]) -> None:
        self._view = view
        self._path_params = path_params
        self._parsed: dict[str, Mapping[str, Any]] = {}

    def _table(self, kind: str) -> Mapping[str, Any]:
        if kind not in self._parsed:
            view = self._view
            if kind == "body":
                self._parsed[kind] = {} if view.body is None else parse_body_fields(
                    view.headers.get("content-type", ""), view.body)
            elif kind == "cookie":
                self._parsed[kind] = cookie_parser(view.headers.get("cookie", ""))
            elif kind == "query":
                self._parsed[kind] = dict(parse_qsl(view.query_string, keep_blank_values=True))
            else:
                self._parsed[kind] = self._path_params
        return self._parsed[kind]

    def read(self, source: ValueSource | None) -> Any:
        if source is None:
            return None
        if source.kind == "header":
            value: Any = self._view.headers.get(source.name)
        else:
            value = _field_value(self._table(source.kind).get(source.name))
        if isinstance(value, str):
            value = capped(value)
        return None if value == "" else value

    def text(self, source: ValueSource | None) -> str | None:
        value = self.read(source)
        return None if value is None else str(value)


def request_headers(headers: Headers) -> dict[str, str]:
    """The headers as the engine reads them: names lower-case, repeats joined, each
    value cut to ``MAX_TEXT`` before any signal parses it."""
    merged: dict[str, str] = {}
    for name, value in headers.items():  # Headers.items() already lower-cases names
        merged[name] = capped(f"{merged[name]}, {value}" if name in merged else value)
    return merged
