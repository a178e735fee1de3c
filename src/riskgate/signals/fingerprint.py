"""Who the client's software is, beyond its address and the device id it chooses to send.

Two facts:

- the **client fingerprint**: the HTTP stack's own headers — which ones, in which order,
  and the values that identify a build (User-Agent, Accept-Language, client hints) —
  plus the TLS fingerprint an edge proxy passes. A script that rotates addresses and
  device ids keeps the header set it copied, so counting per fingerprint ties its
  requests together; people with the same browser share one too, so rules count
  *failures* per fingerprint, never volume alone.
- the **native app** a request comes from: the airline's own apps talk through
  okhttp (Android) or Alamofire / CFNetwork (iOS) with their product token in front
  and an app-version header. Those stacks are HTTP libraries, so without this a
  phone would look like a script.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

#: Headers a client's HTTP stack writes by itself (not the page's code): their names
#: in order describe the stack, and the values below describe the build.
_STACK: Final = frozenset({
    "user-agent", "accept", "accept-language", "accept-encoding", "connection",
    "upgrade-insecure-requests", "dnt", "te", "priority", "cache-control", "pragma",
    "sec-ch-ua", "sec-ch-ua-mobile", "sec-ch-ua-platform",
    "sec-fetch-site", "sec-fetch-mode", "sec-fetch-dest", "sec-fetch-user",
})
#: Values that name one build of one browser for one person's language settings.
#: Accept and sec-fetch-* change with the kind of request, so only their presence counts.
_VALUES: Final = ("user-agent", "accept-language", "accept-encoding", "sec-ch-ua",
                  "sec-ch-ua-platform", "sec-ch-ua-mobile")

#: HTTP stacks that native apps are built on.
_APP_STACKS: Final = frozenset({"okhttp", "alamofire", "cfnetwork", "dalvik", "darwin"})
#: Product tokens that belong to platforms, engines and stacks, never to an app.
_NOT_APPS: Final = _APP_STACKS | frozenset({
    "mozilla", "applewebkit", "safari", "chrome", "version", "mobile", "gecko", "android",
    "ios", "iphone", "build", "linux", "cpu", "os",
})
_PRODUCT: Final = re.compile(r"([A-Za-z][A-Za-z0-9._-]{0,40})/(\d[\w.]*)")
_APP_VERSION_HEADER: Final = re.compile(r"(?:^|-)(?:app|client)-?(?:version|build)$")


def client_fingerprint(headers: Mapping[str, str], tls: str | None) -> str:
    """The text a client fingerprint is keyed from (the caller keys it with the secret).

    >>> chrome = {"host": "a", "sec-ch-ua": '"Chromium";v="116"', "user-agent": "UA",
    ...           "accept": "text/html", "accept-language": "en-GB", "x-device-id": "d1"}
    >>> client_fingerprint(chrome, None)
    'sec-ch-ua,user-agent,accept,accept-language|UA|en-GB||"Chromium";v="116"|||'
    >>> client_fingerprint({**chrome, "x-device-id": "d2"}, None) == client_fingerprint(
    ...     chrome, None)
    True
    """
    names = ",".join(name for name in headers if name in _STACK)
    values = "|".join(headers.get(name, "") for name in _VALUES)
    return f"{names}|{values}|{tls or ''}"


def native_app(user_agent: str, headers: Mapping[str, str]) -> str | None:
    """The app's product name when the request comes from a native app, else None.

    A native app names itself in the User-Agent next to an app HTTP stack (okhttp,
    Alamofire, CFNetwork) and sends its version in a header (``X-App-Version``,
    ``X-Client-Build`` ...). A bare ``okhttp/4.12`` is a library, not an app.

    >>> native_app("RiskgateAir/5.3.0 (Android 14; Pixel 8) okhttp/4.12.0",
    ...            {"x-app-version": "5.3.0"})
    'RiskgateAir'
    >>> native_app("RiskgateAir/5.3.0 (com.riskgate.air; iOS 17.4) Alamofire/5.8.1",
    ...            {"app-version": "5.3.0"})
    'RiskgateAir'
    >>> native_app("okhttp/4.12.0", {"x-app-version": "1"}) is None
    True
    >>> native_app("RiskgateAir/5.3.0 okhttp/4.12.0", {}) is None
    True
    """
    # The substring test first: a regex search per header name of every request costs
    # more than all of this function's other work, and almost no name passes it.
    if not any(_APP_VERSION_HEADER.search(name) for name in headers
               if "version" in name or "build" in name):
        return None
    products = [name for name, _ in _PRODUCT.findall(user_agent)]
    if not any(name.lower() in _APP_STACKS for name in products):
        return None
    return next((name for name in products if name.lower() not in _NOT_APPS), None)
