"""The HTTP adapter, and the only package that imports Starlette.

``app`` assembles the service's routes; ``decide`` is the decision API; ``gateway`` is
the core the three gateway modes share, over ``request`` (what it reads of a request);
``middleware``, ``proxy`` and ``nginx`` are those modes; ``challenge`` serves the
proof-of-work pages; ``admin`` the admin endpoints; ``demo`` the demo airline.

What an application embedding riskgate needs is importable from here::

    from riskgate.http import HostEffects, RiskGateMiddleware, create_app
"""

from riskgate.http.app import create_app
from riskgate.http.middleware import RiskGateMiddleware
from riskgate.service import HostEffects

__all__ = ["HostEffects", "RiskGateMiddleware", "create_app"]
