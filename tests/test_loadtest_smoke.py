"""``make loadtest``'s harness, briefly: every persona runs, through riskgate and Redis, and
the airline's records decide the last line (the full run is not part of the suite)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LAST_LINE = re.compile(
    r"bots_goal_success=\d+\.\d\d% humans_challenged=\d+\.\d\d% humans_blocked=\d+\.\d\d%")


def test_a_short_seeded_run_reports_every_persona_and_the_last_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "loadtest" / "run.py"), "--seed", "5", "--duration", "15",
         "--out", str(tmp_path)], capture_output=True, text=True, timeout=150, check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    summary = (tmp_path / "summary.txt").read_text().splitlines()
    rows = {line.split()[0] for line in summary[3:-1]}
    assert {"leisure_desktop", "app_cgnat", "household", "stuffer_device_rotating",
            "scalper_spread", "registration_farm"} <= rows
    assert len(rows) == 19
    assert LAST_LINE.fullmatch(summary[-1])
    # The gateway really decided: the decision log and locust's reports were written.
    assert (tmp_path / "decisions.jsonl").stat().st_size > 0
    assert (tmp_path / "report.html").exists()
    assert (tmp_path / "locust_stats.csv").exists()
