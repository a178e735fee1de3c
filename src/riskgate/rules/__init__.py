"""Analyst rules (CONTRACT §5): YAML to specs, specs validated, valid specs compiled.

``model`` is the rule set as data and its evaluation; ``language`` checks and compiles
``when`` expressions; ``members`` holds list lookups and list-file parsers; ``regex``
runs analysts' regexes under RE2; ``loader`` reads and validates rule files; ``testing``
runs the ``tests:`` they carry; ``reload`` swaps sets while serving; ``runtime_lists``
holds the live block/allow entries; ``wiring`` names what a set needs from a config.
"""

from riskgate.rules.loader import load_ruleset
from riskgate.rules.model import CounterSpec, ListSpec, Rule, RuleSet
from riskgate.rules.testing import run_rule_tests

__all__ = ["CounterSpec", "ListSpec", "Rule", "RuleSet", "load_ruleset", "run_rule_tests"]
