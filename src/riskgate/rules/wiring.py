"""What a rule set needs from a configuration, and warnings where the config does not supply it.

A rule that reads ``ip.country`` without a GeoIP City database, or compares a form
field with a number, loads and then never fires, silently. Both are only visible with
the config next to the rules: ``riskgate rules check --config`` prints these warnings,
and a running service lists them on ``/readyz``. They are warnings, not errors: a rule
pack is shared between deployments, and one of them may lack a database on purpose.

>>> import pathlib, tempfile
>>> from riskgate.config import Config
>>> from riskgate.rules.loader import load_ruleset
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> _ = (folder / "geo.yaml").write_text("rules: [{id: geo, when: ip.country == 'RU', score: 5}]")
>>> for w in config_warnings(load_ruleset(folder), Config(secret="0123456789abcdef")):
...     print(w.message.split("; ")[1])
the config sets no `geoip.city`, so it is always null and this rule never matches on it
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from riskgate.config import Config
from riskgate.errors import Problem
from riskgate.rules.language import compared_with_numbers, references
from riskgate.rules.model import Rule, RuleSet
from riskgate.signals.catalog import CATALOG

_GEOIP: Final = ("geoip.city", "geoip.asn", "geoip.anonymous_ip", "geoip.isp",
                 "geoip.connection_type")
#: A catalog ``source`` -> the config keys any one of which supplies it. Sources not
#: here need nothing configured; a test checks that every source is in one table or
#: the other, so a new source is a decision rather than a silent gap.
SOURCE_NEEDS: Final[dict[str, tuple[str, ...]]] = {
    "MaxMind": _GEOIP,
    "MaxMind City/Country": ("geoip.city",),
    "MaxMind City": ("geoip.city",),
    "store + MaxMind City": ("geoip.city",),
    "MaxMind ASN or ISP": ("geoip.asn", "geoip.isp"),
    "MaxMind ISP": ("geoip.isp",),
    "MaxMind Anonymous-IP": ("geoip.anonymous_ip",),
    "MaxMind Connection-Type": ("geoip.connection_type",),
    # The bundled ASN list needs an ASN to look up; a CIDR list or the hosting flag do not.
    "MaxMind Anonymous-IP + datacenter lists": ("geoip.anonymous_ip",
                                                "signals.datacenter_networks",
                                                "geoip.asn", "geoip.isp"),
}
NEEDS_NOTHING: Final = frozenset({
    "request", "pass cookie", "ua-parser", "ua-parser + riskgate",
    "ua-parser Spider + riskgate tokens", "UA, sec-ch-ua", "UA, headers", "store",
    "disposable-domain list",  # the disposable-email-domains package is the default
    "headers",
})
#: Signals whose need is not their source's (most `headers` signals need no config).
SIGNAL_NEEDS: Final[dict[str, tuple[str, ...]]] = {
    "device.tls_fingerprint": ("signals.tls_fingerprint_header",),
}
_HINTS: Final[dict[str, str]] = {
    "geoip": "add the database under `geoip:` (docs/geoip.md)",
    "signals": "set it under `signals:` (README, configuration)",
}


def configured(config: Config) -> frozenset[str]:
    """The optional source keys the config sets, as ``geoip.city``, ``signals.X``."""
    keys = {f"geoip.{name}" for name in config.geoip.__dataclass_fields__
            if getattr(config.geoip, name) is not None}
    keys |= {f"signals.{name}" for name in config.signals.__dataclass_fields__
             if getattr(config.signals, name)}
    return frozenset(keys)


def needs(signal: str) -> tuple[str, ...]:
    """The config keys any one of which supplies ``signal``; () when none is needed."""
    if signal in SIGNAL_NEEDS:
        return SIGNAL_NEEDS[signal]
    spec = CATALOG.get(signal)
    return SOURCE_NEEDS.get(spec.source, ()) if spec is not None else ()


def config_warnings(ruleset: RuleSet, config: Config) -> list[Problem]:
    """Every rule that reads a source ``config`` does not configure, or compares an
    attribute with a number where a route delivers it as text; located at the rule."""
    have = configured(config)
    found: list[Problem] = []
    for rule in ruleset.rules:
        if rule.expr is None:
            continue
        for signal in sorted(references(rule.expr)):
            keys = needs(signal)
            if keys and not have.intersection(keys):
                wanted = " or ".join(f"`{k}`" for k in keys)
                found.append(_warning(rule, (
                    f"reads `{signal}`, which comes from {CATALOG[signal].source}; the config "
                    f"sets no {wanted}, so it is always null and this rule never matches on "
                    f"it; {_HINTS[keys[0].split('.')[0]]}")))
        for name in sorted(compared_with_numbers(rule.expr)):
            found.extend(_warning(rule, text) for text in _text_attributes(rule, name, config))
    return found


def _text_attributes(rule: Rule, name: str, config: Config) -> Iterator[str]:
    for index, route in enumerate(config.routes):
        source = route.attributes.get(name)
        if source is None or route.event not in rule.events:
            continue
        kind = route.attribute_types.get(name)
        where = f"routes[{index}] ({route.method} {route.path})"
        fix = f"declare `{name}: {{source: {source}, type: number}}` in the route"
        if kind == "string":
            yield (f"compares `attributes.{name}` with a number, but {where} declares it a "
                   f"string, so the comparison is never true there; {fix} or compare with "
                   "a quoted string")
        elif kind is None:
            how = ("a form post sends it as text" if source.kind == "body"
                   else f"a {source.kind} value is always text")
            yield (f"compares `attributes.{name}` with a number, but {where} reads it from "
                   f"`{source}` without a type: {how}, which never compares with a number; "
                   f"{fix}")


def _warning(rule: Rule, message: str) -> Problem:
    return Problem(rule.file, rule.line, None, message, rule.id, "warning")
