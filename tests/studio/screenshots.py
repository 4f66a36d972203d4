"""Screenshots of the studio's main screens at desktop (1280x800) and phone (390x844) widths.

    OMP_NUM_THREADS=1 .venv/bin/python tests/studio/screenshots.py            # -> docs/screenshots/*.png

Runs a real server (auth mode, built-in model) in a temporary EGAKU_HOME and drives Debian's headless
Chromium (apt-get install chromium; Japanese text needs a CJK font such as fonts-noto-cjk). Not a test.
"""

from __future__ import annotations

import argparse
import io
import tempfile
from pathlib import Path

from PIL import Image
from playwright.sync_api import sync_playwright

from studio_live import DESKTOP, PHONE, LiveServer, launch_chromium, open_studio

ROOT = Path(__file__).resolve().parents[2]
PROMPTS = [
    "a red circle in the center, blue background", "a yellow star in the top right, black background",
    "two pink rings, white background", "a green square on the left, orange background",
    "左上に赤い三角、背景は黄色", "a purple heart, cyan background", "a blue triangle, (striped:1.2) style",
    "a white moon, navy background", "an orange cross in the bottom left", "a small brown diamond, grey background",
    "a cyan circle, pink background", "a black square, yellow background",
]


def populate(server: LiveServer, principal) -> None:
    """A history worth looking at: a dozen finished jobs with varied prompts and seeds."""
    for i, prompt in enumerate(PROMPTS):
        server.make_job(principal, prompt=prompt, steps=20, seed=100 + 7 * i, sampler="DPM++ 2M")


def sign_in(page, key: str) -> None:
    page.click("#signin-open")
    page.fill("#api-key", key)
    page.keyboard.press("Enter")
    page.wait_for_selector("#balance:not([hidden])")


def settle(page, ms: int = 400, top: bool = True) -> None:
    if top:
        page.evaluate("window.scrollTo(0, 0)")
    page.wait_for_function("[...document.querySelectorAll('#gallery-grid img')].every(i => i.complete)")
    page.wait_for_timeout(ms)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    def shot(page, name: str) -> None:
        """A 256-colour PNG (a quarter of the size; the repository keeps them)."""
        image = Image.open(io.BytesIO(page.screenshot())).convert("RGB")
        image.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
            args.out / f"{name}.png", optimize=True)

    with tempfile.TemporaryDirectory() as home, sync_playwright() as p:
        server = LiveServer(Path(home), auth=True)
        service = server.service
        service.add_user("aiko")
        service.grant_credits("aiko", 250, memo="screenshots")
        key = service.create_key("aiko", label="studio")[1]
        populate(server, service.authenticate(key))
        browser = launch_chromium(p)
        try:
            # 1. desktop: the main screen mid-generation (queue with progress and a step preview)
            page = browser.new_page(viewport=DESKTOP)
            open_studio(page, server.url)
            sign_in(page, key)
            page.fill("#prompt", "a red circle in the center, blue background")
            page.fill("#steps", "150")
            page.fill("#n", "1")
            page.click("#generate")
            page.fill("#prompt", "a yellow star in the top right, black background")
            page.fill("#steps", "30")
            page.click("#generate")
            page.wait_for_function(
                "(() => { const p = document.querySelector('.stage-live progress'); return p && p.value >= 40; })()",
                timeout=120_000)
            page.wait_for_selector(".stage-live img[src]")
            settle(page)
            shot(page, "desktop-generating")
            page.wait_for_selector("#stage-view .stage-grid img[src]", timeout=120_000)
            page.wait_for_function("!document.querySelector('#queue li.job')", timeout=120_000)
            settle(page)
            shot(page, "desktop-studio")

            # 2. the detail view of an image, with every parameter and the actions
            page.locator("#gallery-grid .thumb").nth(2).click()
            page.wait_for_selector("#detail-image[src]")
            settle(page)
            shot(page, "desktop-detail")

            # 3. inpainting: a brush stroke over the image
            page.click("#act-inpaint")
            page.wait_for_selector("#inpaint[open]")
            box = page.locator("#paint-canvas").bounding_box()
            page.mouse.move(box["x"] + box["width"] * 0.35, box["y"] + box["height"] * 0.45)
            page.mouse.down()
            for i in range(1, 11):
                page.mouse.move(box["x"] + box["width"] * (0.35 + 0.03 * i), box["y"] + box["height"] * (0.45 + 0.015 * i))
            page.mouse.up()
            settle(page)
            shot(page, "desktop-inpaint")
            page.click("#paint-apply")

            # 4. Japanese, with an error message from the server (an invalid size)
            page.select_option("#lang", "ja")
            page.fill("#prompt", "左上に赤い三角、背景は黄色")
            page.fill("#width", "100")
            page.click("#generate")
            page.wait_for_selector("#messages .message.error")
            settle(page)
            shot(page, "desktop-japanese")
            page.close()

            # 5. phone: the form, the result and the history
            context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True, device_scale_factor=2)
            page = context.new_page()
            open_studio(page, server.url)
            sign_in(page, key)
            page.fill("#prompt", "two pink rings, white background")
            page.fill("#steps", "20")
            page.click("#generate")
            page.wait_for_selector("#stage-view .stage-grid img[src]", timeout=120_000)
            settle(page)
            shot(page, "phone-create")
            page.evaluate("window.scrollTo(0, document.querySelector('#stage-title').getBoundingClientRect().top + window.scrollY - 70)")
            settle(page, top=False)
            shot(page, "phone-result")
            page.locator("#gallery-grid .thumb").first.click()
            page.wait_for_selector("#detail-image[src]")
            settle(page)
            shot(page, "phone-detail")
            context.close()
        finally:
            browser.close()
            server.stop()
    for f in sorted(args.out.glob("*.png")):
        print(f.relative_to(ROOT))


if __name__ == "__main__":
    main()
