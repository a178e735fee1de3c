"""The decision log as an analyst tailing it sees it: lines arrive promptly, none lost."""

from __future__ import annotations

import json
import time
from pathlib import Path

from riskgate.observability.decisionlog import DecisionLog


def lines_within(path: Path, count: int, seconds: float) -> list[dict[str, str]]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:  # bounded
        lines = path.read_bytes().splitlines()
        if len(lines) >= count:
            return [json.loads(line) for line in lines]
        time.sleep(0.005)
    raise AssertionError(f"fewer than {count} lines in {path} after {seconds} s")


def test_a_quiet_gateways_line_reaches_the_file_at_once(tmp_path: Path) -> None:
    path = tmp_path / "decisions.jsonl"
    log = DecisionLog(path)
    try:
        time.sleep(0.1)  # quiet: the writer has written nothing for a while
        log.write({"request_id": "r1", "decision": "challenge"})
        # At once: well before the writer's own 50 ms round would have come.
        assert lines_within(path, 1, 0.04) == [{"request_id": "r1", "decision": "challenge"}]
    finally:
        log.close()


def test_a_steady_stream_reaches_the_file_while_the_gateway_runs(tmp_path: Path) -> None:
    path = tmp_path / "decisions.jsonl"
    log = DecisionLog(path)
    try:
        for n in range(100):  # 500 lines a second: the writer drains on its timer
            log.write({"request_id": f"r{n}", "decision": "allow"})
            time.sleep(0.002)
        assert len(lines_within(path, 100, 1.0)) == 100
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
