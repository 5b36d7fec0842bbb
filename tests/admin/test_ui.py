"""The web UI in a real browser: Debian's headless Chromium driven through Selenium.

Logs in with the broker's user, finds a queue a real AMQP client filled, purges it from the
UI and sees the depth go to 0 (also over AMQP). Screenshots are saved as test artifacts in
$MINIMQ_ARTIFACTS_DIR (default tests/artifacts/). .ci/run installs chromium, chromium-driver
and the `management` extra (selenium); selenium is pointed at /usr/bin/chromedriver, so it
never downloads a driver or a browser.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pika
import pytest

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed (the management extra)")
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("MINIMQ_ARTIFACTS_DIR", Path(__file__).resolve().parents[1] / "artifacts"))

pytestmark = pytest.mark.skipif(
    not (os.path.exists(CHROMEDRIVER) and os.path.exists(CHROMIUM)),
    reason="Debian's chromium and chromium-driver are not installed (.ci/run installs them)",
)


@pytest.fixture
def browser():
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not fetch anything
    profile = tempfile.mkdtemp(prefix="minimq-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1400,1000", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def cell(driver, queue: str, column: str) -> str | None:
    """A queue row's cell text, read in one script call: the table is re-rendered every few
    seconds, so an element found earlier may be gone by the time it is read."""
    return driver.execute_script(
        "const row = [...document.querySelectorAll('#queue-table tr')].find(r => r.dataset.queue === arguments[0]);"
        "const td = row && row.querySelector('td.' + arguments[1]); return td ? td.textContent : null;",
        queue, column)


def test_login_see_a_queue_purge_it(node, browser, unique):
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", node.amqp_port))
    ch = conn.channel()
    ch.queue_declare(unique, durable=True)
    for i in range(3):
        ch.basic_publish("", unique, f"hello {i}".encode())
    assert ch.queue_declare(unique, passive=True).method.message_count == 3
    wait = WebDriverWait(browser, 60, ignored_exceptions=(StaleElementReferenceException,))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        browser.get(node.base + "/")
        # a wrong password is refused
        browser.find_element(By.ID, "login-user").clear()
        browser.find_element(By.ID, "login-user").send_keys("guest")
        browser.find_element(By.ID, "login-password").send_keys("wrong")
        browser.find_element(By.ID, "login-button").click()
        wait.until(EC.text_to_be_present_in_element((By.ID, "login-error"), "Login failed"))
        browser.find_element(By.ID, "login-password").clear()
        browser.find_element(By.ID, "login-password").send_keys("guest")
        browser.find_element(By.ID, "login-button").click()
        wait.until(EC.visibility_of_element_located((By.ID, "overview")))
        wait.until(lambda d: int(d.find_element(By.ID, "o-queues").text.replace(",", "")) >= 1)
        browser.save_screenshot(str(ARTIFACTS / "ui-overview.png"))
        browser.find_element(By.CSS_SELECTOR, 'nav a[data-tab="queues"]').click()
        wait.until(lambda d: cell(d, unique, "messages") == "3")
        assert cell(browser, unique, "ready") == "3" and cell(browser, unique, "unacked") == "0"
        browser.save_screenshot(str(ARTIFACTS / "ui-queues.png"))
        browser.execute_script(
            "[...document.querySelectorAll('#queue-table tr')].find(r => r.dataset.queue === arguments[0])"
            ".querySelector('button.purge').click();", unique)
        wait.until(EC.alert_is_present()).accept()
        wait.until(lambda d: cell(d, unique, "messages") == "0")
        browser.save_screenshot(str(ARTIFACTS / "ui-queues-purged.png"))
        assert ch.queue_declare(unique, passive=True).method.message_count == 0
    except Exception:
        browser.save_screenshot(str(ARTIFACTS / "ui-failure.png"))
        raise
    finally:
        conn.close()


def test_the_admin_tab_lists_policies(node, browser, unique):
    name = "policies-" + unique
    body = {"pattern": f"^{unique}", "definition": {"max-length": 7}, "apply-to": "queues", "priority": 2}
    assert node.request("PUT", f"/api/policies/%2F/{name}", body)[0] == 201
    wait = WebDriverWait(browser, 60, ignored_exceptions=(StaleElementReferenceException,))
    try:
        browser.get(node.base + "/")
        browser.find_element(By.ID, "login-password").send_keys("guest")
        browser.find_element(By.ID, "login-button").click()
        wait.until(EC.visibility_of_element_located((By.ID, "overview")))
        browser.find_element(By.CSS_SELECTOR, 'nav a[data-tab="admin"]').click()
        row = ("const r = [...document.querySelectorAll('#policy-table tr')].find(r => r.dataset.policy === arguments[0]);"
               "return r ? [...r.querySelectorAll('td')].map(td => td.textContent) : null;")
        cells = wait.until(lambda d: d.execute_script(row, name))
        assert cells == ["/", name, "policy", f"^{unique}", "queues", '{"max-length":7}', "2"]
    except Exception:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "ui-policies-failure.png"))
        raise
    finally:
        node.request("DELETE", f"/api/policies/%2F/{name}")
