"""The console in a real headless Chromium (Debian's, through its chromedriver) against a live server."""
import os
import shutil
import threading
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.db import connection

from console import lag
from outbox import half
from outbox import models as outbox_models
from queueing import producer, topics
from tests.conftest import ROOT
from tests.console.conftest import consume, dead_lettered, run_worker

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (make install)")
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER),
    reason="needs Debian's chromium and chromium-driver (platform/ensure-services installs them as root)")
WAIT_S = 20


@half.checker("tests.console.browser")
def never_decides(message):
    return "unknown"


@pytest.fixture
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=DRIVER))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def operator(transactional_db):
    return User.objects.create_superuser("ops", password="pw-ops-1")


def log_in(browser, live_server, username="ops", password="pw-ops-1", path="/console/"):
    browser.get(live_server.url + path)
    browser.find_element(By.ID, "id_username").send_keys(username)
    browser.find_element(By.ID, "id_password").send_keys(password)
    follow(browser, browser.find_element(By.CSS_SELECTOR, "main form button[type=submit]"))


def follow(browser, link):
    """Click link (or a submit button) and wait for the page it leads to, so nothing is read from
    the page before (a race with the load)."""
    before = browser.current_url
    link.click()
    wait_for(browser, lambda: browser.current_url != before and browser.execute_script(
        "return document.readyState") == "complete", "the next page did not load")


def text_of(browser, selector):
    return browser.find_element(By.CSS_SELECTOR, selector).text


def wait_for(browser, condition, message):
    # A page answering a POST replaces the one read a moment ago: an element found on the old one
    # goes stale, and the condition is simply asked again.
    WebDriverWait(browser, WAIT_S, poll_frequency=0.2, ignored_exceptions=(StaleElementReferenceException,)).until(
        lambda _: condition(), message=message)


def screenshot(browser, name):
    """Save a screenshot into docs/ when SLUICE_CONSOLE_SCREENSHOTS is set (how docs/ got its PNGs)."""
    if os.environ.get("SLUICE_CONSOLE_SCREENSHOTS"):
        browser.save_screenshot(str(Path(ROOT) / "docs" / f"console-{name}.png"))


def test_staff_logs_in_and_lands_on_the_overview(browser, live_server, operator):
    topics.create_topic("orders", partitions=2)
    producer.send_batch("orders", [b'{"order": 1}', b'{"order": 2}'], keys=[b"1", b"2"])
    consume("billing", "orders", 2)
    log_in(browser, live_server)
    wait_for(browser, lambda: browser.current_url == live_server.url + "/console/", "not sent to the overview")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Overview"
    assert text_of(browser, "[data-field=backlog]") == "0"
    producer.send_batch("orders", [b'{"order": 3}', b'{"order": 4}', b'{"order": 5}'], keys=[b"3", b"4", b"5"])
    wait_for(browser, lambda: text_of(browser, "[data-field=backlog]") == "3", "the backlog tile did not update")
    screenshot(browser, "overview")
    browser.get(live_server.url + "/console/topics/")
    screenshot(browser, "topics")
    browser.get(live_server.url + "/console/topics/orders/messages/?partition=0")
    assert "order" in text_of(browser, "pre.value")
    screenshot(browser, "messages")


def test_an_anonymous_visitor_is_sent_to_the_login_page(browser, live_server, transactional_db):
    browser.get(live_server.url + "/console/groups/")
    assert browser.current_url == live_server.url + "/console/login/?next=/console/groups/"
    assert browser.find_element(By.TAG_NAME, "h1").text == "Log in"


def test_a_user_who_is_not_staff_is_refused(browser, live_server, transactional_db):
    User.objects.create_user("shopper", password="pw-shop-1")
    log_in(browser, live_server, "shopper", "pw-shop-1")
    assert "403" in browser.title or "Forbidden" in browser.page_source
    assert "Total backlog" not in browser.page_source


def test_a_post_without_csrf_is_refused(browser, live_server, operator):
    topics.create_topic("payments")
    message = half.prepare("payments", b"v", producer_group="shop", checker="tests.console.browser")
    log_in(browser, live_server)
    status = browser.execute_async_script(
        "var done = arguments[arguments.length - 1];"
        f"fetch('/console/half-messages/{message.id}/commit', {{method: 'POST', credentials: 'same-origin'}})"
        ".then(function (r) { done(r.status); });")
    assert status == 403
    assert outbox_models.HalfMessage.objects.get(id=message.id).state == "prepared"


def test_committing_a_prepared_half_message_by_hand(browser, live_server, operator):
    topics.create_topic("payments")
    message = half.prepare("payments", b"paid", producer_group="shop", checker="tests.console.browser")
    log_in(browser, live_server, path="/console/half-messages/")
    screenshot(browser, "half-messages")
    browser.find_element(By.CSS_SELECTOR, f"button[aria-label='Commit {message.id}']").click()
    browser.switch_to.alert.accept()
    wait_for(browser, lambda: f"half message {message.id}: committed" in browser.page_source, "no confirmation")
    stored = outbox_models.HalfMessage.objects.get(id=message.id)
    assert (stored.state, stored.offset) == ("committed", 0)
    browser.get(live_server.url + "/console/audit/")
    assert "half message commit" in text_of(browser, "tbody")


def test_a_groups_lag_rises_while_a_producer_runs_and_falls_while_a_worker_consumes(
        browser, live_server, operator):
    topics.create_topic("orders", partitions=2)
    producer.send_batch("orders", [b"first", b"second"], keys=[b"1", b"2"])
    consume("billing", "orders", 2)
    log_in(browser, live_server, path="/console/groups/billing/")
    wait_for(browser, lambda: text_of(browser, "[data-field=lag]") == "0", "lag did not start at 0")

    stop = threading.Event()

    def produce():
        try:
            for n in range(200):
                if stop.wait(0.05):
                    break
                producer.send("orders", f"order {n}".encode(), key=str(n).encode())
        finally:
            connection.close()  # the thread's own connection, so the test database can be dropped

    sender = threading.Thread(target=produce)
    sender.start()
    try:
        lag.sample()
        wait_for(browser, lambda: int(text_of(browser, "[data-field=lag]")) > 0, "lag never rose")
    finally:
        stop.set()
        sender.join(timeout=WAIT_S)
    lag.sample()
    produced = sum(p.next_offset for p in topics_partitions("orders"))
    wait_for(browser, lambda: int(text_of(browser, "[data-field=lag]")) == produced - 2, "lag not the backlog")
    screenshot(browser, "group")
    consume("billing", "orders", produced - 2)
    lag.sample()
    wait_for(browser, lambda: text_of(browser, "[data-field=lag]") == "0", "lag never fell back to 0")
    assert browser.find_elements(By.CSS_SELECTOR, "svg[data-chart] polyline")


def topics_partitions(name):
    from queueing import models

    return models.Partition.objects.filter(topic__name=name)


def test_a_dead_letter_is_opened_redriven_and_consumed(browser, live_server, operator):
    handler = dead_lettered()
    log_in(browser, live_server, path="/console/dead-letters/")
    follow(browser, browser.find_element(By.LINK_TEXT, "billing.DLQ"))
    follow(browser, browser.find_element(By.LINK_TEXT, "0@0"))
    assert "Failed in group billing on orders-0@1" in text_of(browser, ".opened")
    assert "cannot handle b'bad'" in text_of(browser, ".opened")
    screenshot(browser, "dead-letter")
    browser.find_element(By.ID, "pick-0-0").click()
    browser.find_element(By.CSS_SELECTOR, "button[value=selected]").click()
    browser.switch_to.alert.accept()
    wait_for(browser, lambda: "redrove 1 dead letter(s) from billing.DLQ" in browser.page_source, "no redrive")
    browser.get(live_server.url + "/console/groups/billing/")
    wait_for(browser, lambda: text_of(browser, "[data-field=lag]") == "1", "the redriven record is not waiting")
    handler.broken.clear()
    run_worker("billing", "orders", handler)
    wait_for(browser, lambda: text_of(browser, "[data-field=lag]") == "0", "the redriven record was not consumed")
    assert handler.seen == [b"ok-1", b"ok-2", b"bad"]


def test_dead_letters_are_purged_only_once_the_topics_name_is_typed(browser, live_server, operator):
    topics.create_topic("billing.DLQ")
    producer.send_batch("billing.DLQ", [b"d-1", b"d-2", b"d-3"], partition=0)
    log_in(browser, live_server, path="/console/dead-letters/billing.DLQ/")
    browser.find_element(By.CSS_SELECTOR, "#purge summary").click()
    browser.find_element(By.ID, "purge-confirm").send_keys("billing")
    # The answer comes back to the same page, so wait for its message rather than a new URL.
    browser.find_element(By.CSS_SELECTOR, "#purge button[type=submit]").click()
    wait_for(browser, lambda: "type the topic's name, billing.DLQ, to purge it" in text_of(browser, "main"),
             "a wrong name was not refused")
    assert topics.describe_topic("billing.DLQ")[1][0].log_start_offset == 0
    browser.find_element(By.CSS_SELECTOR, "#purge summary").click()
    browser.find_element(By.ID, "purge-confirm").send_keys("billing.DLQ")
    browser.find_element(By.CSS_SELECTOR, "#purge button[type=submit]").click()
    wait_for(browser, lambda: "purged 3 dead letter(s) from billing.DLQ" in text_of(browser, "main"), "no purge")
    assert "No dead letters from this offset." in text_of(browser, "main")
    assert topics.describe_topic("billing.DLQ")[1][0].log_start_offset == 3
