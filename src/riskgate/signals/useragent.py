"""User-Agent to device facts: browser, OS, form factor, and whether a program sent it.

ua-parser (uap-core regexes on the Rust ``regex`` backend) names the browser, OS and
device. Its ``Spider`` device family only knows well-known crawlers, so a compact
token list of our own (see :data:`_BOT_TOKENS`) adds the kinds of clients it misses:
HTTP libraries, scanners, uptime monitors, feed readers, SEO tools, AI agents.
Parsing costs ~15-20 µs, so :class:`UAClassifier` keeps a bounded LRU cache of
results per distinct string; a warm lookup costs well under a microsecond.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Final, Literal

from ua_parser import Parser, load_lazy_builtins
from ua_parser.regex import Resolver as RegexResolver  # the Rust backend, or ImportError

from riskgate.event.types import capped

DeviceType = Literal["desktop", "mobile", "tablet", "bot", "other"]

# Tokens that only programs put in a User-Agent. Grouped by the kind of client so a new
# entry goes where it belongs; lookarounds keep real device and app names out
# (the "Cubot" phone, "MozacFetch" in Firefox's Android components, "checkout").
_BOT_TOKENS: Final = re.compile(
    r"""(?x)
    # self-declared robots and crawlers
      (?<!cu)bot(?![a-z]) | (?<![a-z])bot | robot | crawl | spider | scrap | slurp
    | archiv | index(?:er|ing) | harvest | extractor | collector | webcollage
    # a contact address or a URL: browsers never carry one
    | https?:// | www\. | \+http | mailto | [a-z0-9._-]@(?!calendar)[a-z] | \(at\)
    | collaborator
    # HTTP libraries, command-line clients, SDKs
    | (?<!lib)http(?!s?://) | curl | wget | python | java/ | \bjava(?:\ |$) | perl | ruby
    | php | golang | go-http | \bgo-cli | \bnode | okhttp | axios | requests | guzzle
    | (?<![a-z])sdk | (?<![a-z])client/ | library | postman | reqwest | ureq/ | urlgrabber | rclone
    | lftp | aria2 | reactornetty | jersey/ | ahc/ | minio | s3fs | undici | hutool
    | cryptoapi | azure- | microsoft-flow | igetter | getter/ | copier
    # scanners and security tools
    | scan(?!ner/) | probe | openvas | watchtowr | foregenix | clamav | hardenize
    | securityheaders | blackduck | nuclei | zgrab
    # monitoring, uptime, synthetic testing, performance audits
    | monitor | uptime | synthetic | check(?!out) | ping(?!er) | health | status | exporter
    | inspector | observatory | lighthouse | speedcurve | ptst/ | dareboost | catchpoint
    | site24x7 | \brigor\b | hotjar | onetrust | sitelock | monsido | insights
    # previews, validators, feed readers, SEO and marketing tools
    | preview | validat | verif | w3c | feed | rss(?!\d) | reader | reeder | newsblur
    | collapsify | (?<!mozac)fetch(?=er|/|\ |;|$) | (?<![a-z])fetch | favicon | sitemap
    | \bseo | audit | analy[sz] | capture | screenshot | render | marketgoo | brandwatch
    | newsnow | connector[/)] | classifier | resolver | optimizer | catalog | batch | leadgen
    | advisor | outbrain | sendgrid | safeassign
    # service-specific fetchers of large platforms
    | mediapartners | google[-\ ]?(?:other|weblight|ads|page|search\ console|web\ preview
        |physicalweb|messages|safety|cloud|certificates|adwords)
    | -google\b | cloudflare | ddg[-_]android | coccoc/
    # AI assistants and coding agents acting on the web
    | \bagent | externalagent | googleagent | claude- | ^cursor/ | manus-user | newsai | \bai/
    # generic software words
    | \btest | proxy | tool(?!bar) | download | survey | research | parser | searcher
    | search\ engine | httrack | camoufox | crosswalk | stagefright | yunjiankong
    | geckoversion | biglotron | wesee | pageburst | sparkler | dmbrowser | webpurify
    | mixnode | morningscore | mediahub | hydra\b | \bswcd\b | owler | readable
    """
)

# A domain name in a User-Agent marks a service announcing itself ("(scope3.com)",
# "Pixalate.com/1.0"). Inside a full browser string it is only trusted in a comment,
# because apps append their own name ("Miniature.io/6.0 ... QtWebEngine").
_DOMAIN: Final = re.compile(
    r"\b[a-z0-9-]+\.(?:com|net|org|io|ai|co|de|fr|ru|uk|jp|cn|info|app|dev|me|tech|xyz)\b"
)

# Mozilla/... glued after a comma or pipe is a tool pasting a browser string behind
# its own name ("Anonymous, Mozilla/5.0 ..."); apps put theirs before with a space.
_SPLICED_BROWSER: Final = re.compile(r"^[^(]*[,|]\s*mozilla/")

# Platform stacks whose bare product tokens belong to real apps, not tools.
_APP_STACKS: Final = re.compile(r"cfnetwork|darwin/|\bios/|amiga|googleapp|mozacfetch")

# (pattern on the lower-case UA, tool name). Checked in order; the first match wins.
_AUTOMATION: Final[tuple[tuple[re.Pattern[str], str], ...]] = (
    (re.compile(r"headlesschrome"), "headless-chrome"),
    (re.compile(r"phantomjs"), "phantomjs"),
    (re.compile(r"selenium|webdriver|chromedriver|geckodriver"), "selenium"),
    (re.compile(r"playwright"), "playwright"),
    (re.compile(r"puppeteer"), "puppeteer"),
    (re.compile(r"cypress/"), "cypress"),
    (re.compile(r"camoufox"), "camoufox"),
    (re.compile(r"\bsplash\b"), "splash"),
    (re.compile(r"electron/.*\bheadless|\bheadless"), "headless"),
)
_HEADLESS: Final = frozenset({"headless-chrome", "phantomjs", "headless", "splash"})

_BROWSER_FAMILIES: Final = frozenset(
    {"IE", "Chrome", "Chrome Mobile", "Firefox", "Safari", "Mobile Safari", "Edge", "Opera"}
)

_TABLET: Final = re.compile(r"ipad|tablet|kindle|silk/|playbook|\bsm-t\d|nexus (?:7|9|10)\b")
_MOBILE: Final = re.compile(r"mobile|iphone|ipod|android|phone|midp|opera mini|blackberry")
_DESKTOP_OS: Final = frozenset(
    {"Windows", "Mac OS X", "Linux", "Ubuntu", "Fedora", "Chrome OS", "FreeBSD", "OpenBSD"}
)


@dataclass(frozen=True, slots=True)
class UAInfo:
    """What a User-Agent string says about the client.

    ``automation`` names the automation tool the string gives away, or is None.
    """

    browser: str | None
    browser_major: int | None
    os: str | None
    device_type: DeviceType
    is_bot: bool
    is_headless: bool
    automation: str | None


def _major(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None


def _in_comment(ua: str, start: int) -> bool:
    return ua.count("(", 0, start) > ua.count(")", 0, start)


@functools.cache
def _shared_parser() -> Parser:
    # The Rust resolver without ua-parser's own cache: ours caches the whole
    # classification, not only the parse. Compiling its regexes takes ~0.2 s and
    # they never change, so every classifier in the process shares one.
    return Parser(RegexResolver(load_lazy_builtins()))


class UAClassifier:
    """Parses and classifies User-Agent strings, caching one result per distinct string.

    >>> ua = UAClassifier()
    >>> info = ua("Mozilla/5.0 (Windows NT 10.0; rv:109.0) Gecko/20100101 Firefox/117.0")
    >>> info.browser, info.browser_major, info.os, info.device_type, info.is_bot
    ('Firefox', 117, 'Windows', 'desktop', False)
    >>> ua("python-requests/2.31.0").is_bot
    True
    >>> ua("Mozilla/5.0 (X11; Linux x86_64) HeadlessChrome/119.0.0.0 Safari/537.36").automation
    'headless-chrome'
    """

    def __init__(self, cache_size: int = 8192) -> None:
        self._parser = _shared_parser()
        self._cached = functools.lru_cache(maxsize=cache_size)(self._classify)

    def __call__(self, user_agent: str) -> UAInfo:
        # Cut before the cache and the parser: every mode caps the strings it takes in,
        # and this keeps a megabyte agent from reaching the regexes or the cache anyway.
        return self._cached(capped(user_agent))

    def cache_info(self) -> functools._CacheInfo:
        """Hits, misses and size of the per-string cache."""
        return self._cached.cache_info()

    def _classify(self, ua: str) -> UAInfo:
        parsed = self._parser.parse(ua)
        low = ua.lower()
        family = parsed.user_agent.family if parsed.user_agent else None
        device = parsed.device.family if parsed.device else None
        os_family = parsed.os.family if parsed.os else None
        automation = next((name for pattern, name in _AUTOMATION if pattern.search(low)), None)
        is_bot = automation is not None or _looks_programmatic(ua, low, family, device)
        return UAInfo(
            browser=family,
            browser_major=_major(parsed.user_agent.major) if parsed.user_agent else None,
            os=os_family,
            device_type=_device_type(low, os_family, is_bot),
            is_bot=is_bot,
            is_headless=automation in _HEADLESS,
            automation=automation,
        )


def _looks_programmatic(ua: str, low: str, family: str | None, device: str | None) -> bool:
    # ua-parser's Spider family misfires on a few real browsers (an MSIE string with a
    # tracking blob, an Amiga browser); a mainstream browser family overrules it.
    if device == "Spider" and family not in _BROWSER_FAMILIES and not _APP_STACKS.search(low):
        return True
    if _BOT_TOKENS.search(low) or _SPLICED_BROWSER.search(low):
        return True
    for match in _DOMAIN.finditer(low):
        if family is None or _in_comment(low, match.start()):
            return True
    # A bare product token ("Zabbix", "Omnisend/1.0") names a program: browsers and
    # apps describe their platform in a comment.
    return "(" not in ua and family is None and device is None and not _APP_STACKS.search(low)


def _device_type(low: str, os_family: str | None, is_bot: bool) -> DeviceType:
    if is_bot:
        return "bot"
    if _TABLET.search(low) or ("android" in low and "mobile" not in low):
        return "tablet"
    if _MOBILE.search(low):
        return "mobile"
    if os_family in _DESKTOP_OS:
        return "desktop"
    return "other"
