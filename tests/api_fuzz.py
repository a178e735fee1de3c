"""A schemathesis run of riskgate's OpenAPI document against a running riskgate (issue 9).

Shared by ``tests/test_openapi.py`` (a short run inside ``make test``) and
``bench/openapi_fuzz.py`` (the full run of at least 2,000 cases). Every operation the
document lists is called with cases generated from it, both valid ones (which must
be accepted: 2xx, or the 404 of an unknown feedback id) and invalid ones (which must
be refused with a 4xx), and every answer is held to the document: a documented
status, content type and body schema, never a 5xx, and a ``field`` key in every 400.

Cases are generated deterministically (``derandomize``), so a run is repeatable and a
failure found once is found again.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_RULES = ROOT / "rules"
MAXMIND = ROOT.parent / "shared" / "data" / "maxmind" / "test-data"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance,
          positive_data_acceptance, negative_data_rejection]


CONFIG = SchemathesisConfig.from_dict({"checks": {
    # Valid data: a decision, a recorded outcome, the 404 of a feedback id no decision
    # made, the 409 of one that took an outcome already, or the 413 of a body over the
    # limit (no schema can say how large a body is; `_own_fault` holds each 413 to the
    # limit, and each case to the one status its ids call for).
    "positive_data_acceptance": {"expected-statuses": ["2xx", "404", "409", "413"]},
    # Invalid data: exactly the refusals the document lists for bad input.
    "negative_data_rejection": {"expected-statuses": ["400", "413", "415"]},
}})


def write_config(directory: Path, store: str) -> Path:
    """A ``riskgate serve`` config: the shipped rules, GeoIP's test databases, ``store``."""
    path = directory / "riskgate.yaml"
    geoip = ""
    if (MAXMIND / "GeoIP2-City-Test.mmdb").exists():
        geoip = (f"geoip:\n  city: {MAXMIND / 'GeoIP2-City-Test.mmdb'}\n"
                 f"  asn: {MAXMIND / 'GeoLite2-ASN-Test.mmdb'}\n"
                 f"  anonymous_ip: {MAXMIND / 'GeoIP2-Anonymous-IP-Test.mmdb'}\n")
    path.write_text(f"secret: openapi-fuzz-secret-0123456789\nstore: {store}\n"
                    f"rules: {SHIPPED_RULES}\ndecision_log: null\nwatch_rules: false\n{geoip}")
    return path


@dataclass
class FuzzResult:
    """What a run did: cases per operation and mode, statuses seen, and what failed."""

    cases: Counter[str] = field(default_factory=Counter)
    statuses: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.cases.values())

    def summary(self) -> str:
        per = ", ".join(f"{name} {count}" for name, count in sorted(self.cases.items()))
        return (f"schemathesis: {self.total} cases in {self.seconds:.0f} s, "
                f"{len(self.failures)} failures ({per})")


def _own_fault(response: requests.Response, max_body_bytes: int,
               expect: int | None) -> str | None:
    """What the contract promises beyond the document's schemas, or None when kept.

    ``expect`` is the status a valid request must get, when the case says which.
    """
    status = response.status_code
    if status == 400:
        try:
            body: Any = response.json()
        except json.JSONDecodeError:
            return f"400 whose body is not JSON: {response.text[:200]!r}"
        if not isinstance(body, dict) or "field" not in body:
            return f"400 without `field`: {response.text[:200]!r}"
    sent = len(response.request.body or b"")
    if status == 413:
        if sent <= max_body_bytes:
            return f"413 for a body of {sent} bytes, within max_body_bytes ({max_body_bytes})"
        return None
    if expect is not None and status != expect:
        return f"answered {status} where {expect} was due: {response.text[:200]!r}"
    return None


def fuzz(base_url: str, examples: int, max_body_bytes: int = 65536) -> FuzzResult:
    """Up to ``examples`` generated cases per operation and mode against ``base_url``.

    Operations whose input space is tiny (a GET without parameters) run fewer: there
    are only so many distinct requests to make.
    """
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json", config=CONFIG)
    result = FuzzResult()
    session = requests.Session()
    started = time.monotonic()
    for operation in (found.ok() for found in schema.get_all_operations()):
        # A request without a body or parameters has nothing to make invalid.
        takes_input = bool(operation.body) or any(True for _ in operation.iter_parameters())
        modes = [GenerationMode.POSITIVE, *([GenerationMode.NEGATIVE] if takes_input else [])]
        for mode in modes:
            _fuzz(operation, mode, base_url, session, examples, max_body_bytes, result)
        # Schemathesis's coverage cases: the boundaries of every constraint (4096 and
        # 4097 characters, the ends of the number range), each required field missing,
        # each value of the wrong type, ...: the inputs random generation rarely hits.
        for case in schema.iter_coverage_cases(operation, generation_modes=modes,
                                               generation_config=schema.config.generation):
            _check(case, f"{operation.label} coverage", base_url, session, max_body_bytes,
                   result)
    result.seconds = time.monotonic() - started
    return result


def _check(case: schemathesis.Case, label: str, base_url: str, session: requests.Session,
           max_body_bytes: int, result: FuzzResult, expect: int | None = None) -> None:
    response = case.call(base_url=base_url, session=session, timeout=10)
    result.cases[label] += 1
    result.statuses[f"{label} {response.status_code}"] += 1
    fault = _own_fault(response, max_body_bytes, expect)
    try:
        case.validate_response(response, checks=CHECKS)
    except (AssertionError, FailureGroup) as error:
        fault = fault or str(error)
    if fault is not None:
        curl = case.as_curl_command()
        result.failures.append(f"{label}: {fault[:2000]}\n  request: {curl[:2000]}")


#: Whose request id a valid feedback case names: a random one no decision answered
#: (404), one just answered by /v1/decide (204), or one that already took an outcome
#: (409). Without the last two, fuzzing would only ever meet the 404.
_FEEDBACK_IDS = ("random", "fresh", "answered")


def _fuzz(operation: Any, mode: GenerationMode, base_url: str, session: requests.Session,
          examples: int, max_body_bytes: int, result: FuzzResult) -> None:
    label = f"{operation.label} {mode.value}"
    answered: list[str] = []

    def name_a_decision(case: schemathesis.Case, whose: str) -> int:
        if whose == "random":
            return 404
        # A new body, never an edit of the generated one: schemathesis may share it with
        # other cases (the document's own examples).
        if whose == "answered" and answered:
            case.body = {**case.body, "request_id": answered[-1]}
            return 409
        decision = session.post(f"{base_url}/v1/decide", timeout=10,
                                json={"event": "login", "ip": "198.51.100.7"})
        answered.append(decision.json()["request_id"])
        case.body = {**case.body, "request_id": answered[-1]}
        return 204

    @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
              phases=[Phase.explicit, Phase.generate], print_blob=False,
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode),
           whose=st.sampled_from(_FEEDBACK_IDS))
    def run(case: schemathesis.Case, whose: str) -> None:
        expect = None
        if mode is GenerationMode.POSITIVE and operation.path == "/v1/decide":
            expect = 200
        elif mode is GenerationMode.POSITIVE and operation.path == "/v1/feedback":
            expect = name_a_decision(case, whose)
        _check(case, label, base_url, session, max_body_bytes, result, expect)

    run()
