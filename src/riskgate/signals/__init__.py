"""Request to facts: everything riskgate knows about one request, under stable names.

``catalog`` names every signal (a leaf: the rule language reads it without loading
GeoIP or config); ``keys`` keys identities; ``extractor`` turns a
:class:`~riskgate.event.types.RiskEvent` into facts from ``geoip``, ``useragent``,
``headers`` and ``identity``; ``history`` adds the store-backed ones in the decision's
batch; ``docs`` renders the catalog for ``docs/signals.md``.
"""
