"""The decision log as an analyst tailing it sees it: lines arrive promptly, none lost."""

from __future__ import annotations

import json
import time
from pathlib import Path

from riskgate.observability.decisionlog import DecisionLog


def test_a_line_reaches_the_file_while_the_gateway_runs(tmp_path: Path) -> None:
    path = tmp_path / "decisions.jsonl"
    log = DecisionLog(path)
    try:
        log.write({"request_id": "r1", "decision": "challenge"})
        deadline = time.monotonic() + 2.0
        while not path.read_bytes() and time.monotonic() < deadline:  # bounded: 2 s
            time.sleep(0.01)
        assert json.loads(path.read_bytes()) == {"request_id": "r1", "decision": "challenge"}
    finally:
        log.close()


def test_a_burst_is_written_whole_and_in_order(tmp_path: Path) -> None:
    path = tmp_path / "decisions.jsonl"
    log = DecisionLog(path)
    for n in range(5_000):
        log.write({"request_id": f"r{n}", "decision": "allow"})
    log.close()
    assert log.dropped == 0
    ids = [json.loads(line)["request_id"] for line in path.read_text().splitlines()]
    assert ids == [f"r{n}" for n in range(5_000)]
