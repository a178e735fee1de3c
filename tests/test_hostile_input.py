"""Input sized to hurt: request heads bounded by the server, strings capped everywhere.

Issue 14: a 1 MB User-Agent used to freeze every request of a proxy-mode gateway,
``/healthz`` included, for about a second.
"""

from __future__ import annotations

import contextlib
import json
import socket
from pathlib import Path

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from riskgate.config import Config
from riskgate.config import Route as ProtectedRoute
from riskgate.event.types import MAX_TEXT
from riskgate.http import RiskGateMiddleware
from support import riskgate_serve, write_rules

SECRET = "hostile-input-secret-0123"
RULES = "rules:\n  - {id: never, when: 'False', score: 1}\n"


def raw_get(base: str, path: str, headers: dict[str, str]) -> int:
    """GET over a plain socket (no client library trims or refuses what we send);
    the status the server answers."""
    host, port = base.removeprefix("http://").split(":")
    head = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n" + "".join(
        f"{name}: {value}\r\n" for name, value in headers.items()) + "\r\n"
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        # The server may answer and close before all of a huge head is sent.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            conn.sendall(head.encode())
        status_line = conn.makefile("rb").readline()
    return int(status_line.split()[1])


def test_a_megabyte_of_headers_is_a_431_and_the_gateway_keeps_answering(
    tmp_path: Path
) -> None:
    config = tmp_path / "riskgate.yaml"
    config.write_text(f"secret: {SECRET}\nrules: {write_rules(tmp_path, RULES)}\n"
                      "decision_log: null\nmax_header_bytes: 16384\n")
    with riskgate_serve(config) as (base, _):
        assert raw_get(base, "/healthz", {"User-Agent": "x" * 2**20}) == 431
        assert raw_get(base, "/healthz", {"User-Agent": "x" * 20_000}) == 431
        assert raw_get(base, "/healthz", {"User-Agent": "x" * 12_000}) == 200
        assert httpx.get(f"{base}/healthz", timeout=5).json() == {"alive": True}


def test_the_gateway_cuts_a_huge_user_agent_before_any_signal_reads_it(
    tmp_path: Path
) -> None:
    async def book(_: Request) -> PlainTextResponse:
        return PlainTextResponse("booked", status_code=201)

    log = tmp_path / "decisions.jsonl"
    config = Config(secret=SECRET, rules=write_rules(tmp_path, RULES), decision_log=str(log),
                    routes=(ProtectedRoute("/api/bookings", "POST", "booking"),))
    app = RiskGateMiddleware(Starlette(routes=[Route("/api/bookings", book, methods=["POST"])]),
                             config=config)
    agent = "Mozilla/5.0 " + "A" * 200_000
    with TestClient(app) as client:
        booked = client.post("/api/bookings", headers={"user-agent": agent,
                                                       "accept-language": "en" * 50_000})
    assert (booked.status_code, booked.headers["x-riskgate-decision"]) == (201, "allow")
    [line] = [json.loads(raw) for raw in log.read_text().splitlines()]
    assert line["facts"]["device.user_agent"] == agent[:MAX_TEXT]
