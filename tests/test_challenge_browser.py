"""The interstitial in a real browser: Debian's Chromium, driven by Playwright.

A tiny Starlette app runs under a real uvicorn server; ``/book`` is challenged until
the browser holds a pass, ``/order`` challenges a form POST. Playwright drives the
system ``/usr/bin/chromium`` (``playwright install`` is never run).
"""

from __future__ import annotations

import html
import ipaddress
import re
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from urllib.parse import parse_qsl

import pytest
import uvicorn
from playwright.sync_api import Browser, Page, expect, sync_playwright
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from riskgate.decision.challenge import PASS_COOKIE, VERIFY_PATH, Challenges, ClientBinding, solve
from riskgate.http.challenge import FormReplay, challenge_response
from riskgate.http.challenge import verify as verify_answer
from riskgate.signals.keys import ip_prefix
from riskgate.store import MemoryStore

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WAIT_MS = 30_000
TEST_BITS = 10  # cheap enough for any CI machine, yet a real search (~1000 hashes)


def _binding(challenges: Challenges, request: Request) -> ClientBinding:
    assert request.client is not None
    prefix = ip_prefix(ipaddress.ip_address(request.client.host))
    return challenges.binding(request.headers.get("x-device-id"), prefix,
                              request.headers.get("user-agent"))  # fmt: skip


def make_app(challenges: Challenges, slow: Challenges) -> Starlette:
    """A protected site: a booking page, an order form, and the verify endpoint.

    ``/slow`` always challenges, at the default maximum difficulty; ``/lab`` is one
    whose own script is cut out, so tests can run its worker source alone.
    """

    def challenge(request: Request, using: Challenges, replay: FormReplay | None = None
                  ) -> Response:
        now = time.time()
        return challenge_response(
            using, score=60.0, binding=_binding(using, request), request_id="req-7f3a9c",
            accept=request.headers.get("accept", ""), status=403, now=now,
            method=request.method, replay=replay,
        )

    def guarded(request: Request, content: str) -> Response:
        binding = _binding(challenges, request)
        if challenges.pass_valid(request.cookies.get(PASS_COOKIE), binding, time.time()):
            return HTMLResponse(f"<h1>{content}</h1>")
        return challenge(request, challenges)

    async def book(request: Request) -> Response:
        return guarded(request, "booked")

    async def slow_page(request: Request) -> Response:
        return challenge(request, slow)

    async def lab(request: Request) -> Response:
        page = challenge(request, slow)
        body = re.sub(rb"<script>.*?</script>", b"", page.body, flags=re.S)
        return HTMLResponse(body, headers={"Content-Security-Policy":
                                           page.headers["content-security-policy"]})

    async def order(request: Request) -> Response:
        if request.method == "GET":
            return HTMLResponse('<form method="post"><button id="buy">Buy</button></form>')
        return guarded(request, "ordered")

    async def hold(request: Request) -> Response:
        # The form is carried back by the challenge page, as the gateway does.
        if request.method == "GET":
            return HTMLResponse('<form method="post"><input name="seats" value="2">'
                                '<input name="note" value="window &amp; &lt;aisle&gt; \'pls\'">'
                                '<button id="hold">Hold seats</button></form>')
        body = await request.body()
        form = dict(parse_qsl(body.decode()))
        binding = _binding(challenges, request)
        if challenges.pass_valid(request.cookies.get(PASS_COOKIE), binding, time.time()):
            note = html.escape(str(form["note"]))
            return HTMLResponse(f"<h1>held {form['seats']}</h1><p id='note'>{note}</p>")
        replay = FormReplay.of(request.method, request.url.path, request.url.query,
                               request.headers.get("content-type", ""), body)
        return challenge(request, challenges, replay)

    async def verify(request: Request) -> Response:
        return await verify_answer(challenges, request, _binding(challenges, request),
                                   time.time())

    return Starlette(routes=[
        Route("/book", book),
        Route("/slow", slow_page),
        Route("/lab", lab),
        Route("/order", order, methods=["GET", "POST"]),
        Route("/hold", hold, methods=["GET", "POST"]),
        Route(VERIFY_PATH, verify, methods=["POST"]),
    ])


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    store = MemoryStore()
    challenges = Challenges(b"browser-test-secret", store,
                            min_difficulty=TEST_BITS, max_difficulty=TEST_BITS)  # fmt: skip
    slow = Challenges(b"browser-test-secret", store, min_difficulty=18, max_difficulty=18)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # the server takes this socket: no race for the port
    config = uvicorn.Config(make_app(challenges, slow), log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("uvicorn did not start within 10 s", pytrace=False)
        time.sleep(0.01)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(10)
    sock.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} not found; install it with: apt-get install chromium",
                    pytrace=False)  # fmt: skip
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                              args=CHROMIUM_ARGS)  # fmt: skip
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()  # fresh cookies for every test
    context.set_default_timeout(WAIT_MS)
    opened = context.new_page()
    # Record what a single-page app would listen for, from before the page's own script.
    opened.add_init_script("""
        window.__riskgate = [];
        const note = text => window.__riskgate.push(text);
        window.addEventListener("message", e => note("message:" + e.data.type));
        document.addEventListener("riskgate:passed", e => note("event:" + e.detail.type));
    """)
    yield opened
    context.close()


def test_browser_solves_the_interstitial_and_the_reloaded_page_goes_through(
    site: str, page: Page
) -> None:
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda m: errors.append(m.text) if "Security Policy" in m.text else None)
    first = page.goto(f"{site}/book")
    assert first is not None and first.status == 403
    assert first.headers["x-riskgate-decision"] == "challenge"
    expect(page.locator("h1")).to_have_text("booked", timeout=WAIT_MS)
    cookie = next(c for c in page.context.cookies() if c["name"] == PASS_COOKIE)
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax" and not cookie["secure"]
    assert errors == []  # in particular no CSP violation for the inline script or worker


def test_a_challenged_form_is_sent_again_by_the_page_once_solved(
    site: str, page: Page
) -> None:
    page.goto(f"{site}/hold")
    page.click("#hold")
    expect(page.locator("h1")).to_have_text("held 2", timeout=WAIT_MS)
    expect(page.locator("#note")).to_have_text("window & <aisle> 'pls'")


def test_browser_asks_to_resubmit_a_challenged_form_and_the_resubmission_goes_through(
    site: str, page: Page
) -> None:
    page.goto(f"{site}/order")
    page.click("#buy")
    status = page.locator("#rg-status")
    expect(status).to_contain_text("go back and submit it again", timeout=WAIT_MS)
    # What a single-page app listens for (postMessage arrives asynchronously).
    expect(page.locator("html")).to_have_attribute("data-riskgate-solve-ms", re.compile(r"\d+"))
    page.wait_for_function("window.__riskgate.length === 2")
    assert sorted(page.evaluate("window.__riskgate")) == [
        "event:riskgate:challenge-passed", "message:riskgate:challenge-passed"]
    expect(page.locator("#rg-again")).to_be_focused()
    page.click("#rg-again")
    page.click("#buy")
    expect(page.locator("h1")).to_have_text("ordered", timeout=WAIT_MS)


# The worker run alone, from the page's own source: the same search, either hash path.
_RUN_WORKER = """([salt, difficulty, plainJs, budgetMs]) => new Promise((resolve, reject) => {
    const source = document.getElementById("rg-worker").textContent;
    const worker = new Worker(URL.createObjectURL(new Blob([source], {type: "text/javascript"})));
    const started = performance.now();
    let hashes = 0;
    const stop = () => { worker.terminate(); resolve({hashes, ms: budgetMs}); };
    const timer = setTimeout(stop, budgetMs);
    worker.onmessage = e => {
        hashes = e.data.hashes;
        if (e.data.nonce !== undefined) {
            clearTimeout(timer); worker.terminate();
            resolve({nonce: e.data.nonce, webCrypto: e.data.webCrypto, hashes,
                     ms: performance.now() - started});
        }
    };
    worker.onerror = e => reject(e.message);
    worker.postMessage({salt, difficulty, plainJs});
})"""


@pytest.mark.parametrize("plain_js", [False, True], ids=["web-crypto", "plain-js-fallback"])
@pytest.mark.parametrize("salt", ["Qx-3_salt", "ünïcødé✈"])
def test_browser_worker_finds_the_same_first_nonce_as_python(
    site: str, page: Page, plain_js: bool, salt: str
) -> None:
    page.goto(f"{site}/lab")
    found = page.evaluate(_RUN_WORKER, [salt, 12, plain_js, WAIT_MS])
    assert found["nonce"] == solve(salt, 12)
    assert found["webCrypto"] is not plain_js


def test_browser_hash_rates_are_reported_for_the_default_difficulties(
    site: str, page: Page, record_report: Callable[[str], None]
) -> None:
    # A figure, not a timed assertion: on a loaded 2-core machine the rate fell to 3k
    # hashes/s and a speed assertion only measured the neighbours. What must hold is
    # that both implementations hash; how fast is reported with every run.
    page.goto(f"{site}/lab")
    rates = {}
    for plain_js in (False, True):
        run = page.evaluate(_RUN_WORKER, ["rate", 64, plain_js, 2000])
        assert run["hashes"] > 0
        rates["plain-js" if plain_js else "web-crypto"] = run["hashes"] / run["ms"] * 1000
    expected = ", ".join(f"{bits} bits {2**bits / rates['web-crypto']:.2f} s"
                         for bits in (14, 16, 18))
    record_report(f"Chromium hash rates (hashes/s): web-crypto {rates['web-crypto']:,.0f}, "
                  f"plain-js {rates['plain-js']:,.0f}; expected solve time {expected}")


def test_browser_shows_a_readable_interstitial(site: str, page: Page) -> None:
    page.goto(f"{site}/slow")
    expect(page.locator("#rg-status")).to_have_text("Working on it…")
    page.wait_for_timeout(1500)  # let the progress bar move, as a person would see it
    page.screenshot(path="/tmp/riskgate-challenge.png", full_page=True)
    expect(page.locator("h1")).to_contain_text("checking your browser")
