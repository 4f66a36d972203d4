// The LoRA picker of the settings panel: add a library LoRA (GET /api/v1/loras), set its weight with a
// slider, remove it. Its value is the `loras` field of POST /api/v1/jobs: [{name, weight}].

import { t } from "./i18n.js";
import { $, el } from "./ui.js";

const MIN = -2; // the slider's range (A1111's usual 0..1, with room both ways); the API takes -10..10
const MAX = 2;

export class LoraPicker {
  constructor({ onChange }) {
    this.onChange = onChange;
    this.available = []; // [{name, hash, trigger_words, ...}]
    this.items = []; // [{name, weight}]
    this.select = $("#lora-add");
    this.list = $("#lora-list");
    this.select.addEventListener("change", () => {
      const name = this.select.value;
      this.select.value = "";
      if (name) this.add(name);
    });
  }

  /** Fill the "add" list from the library; LoRAs no longer there are dropped from the selection. */
  load(available) {
    this.available = available;
    const known = new Set(available.map((l) => l.name));
    this.items = this.items.filter((i) => known.has(i.name));
    this.render();
  }

  value() {
    return this.items.map(({ name, weight }) => ({ name, weight }));
  }

  /** Put a job's `loras` back (reuse settings, the saved form); ones not in the library are left out. */
  set(loras) {
    const known = new Set(this.available.map((l) => l.name));
    this.items = (loras ?? []).filter((l) => known.has(l?.name))
      .map((l) => ({ name: l.name, weight: Number.isFinite(Number(l.weight)) ? Number(l.weight) : 1 }));
    this.render();
  }

  add(name) {
    if (!this.items.some((i) => i.name === name)) this.items.push({ name, weight: 1 });
    this.render();
    this.onChange?.();
    this.list.querySelector(`li[data-name="${CSS.escape(name)}"] input`)?.focus();
  }

  remove(name) {
    this.items = this.items.filter((i) => i.name !== name);
    this.render();
    this.onChange?.();
    this.select.focus();
  }

  render() {
    const chosen = new Set(this.items.map((i) => i.name));
    this.select.replaceChildren(
      el("option", { value: "", "data-i18n": "loraAdd" }, t("loraAdd")),
      ...this.available.map((l) => el("option", {
        value: l.name, disabled: chosen.has(l.name), title: (l.trigger_words ?? []).join(", ") || null,
      }, l.name)),
    );
    this.select.disabled = this.available.length === 0;
    $("#lora-empty").hidden = this.available.length > 0;
    this.list.replaceChildren(...this.items.map((item) => this.row(item)));
  }

  row(item) {
    const info = this.available.find((l) => l.name === item.name);
    const out = el("output", {}, item.weight.toFixed(2));
    const range = el("input", {
      type: "range", min: String(MIN), max: String(MAX), step: "0.05", value: String(item.weight),
      "aria-label": t("loraWeight", { name: item.name }),
    });
    range.addEventListener("input", () => {
      item.weight = Number(range.value);
      out.value = item.weight.toFixed(2);
      this.onChange?.();
    });
    const remove = el("button", { type: "button", class: "btn ghost icon small", "aria-label": t("loraRemove", { name: item.name }) }, "✕");
    remove.addEventListener("click", () => this.remove(item.name));
    const words = info?.trigger_words?.length ? el("span", { class: "lora-words muted small" }, info.trigger_words.join(", ")) : null;
    return el("li", { class: "lora-item", dataset: { name: item.name } },
      el("span", { class: "lora-name", title: item.name }, item.name), range, out, remove, words);
  }
}
