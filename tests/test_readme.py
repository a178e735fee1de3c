"""The README's examples do what it shows: its "Try it" block runs as written, with bash
and curl, against ``riskgate serve`` on the configuration ``make run`` uses."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from support import riskgate_serve

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")


def shell_block(after_heading: str) -> str:
    """The first ```sh block under ``after_heading``."""
    section = README.split(f"\n{after_heading}\n", 1)[1]
    match = re.search(r"```sh\n(.*?)```", section, re.S)
    assert match, f"README has no sh block under {after_heading!r}"
    return match.group(1)


def shown(block: str) -> list[str]:
    """What the block says each command prints: its ``# `` comment lines, in order."""
    return [line[2:] for line in block.splitlines() if line.startswith("# ")]


def matches(expected: str, printed: str) -> bool:
    """``…`` in the README stands for any value (a request id)."""
    pattern = ".+?".join(re.escape(part) for part in expected.split("…"))
    return re.fullmatch(pattern, printed) is not None


def test_the_try_it_block_prints_what_the_readme_shows(tmp_path: Path) -> None:
    block = shell_block("## Try it")
    with riskgate_serve(REPO / "examples" / "demo.yaml",
                        env={"RISKGATE_SECRET": "readme-test-secret-0123456",
                             "RISKGATE_ADMIN_TOKEN": "readme-admin-token-0123456"}
                        ) as (base, _):
        script = block.replace("localhost:8000", base.removeprefix("http://"))
        ran = subprocess.run(["bash", "-e", "-c", script], cwd=tmp_path, capture_output=True,
                             text=True, timeout=60, check=False)
    assert ran.returncode == 0, ran.stderr
    printed = [line for line in ran.stdout.splitlines() if line.strip()]
    expected = shown(block)
    assert len(printed) == len(expected), printed
    for want, got in zip(expected, printed, strict=True):
        assert matches(want, got), f"README shows {want}\nbut it printed {got}"
