"""Auth mode: signing in, balance and cost, and a clear message in the page for each server error."""

from __future__ import annotations

import time

import pytest

from egaku.jobs.settings import ServiceSettings
from studio_live import LiveServer, expect, open_studio


@pytest.fixture(scope="module")
def shop(browser, tmp_path_factory):
    """An auth-mode server: "rich" has 100 credits, "poor" none; each key may submit 3 jobs a minute."""
    server = LiveServer(tmp_path_factory.mktemp("shop_home"), auth=True, settings=ServiceSettings(key_rpm=3))
    service = server.service
    service.add_user("rich")
    service.add_user("poor")
    service.grant_credits("rich", 100, memo="test")

    def key(user: str) -> str:  # a fresh key per test, so rate limits don't leak between tests
        return service.create_key(user, label="studio test")[1]

    server.key = key
    yield server
    server.stop()


def sign_in(page, key: str, *, wait: bool = True):
    page.click("#signin-open")
    page.fill("#api-key", key)
    page.keyboard.press("Enter")
    if wait:  # signed in, and the form filled from the server (its cost is shown)
        page.wait_for_selector("#cost[data-credits]")


def error_message(page, status: int) -> str:
    box = page.locator(f'#messages .message.error[data-status="{status}"]')
    box.wait_for()
    return box.inner_text()


def test_sign_in_shows_balance_and_the_cost_of_the_next_generation(page, shop):
    open_studio(page, shop.url)
    assert page.locator("#signin-open").is_visible()
    assert "Sign in with an API key" in page.inner_text("#messages")
    sign_in(page, "egk_not_a_real_key", wait=False)
    expect(page.locator("#signin-error")).to_contain_text("not accepted")
    expect(page.locator("#signin")).to_be_visible()
    page.fill("#api-key", shop.key("rich"))
    page.click("#signin-form button[type=submit]")
    expect(page.locator("#balance")).to_have_text("100 credits")
    expect(page.locator("#signin-open")).to_be_hidden()
    page.wait_for_function("document.querySelector('#cost').dataset.credits === '1'")  # 128x128, 20 steps
    page.fill("#steps", "50")
    page.fill("#n", "2")
    # ceil(128*128*50*2 / (128*128*20)) = 5, before anything is submitted
    page.wait_for_function("document.querySelector('#cost').dataset.credits === '5'")
    expect(page.locator("#cost")).to_have_text("Cost: 5 credits")
    page.reload()  # the key is remembered
    expect(page.locator("#balance")).to_have_text("100 credits")
    page.click("#signout")
    expect(page.locator("#signin-open")).to_be_visible()
    expect(page.locator("#balance")).to_be_hidden()


def test_no_credits_gives_a_402_message(page, shop):
    open_studio(page, shop.url)
    sign_in(page, shop.key("poor"))
    expect(page.locator("#balance")).to_have_text("0 credits")
    page.fill("#prompt", "a red circle")
    page.click("#generate")
    text = error_message(page, 402)
    assert text.startswith("Not enough credits:")
    assert "balance" in text.lower()  # the server's own message says cost and balance
    assert page.locator("#queue li.job").count() == 0


def test_invalid_size_gives_a_400_message(page, shop):
    open_studio(page, shop.url)
    sign_in(page, shop.key("rich"))
    page.fill("#prompt", "a red circle")
    page.fill("#width", "100")
    page.wait_for_selector("#cost.error")  # the cost check already says what is wrong
    assert "multiple of 8" in page.inner_text("#cost")
    page.click("#generate")
    text = error_message(page, 400)
    assert text.startswith("Invalid request:") and "multiple of 8" in text
    assert page.locator("#queue li.job").count() == 0


def test_rate_limit_gives_a_429_message_with_the_retry_time(page, shop):
    open_studio(page, shop.url)
    key = shop.key("rich")
    sign_in(page, key)
    page.fill("#prompt", "rate limit test")
    page.fill("#steps", "1")
    for _ in range(4):
        page.click("#generate")
    text = error_message(page, 429)
    assert text.startswith("Too many requests: try again in ")
    seconds = text.removeprefix("Too many requests: try again in ").split(" ")[0]
    assert seconds.isdigit() and int(seconds) > 0
    user = shop.service.authenticate(key)
    deadline = time.monotonic() + 10  # the three accepted POSTs may still be answering
    while len(shop.service.list_jobs(user)) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(shop.service.list_jobs(user)) == 3  # the fourth was refused, not queued


def test_network_down_gives_a_message(page, shop):
    open_studio(page, shop.url)
    sign_in(page, shop.key("rich"))
    page.route("**/api/v1/jobs", lambda route: route.abort("internetdisconnected"))
    page.fill("#prompt", "offline")
    page.click("#generate")
    assert "Cannot reach the server" in error_message(page, 0)
