"""The gateway modes (CONTRACT §3): score the protected routes of a request stream.

One :class:`Gateway` holds everything the three modes share — the route matcher, the
value extractor, the client-IP rule, the event builder and the decision-to-response
function — and three thin entry points use it:

- :class:`~riskgate.http.middleware.RiskGateMiddleware` wraps any ASGI app (a
  Starlette or FastAPI app, or :class:`~riskgate.http.proxy.ProxyApp` for the reverse
  proxy);
- :func:`riskgate.http.nginx.auth` answers nginx ``auth_request`` subrequests;
- :meth:`Gateway.verify` serves the challenge's verify URL for all of them.

No mode goes back to the ASGI scope after the :class:`RequestView` is built, so the
nginx mode (which sees the original request only through headers) scores exactly
like the others.
"""

from __future__ import annotations

import html
import logging
import time
from dataclasses import dataclass
from typing import Any, Final

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from riskgate.config import Config, Route, ValueSource, fail_action
from riskgate.decision.challenge import PASS_COOKIE, Challenges, ClientBinding, Pass
from riskgate.engine.core import Decision, Engine
from riskgate.engine.implicit import ImplicitLabels
from riskgate.errors import StoreError
from riskgate.event.types import IPAddress, Outcome, RiskEvent, capped, new_request_id
from riskgate.http.challenge import FormReplay, challenge_response, verify, wants_html
from riskgate.http.request import (
    RequestView,
    RouteMatch,
    RouteMatcher,
    TrustedProxies,
    ValueReader,
    convert_attribute,
    peer_host,
    request_headers,
)
from riskgate.observability import metrics
from riskgate.signals.keys import Keyer, ip_prefix

logger = logging.getLogger(__name__)

DECISION_HEADER: Final = "x-riskgate-decision"
REQUEST_ID_HEADER: Final = "x-riskgate-request-id"
#: Set on a nginx challenge answer so the challenge page can scale its difficulty.
SCORE_HEADER: Final = "x-riskgate-score"
_PASS_SOURCE: Final = ValueSource("cookie", PASS_COOKIE)


@dataclass(frozen=True, slots=True)
class Scored:
    """A decided request: the engine's decision and what it was made from."""

    decision: Decision
    event: RiskEvent
    binding: ClientBinding
    route: Route
    #: The scored request's method: the challenge page repeats a GET by itself.
    method: str
    #: The request whose challenge earned the pass this request carried, if named.
    pass_origin: str | None = None


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

    def __init__(self, config: Config, engine: Engine, challenges: Challenges,
                 implicit: ImplicitLabels | None = None) -> None:
        """``implicit``: where challenges and pass-holders' normal requests are reported,
        to label the model (None: nothing learns from them)."""
        self.config = config
        self.engine = engine
        self.challenges = challenges
        self.implicit = implicit
        self.routes = RouteMatcher(config.routes)
        self.proxies = TrustedProxies(config.trusted_proxies)
        self._key = Keyer(config.secret.encode())

    # -- requests to events ---------------------------------------------------------

    def client_ip(self, peer_host: str | None, headers: Headers) -> IPAddress:
        forwarded = ", ".join(headers.getlist("x-forwarded-for"))
        return self.proxies.client_ip(peer_host, forwarded)

    def device_key(self, reader: ValueReader) -> str | None:
        """The request's ``device.key``, keyed as the signal extractor keys it."""
        device_id = reader.text(self.config.device_id)
        return self._key("device", device_id) if device_id else None

    def binding(self, view: RequestView, reader: ValueReader) -> ClientBinding:
        """The pass binding, from the same facts the engine computes (riskgate.signals)."""
        return self.challenges.binding(self.device_key(reader), ip_prefix(view.client_ip),
                                       view.headers.get("user-agent"))

    def build_event(
        self, match: RouteMatch, view: RequestView, request_id: str, now: float
    ) -> tuple[RiskEvent, ClientBinding, Pass | None]:
        """The request's event, its client's binding and the valid pass it carries."""
        reader = ValueReader(view, match.path_params)
        binding = self.binding(view, reader)
        held = self.challenges.check_pass(reader.text(_PASS_SOURCE), binding, now)
        event = RiskEvent(
            request_id=request_id,
            event=match.route.event,
            ip=view.client_ip,
            time=now,
            account=reader.text(match.route.account),
            device_id=reader.text(self.config.device_id),
            user_agent=capped(view.headers.get("user-agent", "")) or None,
            headers=request_headers(view.headers),
            attributes=self.attributes(match.route, reader),
            challenge_passed=held is not None,
        )
        return event, binding, held

    @staticmethod
    def attributes(route: Route, reader: ValueReader) -> dict[str, Any]:
        """The route's attributes, each converted to its declared type; a value that
        does not convert is dropped (and counted), as if the request had not sent it."""
        found: dict[str, Any] = {}
        for name, source in route.attributes.items():
            value = reader.read(source)
            kind = route.attribute_types.get(name)
            if value is not None and kind is not None:
                value = convert_attribute(value, kind)
                if value is None:
                    metrics.ATTRIBUTES_DROPPED.labels(route.event, name).inc()
            if value is not None:
                found[name] = value
        return found

    async def score(self, match: RouteMatch, view: RequestView) -> Scored:
        now = time.time()
        event, binding, held = self.build_event(match, view, new_request_id(), now)
        fail_mode = fail_action(match.route.fail_mode or self.config.fail_mode)
        decision = await self.engine.decide(event, fail_mode=fail_mode)
        origin = None if held is None else held.origin
        if origin is not None and decision.normal and self.implicit is not None:
            self.implicit.followed_normally(origin)
        return Scored(decision, event, binding, match.route, view.method, origin)

    def unscored_device(self, view: RequestView) -> str | None:
        """The keyed device id of a request on an unscored route (a page, a search)."""
        return self.device_key(ValueReader(view, {}))

    async def note_unscored(self, device_key: str) -> None:
        """Record a device id seen on an unscored request."""
        await self.engine.note_device(device_key, time.time())

    async def refuses_unscored(self, view: RequestView, device_key: str | None) -> bool:
        """Whether a request on an unscored route is refused before it reaches the app.

        Runtime block entries apply here (CONTRACT §3: "lists still apply") for the
        client IP and the device id; allow entries change nothing, as nothing is scored.
        Unscored routes name no account source, so account entries apply on scored
        routes only; and no body is read, so a ``body:`` device id is not seen here.
        """
        lists = self.engine.runtime_lists
        if lists is None:
            return False
        entry = await lists.refuses(str(view.client_ip), device_key, None, time.time())
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

    def respond(self, scored: Scored, accept: str, replay: FormReplay | None = None
                ) -> Response | None:
        """The answer for a decision; None means: let the request through. ``replay``
        is the challenged form, for the interstitial to send again once solved."""
        verdict = scored.decision.verdict
        request_id = scored.decision.request_id
        if verdict.decision == "allow":
            return None
        if verdict.decision == "block":
            return self.refusal(request_id, accept)
        return self.challenge(verdict.score, scored.binding, request_id, accept, scored.method,
                              fail_closed=scored.route.challenge_closed, replay=replay)

    def subrequest_answer(self, scored: Scored) -> Response:
        """The nginx ``auth_request`` answer: 200 / 401 / 403 with the headers only, as
        nginx never shows an auth subrequest's body to the client."""
        verdict = scored.decision.verdict
        headers = self.decision_headers(verdict.decision, scored.decision.request_id)
        if verdict.decision == "challenge":
            headers[SCORE_HEADER] = f"{verdict.score:g}"
        status = {"allow": 200, "challenge": 401, "block": 403}[verdict.decision]
        return Response(status_code=status, headers=headers)

    def challenge(
        self, score: float, binding: ClientBinding, request_id: str, accept: str, method: str,
        *, fail_closed: bool, replay: FormReplay | None = None,
    ) -> Response:
        response = challenge_response(
            self.challenges, score=score, binding=binding, request_id=request_id, accept=accept,
            status=self.config.challenge_status, now=time.time(), method=method,
            fail_closed=fail_closed, replay=replay,
            watch=None if self.implicit is None else self.implicit.challenged)
        for name, value in self.decision_headers("challenge", request_id).items():
            response.headers[name] = value
        return response

    @staticmethod
    def login_outcome(scored: Scored, status: int) -> Outcome | None:
        """What the upstream's answer to a login says, as ``/v1/feedback`` would: a
        status in ``failure_statuses`` is ``login_failed``, a 2xx ``login_succeeded`` (so
        rules can weigh failures against logins that got in, not against ones riskgate
        refused). 5xx are the server's failures, never the user's, so an unreachable
        upstream does not lock accounts out."""
        if scored.route.event != "login" or status >= 500:
            return None
        if status in scored.route.failure_statuses:
            return "login_failed"
        if 200 <= status < 300:
            return "login_succeeded"
        return None

    async def count_outcome(self, scored: Scored, outcome: Outcome) -> None:
        """Count the login's outcome; its answer is on its way, so a store failure is logged,
        not raised."""
        try:
            await self.engine.record_outcome(scored.decision, outcome, time.time())
        except StoreError as exc:
            logger.warning("%s of %s not counted: %s", outcome, scored.decision.request_id, exc)

    # -- the challenge's verify URL, for every mode --------------------------------

    async def verify(self, request: Request) -> Response:
        """``POST`` to the verify URL: the client's answer to a challenge."""
        client = self.client_ip(peer_host(request), request.headers)
        view = RequestView(request.method, request.url.path, request.url.query,
                           request.headers, client)
        binding = self.binding(view, ValueReader(view, {}))
        proto = request.headers.get("x-forwarded-proto", "").strip().lower()
        peer = self.proxies.peer(peer_host(request))
        if proto in ("http", "https") and self.proxies.trusts(peer):
            # Behind a TLS-terminating proxy the pass cookie must still be `Secure`.
            request = Request({**request.scope, "scheme": proto}, request.receive)
        return await verify(self.challenges, request, binding, time.time())
