"""The examples in README and docs do what they show (issue 9): rule files load and pass
their own tests, test snippets pass against the shipped pack, and the configuration
error the README quotes is what riskgate prints."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from riskgate.rules import load_ruleset, run_rule_tests

REPO = Path(__file__).resolve().parents[1]
DOCS = {name: (REPO / name).read_text(encoding="utf-8")
        for name in ("README.md", "docs/rules.md", "docs/contract.md")}


def blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, re.S)


RULE_FILES = [(name, block) for name, text in DOCS.items() for block in blocks(text, "yaml")
              if "\nrules:" in f"\n{block}" and "\ntests:" in f"\n{block}"]
TEST_SNIPPETS = [(name, block) for name, text in DOCS.items() for block in blocks(text, "yaml")
                 if block.startswith("tests:")]


def write_folder(folder: Path, text: str) -> Path:
    folder.mkdir()
    (folder / "example.yaml").write_text(text, encoding="utf-8")
    # Lists an example names exist, empty: the example shows the shape, not the data.
    for listed in re.findall(r"file: ([\w./-]+)", text):
        (folder / listed).parent.mkdir(parents=True, exist_ok=True)
        (folder / listed).touch()
    return folder


@pytest.mark.parametrize(("doc", "block"), RULE_FILES)
def test_a_rule_file_shown_in_the_docs_loads_and_passes_its_tests(
    tmp_path: Path, doc: str, block: str
) -> None:
    results = run_rule_tests(load_ruleset(write_folder(tmp_path / "rules", block)))
    assert results and all(r.passed for r in results), [str(r) for r in results]


@pytest.mark.parametrize(("doc", "block"), TEST_SNIPPETS)
def test_a_rule_test_shown_in_the_docs_passes_against_the_shipped_pack(
    tmp_path: Path, doc: str, block: str
) -> None:
    folder = tmp_path / "rules"
    subprocess.run(["cp", "-r", str(REPO / "rules"), str(folder)], check=True)
    (folder / "zz-docs-example.yaml").write_text(block, encoding="utf-8")
    results = [r for r in run_rule_tests(load_ruleset(folder))
               if r.test.file.endswith("zz-docs-example.yaml")]
    assert results and all(r.passed for r in results), [str(r) for r in results]


def test_the_configuration_error_the_readme_quotes_is_what_riskgate_prints(
    tmp_path: Path
) -> None:
    shown = re.search(r"line and what to change:\n\n```\n(.*?)```", DOCS["README.md"], re.S)
    assert shown, "README lost its configuration error example"
    # The contract's example configuration with the README's typo in its first key.
    example = blocks(DOCS["docs/contract.md"], "yaml")[0].replace("upstream:", "upstrem:", 1)
    (tmp_path / "riskgate.yaml").write_text(example, encoding="utf-8")
    write_folder(tmp_path / "rules", "rules: []\n")
    env = {k: v for k, v in os.environ.items() if k != "RISKGATE_SECRET"}
    ran = subprocess.run([sys.executable, "-m", "riskgate", "serve", "--config", "riskgate.yaml"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
                         check=False)
    assert ran.returncode == 2
    assert ran.stderr.splitlines() == shown.group(1).splitlines()
