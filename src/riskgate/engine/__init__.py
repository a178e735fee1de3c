"""The engine: runs the stages of one decision (signals, one store batch, model, rules,
verdict, log) and takes the outcomes that come back for it."""

from riskgate.engine.core import Decision, Engine

__all__ = ["Decision", "Engine"]
