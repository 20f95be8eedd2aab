"""The facade's interactive docs work with no internet: /docs (Swagger UI) and /redoc (ReDoc)
load everything from the facade itself, under a CSP that names no other host, and list every
operation of /openapi.json in a real headless Chromium. GET / sends a browser to /docs.

The browser tests skip when /usr/bin/chromium or /usr/bin/chromedriver is missing (Debian
packages chromium, chromium-driver), unless FLEXDB_TEST_REQUIRE_BROWSER=1 makes that a failure."""
from __future__ import annotations

import os
import re
import tempfile
from urllib.parse import urljoin, urlsplit

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import WebDriverWait

from .conftest import running_facade

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
# No network of its own (updates, sync, QUIC probes): all it asks for is what a page asks for.
BROWSER_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                 # Wide enough for ReDoc's side menu (it is hidden on narrow screens).
                 "--window-size=1400,1000"]
WAIT_S = 60
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
# Sources a docs page's CSP may name: this origin, and never any host.
ALLOWED_SOURCES = {"'self'", "'none'", "'unsafe-inline'", "data:", "blob:"}


@pytest.fixture(scope="module")
def facade(server):
    with running_facade(server.url) as proc:
        yield proc


@pytest.fixture(scope="module")
def spec(facade) -> dict:
    resp = httpx.get(facade.base + "/openapi.json", timeout=30)  # no credentials
    assert resp.status_code == 200, resp.text
    return resp.json()


def operations(spec: dict) -> dict[tuple[str, str], str]:
    """(METHOD, path) -> operationId of every operation of the document."""
    return {(method.upper(), path): op["operationId"]
            for path, item in spec["paths"].items()
            for method, op in item.items() if method in HTTP_METHODS}


@pytest.fixture(scope="module")
def browser():
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        reason = (f"no headless browser: {' and '.join(missing)} missing "
                  "(Debian packages chromium, chromium-driver)")
        if os.environ.get("FLEXDB_TEST_REQUIRE_BROWSER") == "1":
            pytest.fail(f"{reason}, and FLEXDB_TEST_REQUIRE_BROWSER=1 requires it")
        pytest.skip(reason)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in BROWSER_FLAGS:
        options.add_argument(flag)
    # The console (CSP violations, failed loads) is read through the browser log.
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    with tempfile.TemporaryDirectory(prefix="flexdb-chromium-") as profile:
        options.add_argument(f"--user-data-dir={profile}")
        # The driver's path is given: Selenium Manager (which would download one) is not used.
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        try:
            driver.set_page_load_timeout(WAIT_S)
            driver.set_script_timeout(WAIT_S)
            yield driver
        finally:
            driver.quit()


def open_page(driver, url: str, count_js: str, expected: int) -> None:
    """Load `url` and wait (bounded) until `count_js` counts `expected` rendered operations."""
    driver.get_log("browser")  # drop what earlier pages logged
    driver.get(url)
    try:
        WebDriverWait(driver, WAIT_S).until(lambda d: d.execute_script(count_js) >= expected)
    except TimeoutException:
        pass  # the comparison that follows says what is missing


def assert_offline(driver, base: str) -> None:
    """Nothing on the console about a refused or failed load, and every resource the page
    asked for came from `base`, the facade (data: and blob: URLs are made in the page)."""
    problems = [e for e in driver.get_log("browser")
                if e["level"] == "SEVERE" or "Content Security Policy" in e["message"]]
    assert problems == []
    requested = driver.execute_script(
        "return performance.getEntriesByType('navigation').concat("
        "performance.getEntriesByType('resource')).map(e => e.name)")
    assert requested, "the page reported no resource at all"
    elsewhere = [url for url in requested if urlsplit(url).scheme not in ("data", "blob")
                 and "{0.scheme}://{0.netloc}".format(urlsplit(url)) != base]
    assert elsewhere == []


# ---------------------------------------------------------------- in a browser

SWAGGER_OPERATIONS = """return Array.from(document.querySelectorAll('.opblock')).map(b =>
    [b.querySelector('.opblock-summary-method').textContent.trim().toUpperCase(),
     b.querySelector('.opblock-summary-path').getAttribute('data-path')])"""
REDOC_OPERATIONS = """return Array.from(document.querySelectorAll(
    '[data-section-id^="operation/"]')).map(s => s.getAttribute('data-section-id'))"""


def test_swagger_ui_lists_every_operation_offline(browser, facade, spec):
    base = facade.base  # http://127.0.0.1:port
    expected = operations(spec)
    open_page(browser, base + "/docs",
              "return document.querySelectorAll('.opblock').length", len(expected))
    shown = [tuple(op) for op in browser.execute_script(SWAGGER_OPERATIONS)]
    assert sorted(shown) == sorted(expected)
    assert_offline(browser, base)


def test_redoc_lists_every_operation_offline(browser, facade, spec):
    base = facade.base  # http://127.0.0.1:port
    expected = operations(spec)
    open_page(browser, base + "/redoc",
              "return document.querySelectorAll('[data-section-id^=\"operation/\"]').length",
              len(expected))
    shown = browser.execute_script(REDOC_OPERATIONS)
    assert sorted(shown) == sorted(f"operation/{op}" for op in expected.values())
    # The side menu lists them too (and shows Redocly's attribution, whose logo would come
    # from a CDN: the page has been rendered whole).
    assert browser.execute_script(
        "return document.querySelectorAll('li[data-item-id*=\"/operation/\"]').length") \
        == len(expected)
    assert_offline(browser, base)


# ---------------------------------------------------------------- over plain HTTP

def csp_sources(csp: str) -> dict[str, list[str]]:
    directives = {}
    for directive in filter(None, (d.strip() for d in csp.split(";"))):
        name, *sources = directive.split()
        directives[name] = sources
    return directives


def test_root_redirects_a_browser_to_the_docs(facade):
    with httpx.Client(base_url=facade.base, timeout=30) as client:  # no credentials
        resp = client.get("/")
        assert resp.status_code in (302, 303, 307)
        assert urljoin(facade.base + "/", resp.headers["location"]) == facade.base + "/docs"
        docs = client.get("/", follow_redirects=True)
        assert docs.status_code == 200
        assert docs.headers["content-type"].startswith("text/html")


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_page_is_self_contained(facade, page):
    with httpx.Client(base_url=facade.base, timeout=30) as client:  # no credentials
        resp = client.get(page)
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/html")
        html = resp.text
        # No inline code: every script is a file of this origin.
        scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", html, re.S | re.I)
        assert scripts
        assert all('src="/' in attrs and not body.strip() for attrs, body in scripts)
        assert not re.search(r"\son\w+\s*=", html, re.I)  # no inline event handlers
        assert not re.search(r"<style\b|\sstyle\s*=", html, re.I)
        # Every URL the page names is a path of this origin, and each answers without
        # credentials.
        assert not re.findall(r"(?:https?:)?//[\w.-]", html)
        urls = re.findall(r'\s(?:src|href|spec-url|data-spec-url)="([^"]*)"', html)
        assert urls
        for url in urls:
            assert url.startswith("/") and not url.startswith("//"), url
            asset = client.get(url)
            assert asset.status_code == 200, (url, asset.text[:300])
        csp = csp_sources(resp.headers["content-security-policy"])
        assert csp["default-src"] == ["'none'"]
        assert csp["script-src"] == ["'self'"]
        assert csp["frame-ancestors"] == ["'none'"]
        assert set().union(*csp.values()) <= ALLOWED_SOURCES, csp


def test_swagger_ui_needs_no_inline_styles(facade):
    csp = csp_sources(httpx.get(facade.base + "/docs", timeout=30)
                      .headers["content-security-policy"])
    assert csp["style-src"] == ["'self'"]
