// The generation form: prompt, model, sampler, LoRAs, steps, CFG, size presets, seed, batch, init image and mask.
// It turns its fields into the JSON body of POST /api/v1/jobs (and /api/v1/cost).

import { api, blobToBase64 } from "./api.js";
import { t } from "./i18n.js";
import { LoraPicker } from "./loras.js";
import { $, el, notify } from "./ui.js";

// Aspect-ratio presets, scaled so width*height stays near the model's native area (multiples of 8).
const RATIOS = [["1:1", 1, 1], ["4:3", 4, 3], ["3:4", 3, 4], ["16:9", 16, 9], ["9:16", 9, 16]];
const FORM_STORAGE = "egaku.form";
const MAX_SIDE = 2048; // egaku.engine.request.MAX_SIDE

const round8 = (x) => Math.max(64, Math.round(x / 8) * 8);

/** [width, height] for a ratio at a model's native side: 128 px 4:3 -> 144x112. */
export function presetSize(native, rw, rh) {
  const r = Math.sqrt(rw / rh);
  return [round8(native * r), round8(native / r)];
}

/** A model's native [width, height] from /api/v1/models' default_size (int, [w, h] or {width, height}). */
function nativeSize(model) {
  const d = model?.default_size;
  if (Array.isArray(d)) return [d[0], d[1]];
  if (d && typeof d === "object") return [d.width, d.height];
  if (Number.isFinite(d)) return [d, d];
  return [512, 512];
}

/** The built-in model's name as shown: "builtin" reads as "Built-in shapes model". */
export function builtinLabel(name) {
  return /^built-?in$/i.test(name ?? "") ? t("builtinModel") : `${name} (${t("builtin")})`;
}

function imageSize(url) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve([img.naturalWidth, img.naturalHeight]);
    img.onerror = () => reject(new Error("not an image"));
    img.src = url;
  });
}

export class GenerationForm {
  constructor({ onChange }) {
    this.form = $("#gen-form");
    this.onChange = onChange;
    this.models = [];
    this.ratio = "1:1";
    this.init = null; // {blob, base64, url, width, height}
    this.mask = null; // {base64, url}
    this.lastSeed = null;
    this.f = {
      prompt: $("#prompt"), negative: $("#negative"), model: $("#model"), sampler: $("#sampler"),
      steps: $("#steps"), stepsRange: $("#steps-range"), cfg: $("#cfg"), cfgRange: $("#cfg-range"),
      cfgRescale: $("#cfg-rescale"), cfgRescaleRange: $("#cfg-rescale-range"),
      width: $("#width"), height: $("#height"), seedMode: $("#seed-mode"), seed: $("#seed"), n: $("#n"),
      strength: $("#strength"), strengthOut: $("#strength-out"),
    };
    this.loras = new LoraPicker({ onChange: () => this.changed() });
    this.buildRatios();
    this.wire();
  }

  buildRatios() {
    const box = $("#ratios");
    for (const [label, rw, rh] of RATIOS) {
      const b = el("button", { type: "button", class: "seg", "aria-pressed": "false", dataset: { ratio: label } }, label);
      b.addEventListener("click", () => this.selectRatio(label));
      box.append(b);
    }
  }

  wire() {
    const f = this.f;
    const pair = (num, range) => {
      range.addEventListener("input", () => { num.value = range.value; this.changed(); });
      num.addEventListener("input", () => { range.value = num.value; this.changed(); });
    };
    pair(f.steps, f.stepsRange);
    pair(f.cfg, f.cfgRange);
    pair(f.cfgRescale, f.cfgRescaleRange);
    for (const x of [f.prompt, f.negative, f.sampler, f.seed, f.n]) x.addEventListener("input", () => this.changed());
    f.model.addEventListener("change", () => { if (!this.init) this.selectRatio(this.ratio); this.changed(); });
    for (const x of [f.width, f.height]) x.addEventListener("input", () => { this.markRatio(null); this.changed(); });
    f.seedMode.addEventListener("change", () => { this.syncSeed(); this.changed(); });
    f.strength.addEventListener("input", () => { f.strengthOut.value = Number(f.strength.value).toFixed(2); this.changed(); });
    $("#init-file").addEventListener("change", async (e) => {
      const file = e.target.files?.[0];
      if (file) await this.setInit(file);
      e.target.value = "";
    });
    $("#clear-init").addEventListener("click", () => this.clearInit());
    $("#clear-mask").addEventListener("click", () => this.setMask(null));
  }

  /** Fill the model, sampler and LoRA lists from the server, then restore the last session's fields. */
  async load() {
    const saved = this.saved(); // read first: filling the lists below saves the form as it is then
    const [models, samplers, loras] = await Promise.all([api.models(), api.samplers(), api.loras()]);
    this.models = models;
    this.loras.load(loras);
    this.f.model.replaceChildren(
      ...models.map((m, i) => el("option", { value: m.name, dataset: { index: String(i) } },
        i === 0 ? builtinLabel(m.name) : m.name)),
    );
    this.f.sampler.replaceChildren(...samplers.map((s) => el("option", { value: s }, s)));
    if (samplers.includes("Euler a")) this.f.sampler.value = "Euler a";
    this.selectRatio("1:1");
    this.restore(saved);
    this.syncSeed();
  }

  /** After a language switch: strings the form set itself. */
  retranslate() {
    const first = this.f.model.options[0];
    if (first) first.textContent = builtinLabel(this.models[0]?.name);
    this.loras.render();
    this.syncSeed();
  }

  currentModel() {
    return this.models[this.f.model.selectedIndex] ?? this.models[0];
  }

  selectRatio(label) {
    const [rw, rh] = RATIOS.find((r) => r[0] === label)?.slice(1) ?? [1, 1];
    const [w, h] = nativeSize(this.currentModel());
    const [pw, ph] = presetSize(Math.sqrt(w * h), rw, rh);
    this.f.width.value = pw;
    this.f.height.value = ph;
    this.markRatio(label);
    this.changed();
  }

  markRatio(label) {
    this.ratio = label ?? this.ratio;
    for (const b of $("#ratios").children) b.setAttribute("aria-pressed", String(b.dataset.ratio === label));
  }

  syncSeed() {
    const mode = this.f.seedMode.value;
    this.f.seed.disabled = mode !== "fixed";
    if (mode === "reuse") this.f.seed.value = this.lastSeed ?? "";
    if (mode === "random") this.f.seed.value = "";
    this.f.seed.placeholder = mode === "random" ? t("seedRandom") : "";
  }

  setLastSeed(seed) {
    this.lastSeed = seed;
    this.syncSeed();
  }

  seedValue() {
    const mode = this.f.seedMode.value;
    if (mode === "fixed" && this.f.seed.value !== "") return Number(this.f.seed.value);
    if (mode === "reuse" && this.lastSeed !== null) return this.lastSeed;
    return -1;
  }

  /** The JSON body for POST /api/v1/jobs; withImages=false leaves the image bytes out (for /cost). */
  spec({ withImages = true } = {}) {
    const f = this.f;
    const model = this.f.model.selectedIndex > 0 ? f.model.value : null; // index 0 = built-in -> null
    const spec = {
      prompt: f.prompt.value.trim(),
      negative_prompt: f.negative.value.trim(),
      model,
      sampler: f.sampler.value || "Euler a",
      steps: Math.round(Number(f.steps.value)),
      cfg_scale: Number(f.cfg.value),
      cfg_rescale: Number(f.cfgRescale.value),
      seed: this.seedValue(),
      width: Math.round(Number(f.width.value)),
      height: Math.round(Number(f.height.value)),
      n: Math.round(Number(f.n.value)),
    };
    const loras = this.loras.value();
    if (loras.length) spec.loras = loras;
    if (this.init) {
      spec.strength = Number(f.strength.value);
      if (withImages) spec.init_image = this.init.base64;
      if (this.mask) {
        if (withImages) spec.mask = this.mask.base64;
        spec.mask_blur = 4;
      }
    }
    return spec;
  }

  /** Reuse settings: put a job's parameters (JobView.params) back into the form; seed fixed to `seed`. */
  applyParams(params, { seed = null } = {}) {
    const f = this.f;
    f.prompt.value = params.prompt ?? "";
    f.negative.value = params.negative_prompt ?? "";
    const idx = params.model ? this.models.findIndex((m) => m.name === params.model) : 0;
    f.model.selectedIndex = Math.max(0, idx);
    if (params.sampler) f.sampler.value = params.sampler;
    this.loras.set(params.loras ?? []);
    if (params.steps) f.steps.value = f.stepsRange.value = params.steps;
    if (params.cfg_scale !== undefined) f.cfg.value = f.cfgRange.value = params.cfg_scale;
    f.cfgRescale.value = f.cfgRescaleRange.value = params.cfg_rescale ?? 0; // jobs from before it: off
    if (params.width) f.width.value = params.width;
    if (params.height) f.height.value = params.height;
    const match = RATIOS.find(([label, rw, rh]) => {
      const [w, h] = nativeSize(this.currentModel());
      const [pw, ph] = presetSize(Math.sqrt(w * h), rw, rh);
      return pw === Number(f.width.value) && ph === Number(f.height.value);
    });
    this.markRatio(match ? match[0] : null);
    if (params.n) f.n.value = params.n;
    if (params.strength !== undefined) {
      f.strength.value = params.strength;
      f.strengthOut.value = Number(params.strength).toFixed(2);
    }
    if (seed === null || seed < 0) f.seedMode.value = "random";
    else {
      f.seedMode.value = "fixed";
      f.seed.value = seed;
    }
    this.syncSeed();
    if (seed !== null && seed >= 0) f.seed.value = seed;
    this.changed();
  }

  /** img2img: use a PNG/JPEG/WebP blob as the init image; the output size follows the image. */
  async setInit(blob) {
    const url = URL.createObjectURL(blob);
    let size;
    try {
      size = await imageSize(url);
    } catch {
      URL.revokeObjectURL(url);
      notify(t("errInvalid", { message: "not an image" }), { kind: "error", code: "invalid_image", status: 400 });
      return;
    }
    if (this.init) URL.revokeObjectURL(this.init.url);
    this.init = { blob, url, base64: await blobToBase64(blob), width: size[0], height: size[1] };
    this.setMask(null);
    $("#init-preview").src = url;
    $("#init-block").hidden = false;
    const scale = Math.min(1, MAX_SIDE / Math.max(size[0], size[1])); // the engine's limit per side
    this.f.width.value = round8(size[0] * scale);
    this.f.height.value = round8(size[1] * scale);
    this.markRatio(null);
    this.changed();
  }

  /** mask: {base64, url} of a white-on-black PNG at the init image's size, or null. */
  setMask(mask) {
    this.mask = mask;
    const preview = $("#mask-preview");
    preview.hidden = !mask;
    if (mask) preview.src = mask.url;
    $("#mask-badge").hidden = !mask;
    $("#clear-mask").hidden = !mask;
    this.changed();
  }

  clearInit() {
    if (this.init) URL.revokeObjectURL(this.init.url);
    this.init = null;
    this.mask = null;
    $("#init-block").hidden = true;
    $("#mask-preview").hidden = true;
    this.selectRatio(this.ratio || "1:1");
  }

  changed() {
    this.save();
    this.onChange?.();
  }

  save() {
    const f = this.f;
    const data = {
      prompt: f.prompt.value, negative: f.negative.value, model: f.model.value, sampler: f.sampler.value,
      steps: f.steps.value, cfg: f.cfg.value, width: f.width.value, height: f.height.value,
      ratio: this.ratio, seedMode: f.seedMode.value, seed: f.seed.value, n: f.n.value, loras: this.loras.value(),
    };
    localStorage.setItem(FORM_STORAGE, JSON.stringify(data));
  }

  saved() {
    try {
      return JSON.parse(localStorage.getItem(FORM_STORAGE) || "null");
    } catch {
      return null;
    }
  }

  restore(d = this.saved()) {
    if (!d) return;
    const f = this.f;
    f.prompt.value = d.prompt ?? "";
    f.negative.value = d.negative ?? "";
    if ([...f.model.options].some((o) => o.value === d.model)) f.model.value = d.model;
    if ([...f.sampler.options].some((o) => o.value === d.sampler)) f.sampler.value = d.sampler;
    if (d.steps) f.steps.value = f.stepsRange.value = d.steps;
    if (d.cfg) f.cfg.value = f.cfgRange.value = d.cfg;
    if (d.width) f.width.value = d.width;
    if (d.height) f.height.value = d.height;
    this.markRatio(RATIOS.some((r) => r[0] === d.ratio) ? d.ratio : null);
    if (d.seedMode) f.seedMode.value = d.seedMode;
    if (d.seed) f.seed.value = d.seed;
    if (d.n) f.n.value = d.n;
    this.loras.set(d.loras ?? []);
  }
}
