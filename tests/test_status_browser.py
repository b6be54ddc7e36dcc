"""The status page in a real headless browser, against `globaldns dev`.

Debian's chromium, driven through chromium-driver with Selenium: the page draws the
clusters and the service-by-cluster matrix from the live stream, shows a drain with who
and why, and turns eu-west-prod's cells red during `globaldns dev outage eu-west-prod`
without being reloaded. A screenshot of that moment is kept under the test's tmp_path
and copied to test-artifacts/ (gitignored). Waits are explicit and generous; nothing here
asserts how fast anything happened.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.wait import WebDriverWait

from tests.conftest import require_tool
from tests.devmode import Dev, start_dev
from tests.helpers import ROOT

pytestmark = pytest.mark.e2e

WAIT_S = 60
ARTIFACTS = ROOT / "test-artifacts"
CLUSTERS = ("ap-south-prod", "eu-west-prod", "us-east-prod")
SERVICES = ("production/api", "production/data-processing", "production/web")
DOWN_COLOUR = "rgba(224, 49, 49, 1)"  # --down in status.html, #e03131

SHOWN = """
const cells = {}, markers = {};
for (const td of document.querySelectorAll('#matrix td.cell'))
  cells[td.dataset.service + ' ' + td.dataset.cluster] = [td.dataset.state, td.textContent];
for (const g of document.querySelectorAll('#markers .marker'))
  markers[g.dataset.cluster] = g.dataset.state;
const drains = [...document.querySelectorAll('#drains li[data-cluster]')].map(li => li.textContent);
return {cells, markers, drains, live: document.getElementById('live').textContent};
"""


@pytest.fixture(scope="module")
def tools() -> tuple[str, str]:
    """Chromium and its driver (Debian's chromium, chromium-driver); asked before dev mode
    starts, so that a machine without them skips at once."""
    return require_tool("chromium"), require_tool("chromedriver")


@pytest.fixture(scope="module")
def dev(tools: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dev]:
    yield from start_dev(tmp_path_factory)


@pytest.fixture
def browser(tools: tuple[str, str]) -> Iterator[webdriver.Chrome]:
    chromium, driver_path = tools
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        "--no-sandbox",  # tests run as root, where Chromium's sandbox cannot start
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    try:
        yield driver
    finally:
        driver.quit()


def shown(driver: webdriver.Chrome) -> dict[str, Any]:
    found: dict[str, Any] = driver.execute_script(SHOWN)
    return found


def eventually(
    driver: webdriver.Chrome, check: Callable[[dict[str, Any]], bool], what: str
) -> None:
    WebDriverWait(driver, WAIT_S, poll_frequency=0.2).until(
        lambda d: check(shown(d)), message=f"{what} (waited up to {WAIT_S}s)"
    )


def cells_of(page: dict[str, Any], cluster: str) -> set[str]:
    return {page["cells"][f"{s} {cluster}"][0] for s in SERVICES}


@pytest.mark.timeout(400)
def test_the_page_shows_the_registry_live_through_a_drain_and_an_outage(
    dev: Dev, browser: webdriver.Chrome, tmp_path: Path
) -> None:
    browser.get(dev.state["api_url"] + "/status")
    eventually(
        browser,
        lambda p: (
            p["markers"] == dict.fromkeys(CLUSTERS, "ok")
            and all(cells_of(p, c) == {"ok"} for c in CLUSTERS)
        ),
        "every cluster and cell green",
    )
    page = shown(browser)
    services = {s: dev.get(f"/v1/services/{s}") for s in SERVICES}
    for service, view in services.items():
        for cluster in CLUSTERS:
            total = sum(1 for e in view["endpoints"] if e["cluster"] == cluster)
            assert page["cells"][f"{service} {cluster}"] == ["ok", f"{total}/{total}"]
    assert page["live"] == "live"
    browser.execute_script("window.notReloaded = true")

    dev.cli("drain", "ap-south-prod", "--reason", "browser test", "--by", "selenium")
    eventually(
        browser,
        lambda p: (
            p["markers"]["ap-south-prod"] == "drained"
            and any("selenium" in d and "browser test" in d for d in p["drains"])
        ),
        "ap-south-prod drained, with who and why",
    )

    dev.cli("dev", "outage", "eu-west-prod")
    eventually(
        browser,
        lambda p: (
            cells_of(p, "eu-west-prod") == {"down"} and p["markers"]["eu-west-prod"] == "down"
        ),
        "eu-west-prod's cells red",
    )
    page = shown(browser)
    assert cells_of(page, "us-east-prod") == {"ok"}
    assert cells_of(page, "ap-south-prod") == {"drained"}
    assert browser.execute_script("return window.notReloaded") is True
    cell = browser.find_element(
        "css selector", '#matrix td[data-service="production/api"][data-cluster="eu-west-prod"]'
    )
    assert cell.value_of_css_property("background-color") == DOWN_COLOUR

    screenshot = tmp_path / "status-outage.png"
    assert browser.save_screenshot(str(screenshot))
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(screenshot, ARTIFACTS / screenshot.name)
    print(f"screenshot: {ARTIFACTS / screenshot.name}")

    dev.cli("dev", "recover", "eu-west-prod")
    dev.cli("undrain", "ap-south-prod")
    eventually(
        browser,
        lambda p: p["markers"] == dict.fromkeys(CLUSTERS, "ok") and not p["drains"],
        "every cluster green again",
    )
    assert browser.execute_script("return window.notReloaded") is True
    # Nothing the page did was refused or failed: no CSP violation, no script error.
    logs = browser.get_log("browser")  # type: ignore[no-untyped-call]  # untyped in selenium
    problems = [e for e in logs if e["level"] == "SEVERE"]
    assert not problems, problems
