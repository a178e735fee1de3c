"""riskgate: a bot and scalper risk-control gateway for airline websites."""

__version__ = "0.1.0"
