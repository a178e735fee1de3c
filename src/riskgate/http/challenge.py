"""The challenge as HTTP: the JSON or HTML interstitial answer, and the verify endpoint."""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Final
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from riskgate.decision.challenge import (
    BROWSER_HASHES_PER_SECOND,
    MAX_ANSWER_BYTES,
    Challenges,
    ClientBinding,
)
from riskgate.http.request import FORM_TYPE


def wants_html(accept: str) -> bool:
    """Whether an ``Accept`` header names ``text/html`` (with a non-zero quality).

    ``*/*`` alone does not: API clients and ``fetch`` send it and want JSON.

    >>> wants_html("text/html,application/xhtml+xml,*/*;q=0.8")
    True
    >>> wants_html("*/*"), wants_html("text/html;q=0"), wants_html("application/json")
    (False, False, False)
    """
    for item in accept.lower().split(","):
        media, *params = (part.strip() for part in item.split(";"))
        if media != "text/html":
            continue
        quality = next((p[2:] for p in params if p.startswith("q=")), "1")
        try:
            if float(quality) > 0:
                return True
        except ValueError:
            return True  # a malformed q is treated as the default, 1
    return False


#: The largest form an interstitial carries back: a booking or sign-in form is a few
#: hundred bytes; a bigger one (an upload) is asked to be submitted again instead.
MAX_REPLAY_BYTES: Final = 8192


@dataclass(frozen=True, slots=True)
class FormReplay:
    """A challenged HTML form post, for the interstitial to send again once solved.

    Without it a person who passed the check had to go back and submit again, and a
    form that does not survive "back" was lost. The fields go back only to the client
    that sent them, in the ``no-store`` answer to its own request, inside a JSON script
    element that is never read as HTML, and the page posts them to the same path.

    >>> FormReplay.of("POST", "/api/bookings", "x=1", "application/x-www-form-urlencoded",
    ...               b"flight=CA1234&seats=2")
    FormReplay(action='/api/bookings?x=1', fields=(('flight', 'CA1234'), ('seats', '2')))
    >>> FormReplay.of("POST", "/api/login", "", "application/json", b"{}") is None
    True
    """

    action: str
    fields: tuple[tuple[str, str], ...]

    @staticmethod
    def applies(method: str, content_type: str) -> bool:
        """Whether a request is a form post the page could send again."""
        return method == "POST" and content_type.partition(";")[0].strip().lower() == FORM_TYPE

    @classmethod
    def of(cls, method: str, path: str, query_string: str, content_type: str,
           body: bytes | None) -> FormReplay | None:
        """The replay of a request, or None when it is not a small urlencoded form post."""
        if not cls.applies(method, content_type) or body is None:
            return None
        if len(body) > MAX_REPLAY_BYTES:
            return None
        try:
            fields = parse_qsl(body.decode(), keep_blank_values=True)
        except UnicodeDecodeError:
            return None
        action = f"{path}?{query_string}" if query_string else path
        return cls(action, tuple(fields))

    def as_json(self) -> dict[str, object]:
        return {"action": self.action, "fields": [list(pair) for pair in self.fields]}


def challenge_response(
    challenges: Challenges, *, score: float, binding: ClientBinding, request_id: str, accept: str,
    status: int, now: float, method: str = "GET", fail_closed: bool = False,
    replay: FormReplay | None = None, watch: Callable[[str], None] | None = None,
) -> Response:
    """The challenge answer: an HTML interstitial when ``accept`` names text/html,
    else the contract's JSON; carries the X-RiskGate-* headers.

    ``method`` is the challenged request's method: after solving, the page reloads a
    GET or HEAD by itself and asks the person to submit anything else again.
    ``fail_closed`` is the route's choice while the store is down (see
    :meth:`Challenges.issue`). ``replay``: the challenged form, which the page then
    posts again by itself once the check passes. ``watch``: told the challenge's id, to
    learn later how it was answered; a watched challenge (and the pass it earns) names
    ``request_id``, which must then be a riskgate request id (hex).
    """
    challenge = challenges.issue(score=score, binding=binding, now=now,
                                 fail_closed=fail_closed,
                                 request_id=None if watch is None else request_id)
    if watch is not None:
        watch(str(challenge["id"]))
    headers = {
        "X-RiskGate-Decision": "challenge",
        "X-RiskGate-Request-Id": request_id,
        "Cache-Control": "no-store",
    }
    if not wants_html(accept):
        return JSONResponse({"decision": "challenge", "challenge": challenge},
                            status_code=status, headers=headers)  # fmt: skip
    page = _page()
    headers.update(page.headers)
    return HTMLResponse(page.render(challenge, request_id, method, replay), status_code=status,
                        headers=headers)  # fmt: skip


async def verify(
    challenges: Challenges, request: Request, binding: ClientBinding, now: float
) -> Response:
    """Answer a POST to the verify URL: 204 + pass cookie, or 403.

    A body that is not JSON at all is a 400 (as for the decision API); one larger
    than :data:`MAX_ANSWER_BYTES` a 413; every other refusal — wrong nonce, expired,
    reused, forged or someone else's id, missing fields — a 403 with
    ``{"error": reason}``.
    """
    headers = {"Cache-Control": "no-store"}
    if request.method != "POST":
        return JSONResponse({"error": "use POST"}, 405, {**headers, "Allow": "POST"})
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_ANSWER_BYTES:
            return JSONResponse({"error": f"answer larger than {MAX_ANSWER_BYTES} bytes"},
                                413, headers)  # fmt: skip
    verdict = await challenges.check(bytes(body), binding, now)
    if verdict.status != 204:
        error: dict[str, object] = {"error": verdict.reason}
        if verdict.status == 400:
            error["field"] = None  # the decision API's shape for a non-JSON body
        return JSONResponse(error, verdict.status, headers)
    response = Response(status_code=204, headers=headers)
    response.headers.append("Set-Cookie", challenges.pass_cookie_header(
        challenges.issue_pass(binding, now, verdict.origin),
        secure=request.url.scheme == "https"))
    return response


# -- the HTML interstitial ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Page:
    """The interstitial template with the CSP that allows exactly its inline code."""

    template: str
    headers: dict[str, str]

    def render(self, challenge: dict[str, object], request_id: str, method: str,
               replay: FormReplay | None = None) -> str:
        data = {**challenge, "method": method.upper(),
                "expected_hashes": 2 ** int(str(challenge["difficulty"])),
                "resubmit": None if replay is None else replay.as_json()}  # fmt: skip
        seconds = data["expected_hashes"] / BROWSER_HASHES_PER_SECOND
        return (
            self.template.replace("{{challenge_json}}", _script_json(data))
            .replace("{{estimate}}", html.escape(_estimate(seconds)))
            .replace("{{request_id}}", html.escape(request_id))
        )


def _script_json(data: object) -> str:
    """JSON safe inside a ``<script>`` element, where HTML entities are not decoded.

    >>> _script_json({"x": "</script><b>&"})
    '{"x": "\\\\u003c/script\\\\u003e\\\\u003cb\\\\u003e\\\\u0026"}'
    """
    text = json.dumps(data)
    for char in "<>&\u2028\u2029":
        text = text.replace(char, f"\\u{ord(char):04x}")
    return text


def _estimate(seconds: float) -> str:
    """A person's idea of ``seconds``.

    >>> _estimate(0.04), _estimate(2.6), _estimate(130)
    ('under a second', 'about 3 seconds', 'about 2 minutes')
    """
    if seconds < 1:
        return "under a second"
    if seconds < 60:
        whole = round(seconds)
        return f"about {whole} second{'s' if whole != 1 else ''}"
    minutes = round(seconds / 60)
    return f"about {minutes} minute{'s' if minutes != 1 else ''}"


def _csp_hash(source: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode()).digest()).decode() + "'"


@cache
def _page() -> _Page:
    # The inline script and style are static, so hashes (computed once) allow them and
    # nothing else; the per-challenge data sits in a JSON element no policy needs to allow.
    template = resources.files(__package__).joinpath("challenge.html").read_text("utf-8")
    scripts = re.findall(r"<script>(.*?)</script>", template, re.S)
    styles = re.findall(r"<style>(.*?)</style>", template, re.S)
    policy = "; ".join([
        "default-src 'none'",
        "script-src " + " ".join(map(_csp_hash, scripts)),
        "style-src " + " ".join(map(_csp_hash, styles)),
        "worker-src blob:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        # 'self', not 'none': a single-page app may show the page in its own iframe.
        "frame-ancestors 'self'",
    ])
    return _Page(template, {
        "Content-Security-Policy": policy,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    })
