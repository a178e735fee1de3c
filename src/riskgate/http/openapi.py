"""The OpenAPI 3.1 document of the decision API, feedback and health (CONTRACT §2).

Built in code rather than kept as a file, so the parts that change with the code
cannot drift from it: the event and outcome names, the text limit and the number
range are the very constants the handlers check, and the body limit is the served
config's. The rest is hand-written; ``tests/test_openapi.py`` holds it to what the
endpoints really do (the examples, and a schemathesis run over every operation).

Served at ``GET /openapi.json``, an internal path (:mod:`riskgate.http.internal`).

>>> doc = document(max_body_bytes=65536)
>>> doc["openapi"], sorted(doc["paths"])[:3]
('3.1.0', ['/healthz', '/metrics', '/openapi.json'])
>>> doc["components"]["schemas"]["DecideRequest"]["properties"]["event"]["enum"]
['registration', 'login', 'promotion', 'booking']
"""

from __future__ import annotations

from typing import Any, Final

from riskgate import __version__
from riskgate.decision.verdict import ACTIONS, MAX_SCORE
from riskgate.event.body import MAX_NUMBER, MIN_NUMBER
from riskgate.event.types import EVENTS, MAX_TEXT, OUTCOMES

JSON: Final = "application/json"
_SCHEMAS: Final = "#/components/schemas/"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _SCHEMAS + name}


def _json(schema: str, description: str, **examples: Any) -> dict[str, Any]:
    content: dict[str, Any] = {"schema": _ref(schema)}
    if examples:
        content["examples"] = {name: {"value": value} for name, value in examples.items()}
    return {"description": description, "content": {JSON: content}}


def _text(max_length: bool = True) -> dict[str, Any]:
    # Empty text and null both mean "not sent".
    schema: dict[str, Any] = {"type": ["string", "null"]}
    if max_length:
        schema["maxLength"] = MAX_TEXT
    return schema


def _schemas() -> dict[str, Any]:
    return {
        "DecideRequest": {
            "type": "object",
            "description": "One protected request, as the frontend saw it. Fields not listed "
                           "here are refused (400), so a misspelt field is never silently "
                           "ignored.",
            "required": ["event", "ip"],
            "additionalProperties": False,
            "properties": {
                "event": {"type": "string", "enum": list(EVENTS),
                          "description": "The protected flow (CONTRACT §1)."},
                "ip": {
                    "type": "string",
                    "description": "The end client's IPv4 or IPv6 address, as Python's "
                                   "`ipaddress` reads it: no zone id, no leading zeros. An "
                                   "IPv4-mapped IPv6 address counts as the IPv4 client.",
                    "anyOf": [{"format": "ipv4"}, {"format": "ipv6"}],
                },
                "account": {**_text(), "description": "The account the request is for "
                                                      "(a login name, an email)."},
                "device_id": {**_text(), "description": "The frontend's device identifier."},
                "user_agent": {**_text(), "description": "The client's User-Agent."},
                "headers": {
                    "type": ["object", "null"],
                    "description": "The end client's request headers; names are "
                                   "case-insensitive.",
                    "additionalProperties": {"type": "string", "maxLength": MAX_TEXT},
                },
                "attributes": {
                    "type": ["object", "null"],
                    "description": "Event details rules can read as `attributes.NAME` "
                                   "(promo code, flight, seats ...).",
                    "additionalProperties": _ref("AttributeValue"),
                },
            },
        },
        "AttributeValue": {
            "description": "A scalar. Numbers, however written (`20`, `2e1`), lie within "
                           "the 64-bit integer range, which every log line and counter "
                           "can hold.",
            "anyOf": [
                {"type": "string", "maxLength": MAX_TEXT},
                {"type": "number", "minimum": MIN_NUMBER, "maximum": MAX_NUMBER},
                {"type": "boolean"},
                {"type": "null"},
            ],
        },
        "Decision": {
            "type": "object",
            "required": ["request_id", "decision", "score", "reasons", "degraded"],
            "properties": {
                "request_id": {"type": "string", "minLength": 1,
                               "description": "Unique; name it in /v1/feedback."},
                "decision": {"type": "string", "enum": list(ACTIONS)},
                "score": {"type": "number", "minimum": 0, "maximum": MAX_SCORE},
                "reasons": {
                    "type": "array",
                    "description": "Every enforcing rule that matched; shadow rules are "
                                   "logged, never listed.",
                    "items": _ref("Reason"),
                },
                "degraded": {"type": "boolean",
                             "description": "A signal source (the store, GeoIP, the model) "
                                            "failed and the decision was made without it."},
            },
        },
        "Reason": {
            "type": "object",
            "required": ["rule", "score", "action"],
            "properties": {
                "rule": {"type": "string"},
                "score": {"type": "number"},
                "action": {"enum": [*ACTIONS, None]},
            },
        },
        "FeedbackRequest": {
            "type": "object",
            "required": ["request_id", "outcome"],
            "properties": {
                "request_id": {"type": "string", "minLength": 1,
                               "description": "The id /v1/decide answered."},
                "outcome": {"type": "string", "enum": list(OUTCOMES)},
            },
        },
        "Error": {
            "type": "object",
            "required": ["error", "field"],
            "properties": {
                "error": {"type": "string", "description": "What is wrong, for a person."},
                "field": {
                    "type": ["string", "null"],
                    "description": "The JSON path of the offending value (`event`, "
                                   "`headers.accept`), or null when the fault is the body "
                                   "as a whole (not JSON, too large, not declared as JSON).",
                },
            },
        },
        "Unavailable": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": {"type": "string"}},
        },
        "Health": {
            "type": "object",
            "required": ["alive"],
            "properties": {"alive": {"const": True}},
        },
        "Ready": {
            "type": "object",
            "required": ["ready", "rules_version", "rules_refused", "warnings"],
            "properties": {
                "ready": {"const": True},
                "rules_version": {"type": "string"},
                "rules_refused": {"type": "array", "items": {"type": "string"},
                                  "description": "Problems of the last rule set refused "
                                                 "since this one loaded."},
                "warnings": {"type": "array", "items": {"type": "string"}},
            },
        },
        "NotReady": {
            "type": "object",
            "required": ["ready", "reason"],
            "properties": {"ready": {"const": False}, "reason": {"type": "string"}},
        },
    }


_LOGIN: Final = {
    "event": "login",
    "ip": "198.51.100.7",
    "account": "alice@example.com",
    "device_id": "d-7f3a",
    "user_agent": "Mozilla/5.0 (X11; Linux x86_64; rv:126.0) Gecko/20100101 Firefox/126.0",
    "headers": {"accept-language": "en-GB,en;q=0.9"},
    "attributes": {"email": "alice@example.com"},
}
_BOOKING: Final = {"event": "booking", "ip": "2001:db8::7", "account": "alice@example.com",
                   "attributes": {"flight": "CA1234", "seats": 2, "promo_code": None}}


def _input_errors(description: str, **examples: Any) -> dict[str, Any]:
    return _json("Error", description, **examples)


def _decide(max_body_bytes: int) -> dict[str, Any]:
    return {
        "post": {
            "operationId": "decide",
            "summary": "Score one protected request: allow, challenge or block",
            "requestBody": {
                "required": True,
                "content": {JSON: {"schema": _ref("DecideRequest"),
                                   "examples": {"login": {"value": _LOGIN},
                                                "booking": {"value": _BOOKING}}}},
            },
            "responses": {
                "200": _json("Decision", "The decision.", allow={
                    "request_id": "6f1c0d2a9b8e4f3a5c7d1e2f", "decision": "allow",
                    "score": 0.0, "reasons": [], "degraded": False}),
                "400": _input_errors(
                    "The body is not the documented object; `field` names what is wrong.",
                    unknown_event={"error": "unknown event `checkin`; use one of "
                                            + ", ".join(EVENTS), "field": "event"},
                    not_json={"error": "the body is not valid JSON", "field": None}),
                "413": _input_errors(f"The body is larger than {max_body_bytes} bytes "
                                     "(`max_body_bytes`)."),
                "415": _input_errors("The body was not sent as `Content-Type: "
                                     "application/json` (or another `+json` type)."),
                "503": _json("Unavailable", "riskgate is still starting."),
            },
        },
    }


def _feedback(max_body_bytes: int) -> dict[str, Any]:
    return {
        "post": {
            "operationId": "feedback",
            "summary": "Tell riskgate how a decided request turned out",
            "description": "Outcomes feed the counters (failed logins) and the model's "
                           "labels. A request id takes one outcome. Other fields are ignored.",
            "requestBody": {
                "required": True,
                "content": {JSON: {"schema": _ref("FeedbackRequest"), "examples": {
                    "failed_login": {"value": {"request_id": "6f1c0d2a9b8e4f3a5c7d1e2f",
                                               "outcome": "login_failed"}}}}},
            },
            "responses": {
                "204": {"description": "Recorded."},
                "400": _input_errors("The body is not the documented object; `field` names "
                                     "what is wrong."),
                "404": _input_errors("No recent decision has this `request_id`.",
                                     unknown={"error": "unknown request_id: no recent "
                                                       "decision has this id",
                                              "field": "request_id"}),
                "409": _input_errors("This `request_id` already took an outcome."),
                "413": _input_errors(f"The body is larger than {max_body_bytes} bytes "
                                     "(`max_body_bytes`)."),
                "415": _input_errors("The body was not sent as `Content-Type: "
                                     "application/json` (or another `+json` type)."),
                "503": _json("Unavailable", "The store is unavailable, or riskgate is still "
                                            "starting; send the outcome again later."),
            },
        },
    }


def _get(operation_id: str, summary: str, responses: dict[str, Any]) -> dict[str, Any]:
    return {"get": {"operationId": operation_id, "summary": summary, "responses": responses}}


def document(max_body_bytes: int) -> dict[str, Any]:
    """The OpenAPI 3.1 document for a riskgate whose bodies are limited to ``max_body_bytes``."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "riskgate",
            "version": __version__,
            "summary": "Bot and scalper risk control for airline websites",
            "description": "The decision API for frontends that call riskgate instead of "
                           "proxying through it, the feedback that teaches it, and health. "
                           "Bad input never yields a 5xx: it is a 400, 413 or 415 whose "
                           "`field` names the offending value. In reverse-proxy mode "
                           "`/v1/*`, `/metrics` and this document answer only internal "
                           "peers; anyone else gets 404.",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "paths": {
            "/v1/decide": _decide(max_body_bytes),
            "/v1/feedback": _feedback(max_body_bytes),
            "/healthz": _get("healthz", "The process runs", {
                "200": _json("Health", "Alive.", alive={"alive": True})}),
            "/readyz": _get("readyz", "The store answers and a rule set is loaded", {
                "200": _json("Ready", "Ready to decide."),
                "503": _json("NotReady", "Not ready; `reason` says why.")}),
            "/metrics": _get("metrics", "Prometheus metrics", {
                "200": {"description": "Prometheus text exposition format.",
                        "content": {"text/plain": {"schema": {"type": "string"}}}}}),
            "/openapi.json": _get("openapi", "This document", {
                "200": {"description": "The OpenAPI 3.1 document.",
                        "content": {JSON: {"schema": {"type": "object"}}}}}),
        },
        "components": {"schemas": _schemas()},
    }
