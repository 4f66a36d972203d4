"""The studio's LoRA picker: a library LoRA is offered, added with a weight, sent with the job, shown in the
image's details, and restored by "Reuse settings"."""

from __future__ import annotations

from lorakit import builtin_lora
from studio_live import expect, open_studio


def test_lora_picker_generates_with_the_lora_and_reuse_restores_it(page, studio, egaku_home):
    builtin_lora(egaku_home, "zqx", seed=1)  # in the library before the page asks for the list
    open_studio(page, studio.url)
    assert page.locator("#lora-empty").is_hidden()
    assert page.locator("#lora-add option").all_inner_texts() == ["Add a LoRA…", "zqx"]

    page.select_option("#lora-add", "zqx")
    item = page.locator('#lora-list li[data-name="zqx"]')
    expect(item).to_be_visible()
    assert "zqx style" in item.inner_text()  # its trigger words
    assert page.locator('#lora-add option[value="zqx"]').is_disabled()  # added once
    item.locator("input[type=range]").fill("0.5")
    expect(item.locator("output")).to_have_text("0.50")

    page.fill("#prompt", "a red circle, lora picker")
    page.fill("#steps", "3")
    page.select_option("#seed-mode", "fixed")
    page.fill("#seed", "99")
    page.click("#generate")
    card = page.locator("#queue li.job").first
    card.wait_for()
    job_id = card.get_attribute("data-job-id")
    thumb = page.locator(f'#gallery-grid .thumb[data-job-id="{job_id}"]')
    thumb.locator("img[src]").wait_for(timeout=60_000)

    job = studio.service.get_job(studio.local(), job_id)
    assert job.spec["loras"] == [{"name": "zqx", "weight": 0.5}]
    assert job.images[0].infotext.startswith("a red circle, lora picker <lora:zqx:0.5>\n")

    # removed from the picker, then brought back by the image's "Reuse settings"
    item.get_by_role("button", name="Remove zqx").click()
    expect(page.locator("#lora-list li")).to_have_count(0)
    thumb.click()
    assert page.locator('#detail dd[data-param="pLoras"]').inner_text() == "zqx 0.5"
    page.click("#act-reuse")
    expect(item).to_be_visible()
    assert item.locator("input[type=range]").input_value() == "0.5"

    # and in Japanese
    page.select_option("#lang", "ja")
    assert page.inner_text("label[for=lora-add]") == "LoRA"
    assert page.locator("#lora-add option").first.inner_text() == "LoRA を追加…"
    assert item.locator("input[type=range]").get_attribute("aria-label") == "zqx の強さ"
