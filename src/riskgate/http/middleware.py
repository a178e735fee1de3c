"""``RiskGateMiddleware``: riskgate around any ASGI app."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from riskgate.config import Config
from riskgate.decision.challenge import VERIFY_PATH, Challenges
from riskgate.engine.core import Engine
from riskgate.engine.implicit import ImplicitLabels
from riskgate.errors import InputError
from riskgate.event.body import read_body
from riskgate.event.types import new_request_id
from riskgate.http.challenge import MAX_REPLAY_BYTES, FormReplay, wants_html
from riskgate.http.gateway import Gateway, Scored
from riskgate.http.request import RequestView
from riskgate.service import NO_HOST_EFFECTS, HostEffects, Service


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

    ``RiskGateMiddleware(app, config=config)`` builds its own :class:`Service` when the
    app starts (the ASGI lifespan) and closes it when the app stops; pass ``engine``
    (and ``challenges``, and ``implicit`` for the model's labels from challenges) to
    share those of a running riskgate service instead.

    It leaves the host process alone unless asked: ``effects`` (a
    :class:`~riskgate.service.HostEffects`) opts in to freezing the garbage collector,
    a SIGHUP handler and the rule-file watcher, which ``riskgate serve`` takes because
    it owns its process and an application embedding riskgate may not want.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        config: Config,
        engine: Engine | None = None,
        challenges: Challenges | None = None,
        implicit: ImplicitLabels | None = None,
        effects: HostEffects = NO_HOST_EFFECTS,
    ) -> None:
        self.app = app
        self.config = config
        self.effects = effects
        self.gateway: Gateway | None = None
        if engine is not None:
            if challenges is None:
                challenges = Challenges(config.secret.encode(), engine.store,
                                        ttl=config.challenge_ttl)
            self.gateway = Gateway(config, engine, challenges, implicit)
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
        match = gateway.routes.match_view(view)
        if match is None:
            device = gateway.unscored_device(view)
            if await gateway.refuses_unscored(view, device):
                response = gateway.refusal(new_request_id(), headers.get("accept", ""))
                await response(scope, receive, send)
                return
            if device is None:
                await self.app(scope, receive, send)
                return
            # The sighting's store write runs beside the request: a page waits for the
            # app, not for Redis as well.
            sighting = asyncio.get_running_loop().create_task(gateway.note_unscored(device))
            try:
                await self.app(scope, receive, send)
            finally:
                await sighting
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
        accept = headers.get("accept", "")
        replay = None
        if scored.decision.verdict.decision == "challenge" and wants_html(accept):
            replay = await self._form_replay(view, receive)
        answer = gateway.respond(scored, accept, replay)
        if answer is not None:
            await answer(scope, receive, send)
            return
        counting: list[asyncio.Task[None]] = []

        def count(status: int) -> None:
            # Beside the rest of the answer: the client does not wait on the store, and
            # the count does not wait on what the app does after answering.
            outcome = gateway.login_outcome(scored, status)
            if outcome is not None:
                counting.append(asyncio.get_running_loop().create_task(
                    gateway.count_outcome(scored, outcome)))

        try:
            await self.app(scope, receive, self._allowed_send(gateway, scored, send, count))
        finally:
            for task in counting:
                await task

    async def _form_replay(self, view: RequestView, receive: Receive) -> FormReplay | None:
        """A challenged browser form, read now if scoring did not need its body: the
        request goes no further, so nothing else will read it."""
        content_type = view.headers.get("content-type", "")
        if not FormReplay.applies(view.method, content_type):
            return None
        body = view.body
        if body is None:
            try:
                body = await read_body(receive, view.headers.get("content-length"),
                                       MAX_REPLAY_BYTES)
            except InputError:
                return None  # too large to carry back: the page asks to submit again
        return FormReplay.of(view.method, view.path, view.query_string, content_type, body)

    def _allowed_send(self, gateway: Gateway, scored: Scored, send: Send,
                      started: Callable[[int], None]) -> Send:
        """``send`` with the decision's headers on the answer; ``started`` hears its status."""
        extra = [(name.encode(), value.encode()) for name, value in
                 gateway.decision_headers("allow", scored.decision.request_id).items()]

        async def allowed(message: Message) -> None:
            if message["type"] != "http.response.start":
                await send(message)
                return
            await send({**message, "headers": [*message.get("headers", []), *extra]})
            started(message["status"])

        return allowed

    def _owning_lifespan(self, receive: Receive) -> Receive:
        """Wrap the lifespan so this middleware builds and closes its own service."""
        service: Service | None = None

        async def lifespan_receive() -> Message:
            nonlocal service
            message = await receive()
            if message["type"] == "lifespan.startup":
                service = Service(self.config)
                await service.start(self.effects)
                self.gateway = Gateway(self.config, service.engine, service.challenges,
                                       service.implicit)
            elif message["type"] == "lifespan.shutdown" and service is not None:
                self.gateway = None
                await service.close()
            return message

        return lifespan_receive
