"""The signal reference table of ``docs/signals.md``, generated from the catalog."""

from __future__ import annotations

from riskgate.signals.catalog import CATALOG, SignalSpec


def catalog_markdown(catalog: dict[str, SignalSpec] = CATALOG) -> str:
    """The signal reference table of ``docs/signals.md``, generated from the catalog.

    >>> print(catalog_markdown({"ip": SignalSpec("ip", "str", "The IP.", "request")}))
    | name | type | meaning | source | cost |
    |---|---|---|---|---|
    | `ip` | str | The IP. | request | negligible |
    """
    rows = ["| name | type | meaning | source | cost |", "|---|---|---|---|---|"]
    for spec in catalog.values():
        cells = (f"`{spec.name}`", spec.type, spec.doc, spec.source, spec.cost)
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows)


if __name__ == "__main__":  # python -m riskgate.signals.docs: print the docs table
    print(catalog_markdown())
