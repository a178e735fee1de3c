"""docs/signals.md documents exactly the signals in CATALOG."""

from __future__ import annotations

import ipaddress
import json
import re
from pathlib import Path

from riskgate.event.types import RiskEvent
from riskgate.signals.catalog import CATALOG
from riskgate.signals.docs import catalog_markdown
from riskgate.signals.extractor import SignalExtractor
from riskgate.signals.keys import Keyer

DOC = Path(__file__).parents[1] / "docs" / "signals.md"


def test_signals_doc_table_matches_catalog() -> None:
    text = DOC.read_text(encoding="utf-8")
    match = re.search(r"<!-- BEGIN CATALOG -->\n(.*?)\n<!-- END CATALOG -->", text, re.S)
    assert match, "docs/signals.md lost its <!-- BEGIN/END CATALOG --> markers"
    assert match[1] == catalog_markdown(), (
        "docs/signals.md is out of date with CATALOG; regenerate the table with "
        "`python -m riskgate.signals.docs`"
    )


def test_every_fact_of_a_request_is_in_catalog_with_its_type() -> None:
    facts = SignalExtractor(Keyer(b"k")).facts(
        RiskEvent("r", "registration", ipaddress.ip_address("198.51.100.7"), 0.0,
                  account="user0042@example.com", user_agent="curl/8.4.0",
                  attributes={"seats": 2})
    )
    python_types = {"str": str, "int": int, "float": float, "bool": bool}
    for name, value in facts.items():
        if name.startswith("attributes."):
            continue
        assert name in CATALOG, f"fact {name} is not in CATALOG"
        if value is not None:
            assert type(value) is python_types[CATALOG[name].type], name
    json.dumps(facts, allow_nan=False)
