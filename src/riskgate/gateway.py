"""The gateway modes (CONTRACT §3): score the protected routes of a request stream.

One :class:`Gateway` holds everything the three modes share — the route matcher, the
value extractor, the client-IP rule, the event builder and the decision-to-response
function — and three thin entry points use it:

- :class:`RiskGateMiddleware` wraps any ASGI app (a Starlette or FastAPI app, or
  :class:`riskgate.proxy.ProxyApp` for the reverse proxy);
- :meth:`Gateway.auth` answers nginx ``auth_request`` subrequests at ``GET /v1/auth``;
- :meth:`Gateway.verify` serves the challenge's verify URL for all of them.

No mode goes back to the ASGI scope after the :class:`RequestView` is built, so the
nginx mode (which sees the original request only through headers) scores exactly
like the others.
"""

from __future__ import annotations

import contextlib
import html
import ipaddress
import json
import logging
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qsl, unquote, urlsplit

from starlette.datastructures import Headers
from starlette.requests import Request, cookie_parser
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from riskgate.challenge import PASS_COOKIE, VERIFY_PATH, Challenges, ClientBinding, wants_html
from riskgate.config import Config, IPNetwork, Route, ValueSource
from riskgate.engine import Decision, Engine
from riskgate.errors import InputError, StoreError
from riskgate.event import (
    IPAddress,
    RiskEvent,
    encodable,
    fits_64_bits,
    new_request_id,
    parse_ip,
    read_body,
)
from riskgate.signals import Keyer, ip_prefix

logger = logging.getLogger(__name__)

DECISION_HEADER: Final = "x-riskgate-decision"
REQUEST_ID_HEADER: Final = "x-riskgate-request-id"
#: Set on a nginx challenge answer so the challenge page can scale its difficulty.
SCORE_HEADER: Final = "x-riskgate-score"
AUTH_PATH: Final = "/v1/auth"
AUTH_CHALLENGE_PATH: Final = "/v1/auth/challenge"

#: Stands in for a peer with no IP address (a Unix socket): one shared, untrusted client.
_UNKNOWN_PEER: Final = ipaddress.IPv4Address("0.0.0.0")
_BODY_SOURCES: Final = "body"
_FORM_TYPE: Final = "application/x-www-form-urlencoded"
_PASS_SOURCE: Final = ValueSource("cookie", PASS_COOKIE)
_REQUEST_ID = re.compile(r"[0-9a-f]{8,64}")


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


@dataclass(frozen=True, slots=True)
class Scored:
    """A decided request: the engine's decision and what it was made from."""

    decision: Decision
    event: RiskEvent
    binding: ClientBinding
    route: Route
    #: The scored request's method: the challenge page repeats a GET by itself.
    method: str


class RouteMatcher:
    """Config routes compiled once; ``match`` finds the first for a method and path.

    >>> from riskgate.config import Route
    >>> m = RouteMatcher([Route("/api/promotions/{code}/redeem", "POST", "promotion")])
    >>> m.match("POST", "/api/promotions/SPRING/redeem").path_params
    {'code': 'SPRING'}
    >>> m.match("GET", "/api/promotions/SPRING/redeem") is None
    True
    """

    def __init__(self, routes: Iterable[Route]) -> None:
        self._routes = [(route, compile_path(route.path)[0]) for route in routes]

    def match(self, method: str, path: str) -> RouteMatch | None:
        for route, pattern in self._routes:
            if route.method != method:
                continue
            found = pattern.match(path)
            if found is not None:
                return RouteMatch(route, found.groupdict())
        return None


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
    if media_type == _FORM_TYPE:
        try:
            return dict(parse_qsl(body.decode(), keep_blank_values=True))
        except UnicodeDecodeError:
            return {}
    if media_type == "application/json" or media_type.endswith("+json"):
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError):
            return {}
        return payload if isinstance(payload, dict) else {}
    return {}


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
        return None if value == "" else value

    def text(self, source: ValueSource | None) -> str | None:
        value = self.read(source)
        return None if value is None else str(value)


def _request_headers(headers: Headers) -> dict[str, str]:
    merged: dict[str, str] = {}
    for name, value in headers.items():  # Headers.items() already lower-cases names
        merged[name] = f"{merged[name]}, {value}" if name in merged else value
    return merged


_BLOCK_PAGE: Final = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Request refused</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:36em;margin:4em auto;padding:0 1em}}
code{{background:#eee;padding:.1em .3em}}</style></head>
<body><main><h1>We could not accept this request</h1>
<p>Our automated protection refused it. If you think this is a mistake, contact
support and quote this reference:</p>
<p><code id="reference">{request_id}</code></p></main></body></html>
"""


class Gateway:
    """Everything the three gateway modes share; built once per process."""

    def __init__(self, config: Config, engine: Engine, challenges: Challenges) -> None:
        self.config = config
        self.engine = engine
        self.challenges = challenges
        self.routes = RouteMatcher(config.routes)
        self.proxies = TrustedProxies(config.trusted_proxies)
        self._key = Keyer(config.secret.encode())

    # -- requests to events ---------------------------------------------------------

    def client_ip(self, peer_host: str | None, headers: Headers) -> IPAddress:
        forwarded = ", ".join(headers.getlist("x-forwarded-for"))
        return self.proxies.client_ip(peer_host, forwarded)

    def device_key(self, reader: ValueReader) -> str | None:
        """The request's ``device.key``, keyed as signals.py keys it."""
        device_id = reader.text(self.config.device_id)
        return self._key("device", device_id) if device_id else None

    def binding(self, view: RequestView, reader: ValueReader) -> ClientBinding:
        """The pass binding, from the same facts the engine computes (signals.py)."""
        return self.challenges.binding(self.device_key(reader), ip_prefix(view.client_ip),
                                       view.headers.get("user-agent"))

    def build_event(
        self, match: RouteMatch, view: RequestView, request_id: str, now: float
    ) -> tuple[RiskEvent, ClientBinding]:
        reader = ValueReader(view, match.path_params)
        binding = self.binding(view, reader)
        attributes = {name: reader.read(source) for name, source in match.route.attributes.items()}
        event = RiskEvent(
            request_id=request_id,
            event=match.route.event,
            ip=view.client_ip,
            time=now,
            account=reader.text(match.route.account),
            device_id=reader.text(self.config.device_id),
            user_agent=view.headers.get("user-agent") or None,
            headers=_request_headers(view.headers),
            attributes={name: value for name, value in attributes.items() if value is not None},
            challenge_passed=self.challenges.pass_valid(reader.text(_PASS_SOURCE), binding, now),
        )
        return event, binding

    async def score(self, match: RouteMatch, view: RequestView) -> Scored:
        now = time.time()
        event, binding = self.build_event(match, view, new_request_id(), now)
        decision = await self.engine.decide(event)
        return Scored(decision, event, binding, match.route, view.method)

    async def refuses_unscored(self, view: RequestView) -> bool:
        """Whether a request on an unscored route is refused before it reaches the app.

        Runtime block entries apply here (CONTRACT §3: "lists still apply") for the
        client IP and the device id; allow entries change nothing, as nothing is scored.
        Unscored routes name no account source, so account entries apply on scored
        routes only; and no body is read, so a ``body:`` device id is not seen here.
        """
        lists = self.engine.runtime_lists
        if lists is None:
            return False
        entry = await lists.refuses(str(view.client_ip), self.device_key(ValueReader(view, {})),
                                    None, time.time())
        return entry is not None

    # -- decisions to responses -----------------------------------------------------

    @staticmethod
    def decision_headers(decision: str, request_id: str) -> dict[str, str]:
        return {DECISION_HEADER: decision, REQUEST_ID_HEADER: request_id}

    def refusal(self, request_id: str, accept: str) -> Response:
        """The 403 of a block: a page naming the request id, or JSON for API clients."""
        headers = self.decision_headers("block", request_id)
        if wants_html(accept):
            page = _BLOCK_PAGE.format(request_id=html.escape(request_id))
            return HTMLResponse(page, status_code=403, headers=headers)
        return JSONResponse({"decision": "block", "request_id": request_id,
                             "error": "the request was refused; quote request_id to support"},
                            status_code=403, headers=headers)

    def respond(self, scored: Scored, accept: str, *, subrequest: bool = False) -> Response | None:
        """The answer for a decision; None means: let the request through.

        ``subrequest`` is nginx ``auth_request``: 200 / 401 / 403 with the headers
        only, as nginx never shows an auth subrequest's body to the client.
        """
        verdict = scored.decision.verdict
        request_id = scored.decision.request_id
        headers = self.decision_headers(verdict.decision, request_id)
        if subrequest:
            if verdict.decision == "challenge":
                headers[SCORE_HEADER] = f"{verdict.score:g}"
            status = {"allow": 200, "challenge": 401, "block": 403}[verdict.decision]
            return Response(status_code=status, headers=headers)
        if verdict.decision == "allow":
            return None
        if verdict.decision == "block":
            return self.refusal(request_id, accept)
        return self._challenge(verdict.score, scored.binding, request_id, accept,
                               scored.method)

    def _challenge(
        self, score: float, binding: ClientBinding, request_id: str, accept: str, method: str
    ) -> Response:
        response = self.challenges.challenge_response(
            score=score, binding=binding, request_id=request_id, accept=accept,
            status=self.config.challenge_status, now=time.time(), method=method)
        for name, value in self.decision_headers("challenge", request_id).items():
            response.headers[name] = value
        return response

    async def record_failed_login(self, scored: Scored, status: int) -> None:
        """Count a refused login as ``/v1/feedback`` would; 5xx are the server's failures,
        never the user's, so an unreachable upstream does not lock accounts out."""
        if scored.route.event != "login" or status >= 500:
            return
        if status not in scored.route.failure_statuses:
            return
        try:
            await self.engine.record_outcome(scored.decision, "login_failed", time.time())
        except StoreError as exc:
            logger.warning("failed login of %s not counted: %s", scored.decision.request_id, exc)

    # -- the nginx and challenge endpoints ------------------------------------------

    def _original_view(self, request: Request) -> RequestView:
        """The original request of an nginx subrequest, from the headers nginx sets.

        ``X-Real-IP`` counts only from a trusted peer, as X-Forwarded-For does.
        """
        peer = self.proxies.peer(request.client.host if request.client else None)
        client = self.client_ip(None if request.client is None else request.client.host,
                                request.headers)
        real_ip = request.headers.get("x-real-ip")
        if real_ip and self.proxies.trusts(peer):
            with contextlib.suppress(ValueError):
                client = parse_ip(real_ip.strip())
        uri = urlsplit(request.headers.get("x-original-uri", "/"))
        return RequestView(
            method=request.headers.get("x-original-method", "GET").upper(),
            path=unquote(uri.path) or "/",
            query_string=uri.query,
            headers=request.headers,
            client_ip=client,
        )

    async def auth(self, request: Request) -> Response:
        """``GET /v1/auth`` for nginx ``auth_request``: 200 allow (or unscored),
        401 challenge, 403 block. Body sources yield nothing: nginx sends no body."""
        view = self._original_view(request)
        match = self.routes.match(view.method, view.path)
        if match is None:
            if await self.refuses_unscored(view):
                return self.refusal(new_request_id(), "")
            return Response(status_code=200)
        response = self.respond(await self.score(match, view), "", subrequest=True)
        assert response is not None  # subrequest answers are never None
        return response

    async def auth_challenge(self, request: Request) -> Response:
        """``GET /v1/auth/challenge``: the challenge page nginx serves on a 401.

        nginx passes the score and request id of the decision it was given; they are
        believed only from a trusted peer (they only tune the difficulty).
        """
        view = self._original_view(request)
        trusted = self.proxies.trusts(self.proxies.peer(
            request.client.host if request.client else None))
        score = 0.0
        request_id = request.headers.get(REQUEST_ID_HEADER, "")
        if trusted:
            with contextlib.suppress(ValueError):
                score = float(request.headers.get(SCORE_HEADER, "0"))
        if not trusted or not _REQUEST_ID.fullmatch(request_id):
            request_id = new_request_id()
        binding = self.binding(view, ValueReader(view, {}))
        return self._challenge(score, binding, request_id, request.headers.get("accept", ""),
                               view.method)

    async def verify(self, request: Request) -> Response:
        """``POST`` to the verify URL: the client's answer to a challenge."""
        client = self.client_ip(request.client.host if request.client else None,
                                request.headers)
        view = RequestView(request.method, request.url.path, request.url.query,
                           request.headers, client)
        binding = self.binding(view, ValueReader(view, {}))
        proto = request.headers.get("x-forwarded-proto", "").strip().lower()
        peer = self.proxies.peer(request.client.host if request.client else None)
        if proto in ("http", "https") and self.proxies.trusts(peer):
            # Behind a TLS-terminating proxy the pass cookie must still be `Secure`.
            request = Request({**request.scope, "scheme": proto}, request.receive)
        return await self.challenges.verify(request, binding, time.time())


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the app the body already read, then the real stream."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


class RiskGateMiddleware:
    """Scores the configured routes of the wrapped ASGI app.

    ``RiskGateMiddleware(app, config=config)`` builds its own engine when the app
    starts (the ASGI lifespan) and closes it when the app stops; pass ``engine`` (and
    ``challenges``) to share those of a running riskgate service instead.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        config: Config,
        engine: Engine | None = None,
        challenges: Challenges | None = None,
    ) -> None:
        self.app = app
        self.config = config
        self.gateway: Gateway | None = None
        if engine is not None:
            if challenges is None:
                challenges = Challenges(config.secret.encode(), engine.store)
            self.gateway = Gateway(config, engine, challenges)
        self._limit = config.max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan" and self.gateway is None:
            await self.app(scope, self._owning_lifespan(receive), send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        gateway = self.gateway
        if gateway is None:
            response: Response = JSONResponse(
                {"error": "riskgate is starting: its engine is built in the app's lifespan"},
                status_code=503)
            await response(scope, receive, send)
            return
        headers = Headers(scope=scope)
        peer = scope.get("client")
        view = RequestView(
            method=scope["method"],
            path=scope["path"],
            query_string=scope.get("query_string", b"").decode("latin-1"),
            headers=headers,
            client_ip=gateway.client_ip(peer[0] if peer else None, headers),
        )
        if view.method == "POST" and view.path == VERIFY_PATH:
            await (await gateway.verify(Request(scope, receive)))(scope, receive, send)
            return
        match = gateway.routes.match(view.method, view.path)
        if match is None:
            if await gateway.refuses_unscored(view):
                response = gateway.refusal(new_request_id(), headers.get("accept", ""))
                await response(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        if match.needs_body:
            try:
                body = await read_body(receive, headers.get("content-length"), self._limit)
            except InputError as error:
                response = JSONResponse({"error": error.message, "field": error.field},
                                        status_code=error.status)
                await response(scope, receive, send)
                return
            view = RequestView(view.method, view.path, view.query_string, headers,
                               view.client_ip, body)
            receive = _replay(body, receive)
        scored = await gateway.score(match, view)
        answer = gateway.respond(scored, headers.get("accept", ""))
        if answer is not None:
            await answer(scope, receive, send)
            return
        await self.app(scope, receive, self._allowed_send(gateway, scored, send))

    def _allowed_send(self, gateway: Gateway, scored: Scored, send: Send) -> Send:
        extra = [(name.encode(), value.encode()) for name, value in
                 gateway.decision_headers("allow", scored.decision.request_id).items()]

        async def allowed(message: Message) -> None:
            if message["type"] != "http.response.start":
                await send(message)
                return
            message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)
            # Counted once the answer is on its way, so the client does not wait on it.
            await gateway.record_failed_login(scored, message["status"])

        return allowed

    def _owning_lifespan(self, receive: Receive) -> Receive:
        """Wrap the lifespan so this middleware builds and closes its own engine."""
        service: Any = None

        async def lifespan_receive() -> Message:
            nonlocal service
            message = await receive()
            if message["type"] == "lifespan.startup":
                from riskgate.asgi import Service  # asgi imports this module

                service = Service(self.config)
                await service.start()
                self.gateway = Gateway(self.config, service.engine, service.challenges)
            elif message["type"] == "lifespan.shutdown" and service is not None:
                self.gateway = None
                await service.close()
            return message

        return lifespan_receive
