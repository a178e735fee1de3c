"""Routes declare attribute types, and the gateway converts what a request sent (issue 9):
a form post sends ``seats=20`` as text, which no ``attributes.seats > 9`` ever matched."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route as StarletteRoute
from starlette.testclient import TestClient

from riskgate.config import ValueSource, load_config
from riskgate.errors import ConfigError
from riskgate.http.middleware import RiskGateMiddleware
from riskgate.observability import metrics

SECRET = "attribute-types-secret-0123456789"
SHIPPED_RULES = Path(__file__).resolve().parent.parent / "rules"
#: A real Chrome with the headers it always sends: the shipped rules score it 0.
CHROME = {
    "user-agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like "
                  "Gecko) Chrome/124.0.0.0 Safari/537.36",
    "accept-language": "en-GB,en;q=0.9",
    "accept-encoding": "gzip, deflate, br",
    "sec-fetch-site": "same-origin",
    "sec-fetch-mode": "navigate",
    "sec-fetch-dest": "document",
    "sec-ch-ua": '"Chromium";v="124", "Google Chrome";v="124", "Not-A.Brand";v="99"',
    "sec-ch-ua-platform": '"Windows"',
    "sec-ch-ua-mobile": "?0",
    "x-account-id": "alice",
}


def write_config(tmp_path: Path, attributes: str, store: str = "memory://") -> Path:
    path = tmp_path / "riskgate.yaml"
    path.write_text(f"""\
secret: {SECRET}
store: {store}
rules: {SHIPPED_RULES}
decision_log: null
watch_rules: false
routes:
  - path: /api/bookings
    method: POST
    event: booking
    account: header:X-Account-Id
    attributes: {attributes}
""")
    return path


def config_problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return [str(p) for p in caught.value.problems]


# --- the configuration --------------------------------------------------------------------


def test_the_contract_form_and_the_typed_form_both_load(tmp_path: Path) -> None:
    config = load_config(write_config(
        tmp_path, "{flight: body:flight, seats: {source: body:seats, type: number}}"))
    route = config.routes[0]
    assert route.attributes == {"flight": ValueSource("body", "flight"),
                                "seats": ValueSource("body", "seats")}
    assert route.attribute_types == {"seats": "number"}


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        ("{seats: {source: body:seats, type: integer}}",
         "11:52: routes[0].attributes.seats.type: unknown type `integer`; use one of number, "
         "string, boolean"),
        ("{seats: {type: number}}",
         "11:25: routes[0].attributes.seats needs `source:`, e.g. "
         "`{source: body:seats, type: number}`"),
        ("{seats: {source: body:seats, kind: number}}",
         "11:46: unknown key `kind` in routes[0].attributes.seats; known: source, type"),
    ],
)
def test_a_bad_attribute_type_names_the_line_and_the_fix(
    tmp_path: Path, attributes: str, expected: str
) -> None:
    path = write_config(tmp_path, attributes)
    assert config_problems(path) == [f"{path}:{expected}"]


# --- the gateway converts -----------------------------------------------------------------


async def _booked(_: Request) -> PlainTextResponse:
    return PlainTextResponse("held")


@pytest.fixture
def booking_site(store_uri: str, tmp_path: Path) -> Iterator[TestClient]:
    """The airline's booking endpoint behind the middleware, with the shipped rules and
    ``seats`` declared a number."""
    config = load_config(write_config(
        tmp_path, "{flight: body:flight, seats: {source: body:seats, type: number}}",
        store_uri))
    app = Starlette(routes=[StarletteRoute("/api/bookings", _booked, methods=["POST"])])
    with TestClient(RiskGateMiddleware(app, config=config)) as client:
        yield client


def post_form(client: TestClient, seats: str, flight: str = "CA1234") -> str:
    response = client.post("/api/bookings", data={"flight": flight, "seats": seats},
                           headers=CHROME)
    assert response.status_code in (200, 403), response.text
    return response.headers["x-riskgate-decision"]


def test_a_form_post_of_twenty_seats_fires_the_shipped_booking_rule(
    booking_site: TestClient,
) -> None:
    # Two flights: the same account holding one flight again is a rule of its own.
    assert (post_form(booking_site, "2"), post_form(booking_site, "20", "CA5678")) == (
        "allow", "challenge")


def test_a_json_string_of_twenty_seats_is_converted_too(booking_site: TestClient) -> None:
    response = booking_site.post("/api/bookings", json={"flight": "CA1234", "seats": "20"},
                                 headers=CHROME)
    assert response.headers["x-riskgate-decision"] == "challenge"


def test_a_value_that_does_not_convert_is_dropped_and_counted_never_a_server_error(
    booking_site: TestClient,
) -> None:
    def dropped() -> float:
        return metrics.REGISTRY.get_sample_value(
            "riskgate_attribute_conversion_failures_total",
            {"event": "booking", "attribute": "seats"}) or 0.0

    before = dropped()
    response = booking_site.post("/api/bookings", data={"flight": "CA1234", "seats": "twenty"},
                                 headers=CHROME)
    assert (response.status_code, response.text) == (200, "held")
    assert response.headers["x-riskgate-decision"] == "allow"
    assert dropped() == before + 1
