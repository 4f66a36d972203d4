"""Generating from the studio: prompt -> live progress -> the image in the gallery, with its pixels checked."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from egaku.engine import Engine, GenerationRequest
from studio_live import page_pixels, rgb

PROMPT = "a red circle in the center, blue background"

# Records every queue-card status text and step-preview src as it is set (a MutationObserver sees
# each change even when several progress events arrive in one network read).
RECORD_JS = """() => {
  window.__statuses = []; window.__previews = 0;
  new MutationObserver((records) => {
    for (const r of records) {
      if (r.type === 'attributes' && r.target.classList.contains('job-preview')) window.__previews++;
      if (r.type === 'childList' && r.target.classList?.contains('job-status'))
        for (const n of r.addedNodes) window.__statuses.push(n.textContent);
    }
  }).observe(document.querySelector('#queue'), {subtree: true, childList: true, attributes: true, attributeFilter: ['src']});
}"""


@pytest.fixture(scope="module")
def engine():
    """The engine in the test process, to compare the studio's pixels with a direct generation."""
    return Engine()


def test_generate_shows_progress_then_the_image_in_the_gallery(studio_page, studio, engine):
    page = studio_page
    assert page.locator("#signin-open").is_hidden()  # --no-auth mode: no sign-in
    assert page.locator("#balance").is_hidden()
    assert "Euler a" in page.locator("#sampler option").all_inner_texts()
    page.fill("#prompt", PROMPT)
    page.fill("#steps", "20")
    page.select_option("#seed-mode", "fixed")
    page.fill("#seed", "1234")
    page.wait_for_function("document.querySelector('#cost').dataset.credits === '1'")
    assert "Local mode" in page.inner_text("#cost")
    page.evaluate(RECORD_JS)

    page.focus("#prompt")
    page.keyboard.press("Control+Enter")  # the keyboard shortcut submits
    card = page.locator("#queue li.job").first
    card.wait_for()
    job_id = card.get_attribute("data-job-id")
    thumb = page.locator(f'#gallery-grid .thumb[data-job-id="{job_id}"] img[src]')
    thumb.wait_for(timeout=60_000)

    # the progress was shown live: several distinct steps of 20, and at least one step preview
    statuses = page.evaluate("window.__statuses")
    steps = {s for s in statuses if s.startswith("Step ") and s.endswith("/ 20")}
    assert len(steps) >= 3, statuses
    assert "Done" in statuses
    assert page.evaluate("window.__previews") >= 1
    # the stage shows the result
    assert page.locator("#stage-view img.stage-image[src]").count() == 1

    # the pixels the browser shows are the server's PNG, and that PNG is what the engine draws for the prompt
    shown = page_pixels(thumb)
    image = studio.service.get_job(studio.local(), job_id).images[0]
    png = studio.png(studio.local(), image.id)
    assert np.array_equal(shown, rgb(png))
    assert "Seed: 1234" in Image.open(io.BytesIO(png)).info["parameters"]
    direct = engine.generate(GenerationRequest(PROMPT, seed=1234, steps=20, sampler="Euler a", cfg_scale=7.0,
                                               width=128, height=128)).images[0]
    assert np.abs(shown.astype(int) - np.asarray(direct.convert("RGB"), dtype=int)).max() <= 3


def blueness(pixels: np.ndarray) -> float:
    """Mean blue minus the mean of red and green: > 0 for a blue-ish image."""
    r, g, b = pixels.reshape(-1, 3).astype(float).mean(axis=0)
    return b - (r + g) / 2


def test_generated_image_shows_the_prompted_colour(studio_page, engine):
    """The pixels the page shows hold a red object for "a red circle ...", as the shapes-world analyzer reads
    them; and the dominant colour of "..., blue background" is blue, unlike the same seed with "yellow"."""
    from egaku.world.analyze import analyze

    page = studio_page
    page.fill("#prompt", PROMPT)
    page.fill("#steps", "20")
    page.select_option("#seed-mode", "fixed")
    page.fill("#seed", "4242")
    page.click("#generate")
    job_id = page.locator("#queue li.job").first.get_attribute("data-job-id")
    shown = page_pixels(page.locator(f'#gallery-grid .thumb[data-job-id="{job_id}"] img[src]'))
    colours = [o.color for o in analyze(shown).objects]
    assert "red" in colours, f"no red object in the image the page shows (objects: {colours})"
    request = GenerationRequest(PROMPT.replace("blue", "yellow"), seed=4242, steps=20, sampler="Euler a")
    control = np.asarray(engine.generate(request).images[0].convert("RGB"))
    assert blueness(shown) > 0, f"dominant colour is not blue-ish: {shown.reshape(-1, 3).mean(axis=0)}"
    assert blueness(shown) - blueness(control) > 20, (blueness(shown), blueness(control))


def test_reuse_settings_fills_the_form(studio_page, studio):
    page = studio_page
    job = studio.make_job(studio.local(), prompt="a green triangle, reuse-me", negative_prompt="yellow",
                          sampler="DPM++ 2M", steps=3, cfg_scale=5.5, cfg_rescale=0.7, seed=777, width=144,
                          height=112)
    page.fill("#search", "reuse-me")
    page.locator(f'#gallery-grid .thumb[data-job-id="{job.id}"]').click()
    detail = page.locator("#detail")
    assert detail.is_visible()
    assert detail.locator('dd[data-param="pSeed"]').inner_text() == "777"
    assert detail.locator('dd[data-param="pSampler"]').inner_text() == "DPM++ 2M"
    assert detail.locator('dd[data-param="pSize"]').inner_text() == "144 × 112"
    page.fill("#prompt", "something else")
    page.fill("#steps", "9")
    detail.locator("#act-reuse").click()
    assert detail.is_hidden()
    assert page.input_value("#prompt") == "a green triangle, reuse-me"
    assert page.input_value("#negative") == "yellow"
    assert page.input_value("#sampler") == "DPM++ 2M"
    assert page.input_value("#steps") == "3"
    assert page.input_value("#cfg") == "5.5" and page.input_value("#cfg-rescale") == "0.7"
    assert (page.input_value("#width"), page.input_value("#height")) == ("144", "112")
    assert page.locator('#ratios [aria-pressed="true"]').inner_text() == "4:3"  # 144x112 is 4:3 at 128 px
    assert page.input_value("#seed-mode") == "fixed"
    assert page.input_value("#seed") == "777"

    # vary seed: the same settings again at once, with a new random seed
    page.locator(f'#gallery-grid .thumb[data-job-id="{job.id}"]').click()
    page.click("#act-vary")
    card = page.locator("#queue li.job").first
    card.wait_for()
    varied = studio.service.wait(studio.local(), card.get_attribute("data-job-id"), timeout=60)
    assert varied.spec["prompt"] == "a green triangle, reuse-me"
    assert (varied.spec["sampler"], varied.spec["steps"], varied.spec["width"]) == ("DPM++ 2M", 3, 144)
    assert varied.images[0].seed != 777


def test_queue_shows_positions_and_cancel_refunds(studio_page, studio):
    page = studio_page
    page.fill("#prompt", "queue test, three in a row")
    page.fill("#steps", "40")
    for _ in range(3):
        page.click("#generate")
    cards = page.locator("#queue li.job")
    cards.nth(2).wait_for()
    page.wait_for_function(
        "[...document.querySelectorAll('#queue li.job[data-status=queued] .job-status')]"
        ".some(s => s.textContent.startsWith('Queued'))"
    )
    last = page.locator("#queue li.job[data-status=queued]").first  # newest first
    job_id = last.get_attribute("data-job-id")
    last.locator("button", has_text="Cancel").click()
    page.wait_for_selector(f'#queue li.job[data-job-id="{job_id}"][data-status=cancelled]')
    assert "Cancelled" in page.inner_text(f'#queue li.job[data-job-id="{job_id}"]')
    assert studio.service.get_job(studio.local(), job_id).status == "cancelled"
    page.wait_for_function("!document.querySelector('#queue li.job[data-status=running], #queue li.job[data-status=queued]')",
                           timeout=90_000)


def test_history_search_infinite_scroll_download_and_delete(studio_page, studio):
    page = studio_page
    local = studio.local()
    jobs = [studio.make_job(local, prompt=f"scrolltest {i}", steps=1, seed=i) for i in range(26)]
    page.fill("#search", "scrolltest")
    grid = page.locator("#gallery-grid .thumb")
    page.wait_for_function("document.querySelectorAll('#gallery-grid .thumb').length >= 24")
    page.wait_for_timeout(500)
    assert grid.count() == 24  # one page until the user scrolls
    page.locator("#gallery-sentinel").scroll_into_view_if_needed()
    page.wait_for_function("document.querySelectorAll('#gallery-grid .thumb').length === 26")
    assert all("scrolltest" in t for t in grid.evaluate_all("els => els.map(e => e.title)"))

    # download: the PNG keeps its A1111 parameters
    newest = jobs[-1]
    page.locator(f'#gallery-grid .thumb[data-job-id="{newest.id}"]').click()
    page.wait_for_function("document.querySelector('#act-download').href.startsWith('blob:')")
    with page.expect_download() as info:
        page.click("#act-download")
    saved = Image.open(info.value.path())
    assert "Seed: 25" in saved.info["parameters"]

    # delete asks twice, then the image is gone from the gallery and from the server
    image_id = newest.images[0].id
    page.click("#act-delete")
    assert page.locator("#detail").is_visible()
    page.click("#act-delete")
    page.wait_for_selector(f'#gallery-grid li[data-image-id="{image_id}"]', state="detached")
    assert grid.count() == 25
    assert page.locator("#messages").inner_text().find("Image deleted") >= 0
    status = page.evaluate(f"fetch('/api/v1/images/{image_id}').then(r => r.status)")
    assert status == 404
