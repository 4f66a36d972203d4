"""Language switching (remembered), keyboard use, and the phone-width layout."""

from __future__ import annotations

from studio_live import PHONE, open_studio


def test_switch_to_japanese_is_remembered_after_reload(studio_page):
    page = studio_page
    assert page.inner_text("#generate") .startswith("Generate")
    page.select_option("#lang", "ja")
    assert page.inner_text("#generate").startswith("生成")
    assert page.inner_text("label[for=prompt]") == "プロンプト"
    assert page.get_attribute("#search", "placeholder") == "プロンプトを検索"
    assert page.evaluate("document.documentElement.lang") == "ja"
    page.reload()
    page.wait_for_selector("body[data-ready]")
    assert page.input_value("#lang") == "ja"
    assert page.inner_text("#generate").startswith("生成")
    assert page.inner_text("#gallery-title") == "履歴"
    # a message made after the switch is Japanese too
    page.fill("#prompt", "")
    page.click("#generate")
    assert "プロンプトを入力" in page.inner_text("#messages")
    page.select_option("#lang", "en")
    assert page.inner_text("#gallery-title") == "History"


def test_keyboard_reaches_generate_with_a_visible_focus(studio_page):
    page = studio_page
    page.fill("#prompt", "")
    page.locator("body").focus()
    for _ in range(60):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "generate":
            break
    else:
        raise AssertionError("Tab never reached the Generate button")
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline not in ("", "none")
    page.keyboard.press("Enter")  # empty prompt: told so in the page, nothing submitted
    assert "Type a prompt first" in page.inner_text("#messages")
    assert page.locator("#queue li.job").count() == 0
    # every form control has a label a screen reader can read
    unlabeled = page.evaluate("""() => [...document.querySelectorAll('#gen-form input, #gen-form select, #gen-form textarea')]
        .filter(e => e.getAttribute('aria-hidden') !== 'true' && !e.labels?.length && !e.getAttribute('aria-label'))
        .map(e => e.id)""")
    assert unlabeled == []


def test_phone_width_has_no_horizontal_scroll(browser, studio):
    context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    page = context.new_page()
    try:
        open_studio(page, studio.url)
        studio.make_job(studio.local(), prompt="phone layout, a long prompt " + "word " * 40, steps=2, seed=3)
        page.reload()
        page.wait_for_selector("body[data-ready]")
        page.wait_for_selector("#gallery-grid .thumb img[src]")
        width = lambda: page.evaluate("document.documentElement.scrollWidth")  # noqa: E731
        assert width() <= PHONE["width"]
        for sel in ("#prompt", "#generate", "#gallery-grid"):
            box = page.locator(sel).bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], sel
        page.locator("#gallery-grid .thumb").first.click()
        assert page.locator("#detail").is_visible()
        assert width() <= PHONE["width"]
        box = page.locator("#act-reuse").bounding_box()
        assert box["x"] + box["width"] <= PHONE["width"]
        page.keyboard.press("Escape")
        page.select_option("#lang", "ja")
        assert width() <= PHONE["width"]
    finally:
        context.close()
