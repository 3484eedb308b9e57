"""The web chat page in headless Chromium (Debian's, driven by Playwright), against the real server."""

import time

from playwright.sync_api import expect

from serving import KEY

def open_page(browser, url, width=1280, height=800, key=KEY):
    page = browser.new_page(viewport={"width": width, "height": height})
    page.goto(url + "/")
    page.fill("#key", key)
    page.dispatch_event("#key", "change")
    expect(page.locator("#model option")).to_have_text(["smollm2-135m"])
    expect(page.locator(".message")).to_have_count(0)  # an error from before the key was entered is gone
    return page


def test_ask_stream_stop_and_reset(browser, server, tmp_path_factory):
    url, host = server
    page = open_page(browser, url)
    page.fill("#temperature", "0")  # greedy: a deterministic answer
    page.fill("#input", "What is the capital of France?")
    page.press("#input", "Enter")
    answer = page.locator(".message.assistant").last
    expect(answer).to_contain_text("Paris", timeout=60_000)
    expect(page.locator("#send")).to_be_enabled()
    expect(page.locator(".message.user")).to_have_text(["What is the capital of France?"])

    # a long answer, stopped while it streams: the text stops growing and the server frees the slot
    page.fill("#input", "Write a very long story about a dragon who learns to bake bread.")
    page.press("#input", "Enter")
    story = page.locator(".message.assistant").last
    deadline = time.time() + 60
    while len(story.inner_text()) < 40 and time.time() < deadline:
        time.sleep(0.1)
    assert len(story.inner_text()) >= 40  # it streamed
    page.click("#stop")
    expect(story).to_contain_text("[stopped]")
    deadline = time.time() + 10
    while host.engine.active and time.time() < deadline:
        time.sleep(0.05)
    assert host.engine.active == 0
    shots = tmp_path_factory.mktemp("screens")
    page.screenshot(path=str(shots / "laptop.png"))

    page.click("#reset")
    expect(page.locator(".message")).to_have_count(0)
    page.close()


def test_phone_width_and_errors_are_shown(browser, server, tmp_path_factory):
    url, _ = server
    page = open_page(browser, url, width=390, height=844)
    page.fill("#input", "Hello!")
    page.press("#input", "Enter")
    expect(page.locator(".message.assistant")).not_to_be_empty(timeout=60_000)
    expect(page.locator("#send")).to_be_enabled(timeout=120_000)  # the reply may run to 512 tokens
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # nothing overflows sideways
    page.screenshot(path=str(tmp_path_factory.mktemp("screens") / "phone.png"))
    # a wrong API key: the person is told why, in the page
    page.fill("#key", "wrong-key")
    page.dispatch_event("#key", "change")
    expect(page.locator(".message.error").last).to_contain_text("invalid or missing API key")
    page.close()


def test_reasoning_is_shown_in_a_collapsible_block(browser, server):
    url, _ = server
    page = open_page(browser, url)
    page.fill("#temperature", "0")
    page.select_option("#effort", "low")
    page.fill("#input", "Tom has 3 apples and buys 2 more. How many apples does he have?")
    page.press("#input", "Enter")
    expect(page.locator("#send")).to_be_enabled(timeout=120_000)
    block = page.locator(".message.assistant details.reasoning")
    expect(block).to_have_count(1)
    expect(block.locator("div")).not_to_be_visible()  # collapsed until opened
    block.locator("summary").click()
    expect(block.locator("div")).to_be_visible()
    assert block.locator("div").inner_text().strip()
    answer = page.locator(".message.assistant span").last.inner_text()
    assert answer.strip() and "</think>" not in answer
    page.close()
