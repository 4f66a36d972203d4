"""Inpainting and img2img from the studio: paint a mask with the brush, regenerate only that area."""

from __future__ import annotations

import numpy as np

from studio_live import expect, rgb


def newest_job_id(page, before: set[str]) -> str:
    page.wait_for_function(
        "(before) => [...document.querySelectorAll('#queue li.job')].some(li => !before.includes(li.dataset.jobId))",
        arg=sorted(before),
    )
    ids = page.locator("#queue li.job").evaluate_all("els => els.map(e => e.dataset.jobId)")
    return next(i for i in ids if i not in before)


def test_inpaint_repaints_only_the_masked_area(studio_page, studio):
    page = studio_page
    local = studio.local()
    base = studio.make_job(local, prompt="inpaint base, a blue square", steps=4, seed=5)
    base_image = base.images[0]
    page.fill("#search", "inpaint base")
    page.locator(f'#gallery-grid .thumb[data-job-id="{base.id}"]').click()
    page.click("#act-inpaint")

    # paint one horizontal stroke across the middle of the 128x128 image
    dialog = page.locator("#inpaint")
    dialog.wait_for()
    canvas = page.locator("#paint-canvas")
    page.wait_for_function("document.querySelector('#paint-image').complete")
    assert canvas.evaluate("c => [c.width, c.height]") == [128, 128]
    brush = int(page.input_value("#brush"))
    box = canvas.bounding_box()
    scale = box["width"] / 128
    y = box["y"] + 64 * scale
    page.mouse.move(box["x"] + 48 * scale, y)
    page.mouse.down()
    for x in range(48, 81, 4):
        page.mouse.move(box["x"] + x * scale, y)
    page.mouse.up()
    page.click("#paint-apply")
    expect(dialog).to_be_hidden()
    expect(page.locator("#mask-badge")).to_be_visible()
    assert (page.input_value("#width"), page.input_value("#height")) == ("128", "128")

    page.fill("#prompt", "a yellow star")
    page.fill("#steps", "4")
    page.locator("#strength").evaluate("(s) => { s.value = '1'; s.dispatchEvent(new Event('input')); }")
    before = set(page.locator("#queue li.job").evaluate_all("els => els.map(e => e.dataset.jobId)"))
    page.click("#generate")
    job_id = newest_job_id(page, before)
    page.wait_for_selector(f'#stage-view .stage-grid[data-job-id="{job_id}"] img[src]', timeout=60_000)

    job = studio.service.get_job(local, job_id)
    params = job.spec  # JobSpec as a dict, images as flags
    assert params["init_image"] and params["mask"]
    old = rgb(studio.png(local, base_image.id)).astype(int)
    new = rgb(studio.png(local, job.images[0].id)).astype(int)
    # The stroke covers x 48-80, y 64 +- brush/2; with the mask blur (4) nothing beyond ~16 px of it moves.
    margin = brush // 2 + 16
    outside = np.ones((128, 128), dtype=bool)
    outside[64 - margin:64 + margin, 48 - margin:80 + margin] = False
    assert np.array_equal(old[outside], new[outside])
    inside = np.abs(old[60:68, 52:76] - new[60:68, 52:76]).mean()
    assert inside > 2, f"the masked area did not change (mean difference {inside:.2f})"


def test_use_as_init_image_sends_img2img_with_strength(studio_page, studio):
    page = studio_page
    local = studio.local()
    base = studio.make_job(local, prompt="init base, a pink ring", steps=4, seed=9, width=144, height=112)
    page.fill("#search", "init base")
    page.locator(f'#gallery-grid .thumb[data-job-id="{base.id}"]').click()
    page.click("#act-init")
    expect(page.locator("#init-block")).to_be_visible()
    expect(page.locator("#mask-badge")).to_be_hidden()
    expect(page.locator("#width")).to_have_value("144")
    expect(page.locator("#height")).to_have_value("112")
    page.locator("#strength").evaluate("(s) => { s.value = '0.4'; s.dispatchEvent(new Event('input')); }")
    expect(page.locator("#strength-out")).to_have_text("0.40")
    page.fill("#prompt", "a pink ring, img2img")
    page.fill("#steps", "5")
    before = set(page.locator("#queue li.job").evaluate_all("els => els.map(e => e.dataset.jobId)"))
    page.click("#generate")
    job_id = newest_job_id(page, before)
    page.wait_for_selector(f'#stage-view .stage-grid[data-job-id="{job_id}"] img[src]', timeout=60_000)
    job = studio.service.get_job(local, job_id)
    params = job.spec  # JobSpec as a dict, images as flags
    assert params["init_image"] and not params["mask"]
    assert params["strength"] == 0.4
    assert job.images, f"a {job.status} job without images: {job}"
    assert (job.images[0].width, job.images[0].height) == (144, 112)
    # removing the init image goes back to txt2img at the preset size
    page.click("#clear-init")
    assert page.locator("#init-block").is_hidden()
    assert (page.input_value("#width"), page.input_value("#height")) == ("128", "128")
