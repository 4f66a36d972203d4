// egaku studio: wires the form, queue, stage, gallery, mask painter and account together.
// Plain ES modules, no build step, nothing from a CDN: the page works offline against `egaku serve`.

import { Account } from "./account.js";
import { api } from "./api.js";
import { builtinLabel, GenerationForm } from "./form.js";
import { Gallery, imageBlob } from "./gallery.js";
import { initialLanguage, setLanguage, t } from "./i18n.js";
import { MaskPainter } from "./inpaint.js";
import { Queue } from "./queue.js";
import { $, clearErrors, debounce, el, notify, showError } from "./ui.js";

const THEME_STORAGE = "egaku.theme";

// 1. language and theme first, so nothing flashes in the wrong one
setLanguage(initialLanguage());
$("#lang").value = document.documentElement.lang;
document.documentElement.dataset.theme = localStorage.getItem(THEME_STORAGE) || "dark";

// 2. the parts
const form = new GenerationForm({ onChange: () => updateCost() });
const painter = new MaskPainter();
const queue = new Queue({ onProgress: showProgress, onDone: finished });
const gallery = new Gallery({
  modelLabel: (name) => name ?? builtinLabel(form.models[0]?.name),
  actions: {
    reuse: (job, image) => {
      form.clearInit();
      form.applyParams(job.params ?? {}, { seed: image.seed });
      $("#prompt").focus();
    },
    vary: (job) => {
      form.clearInit();
      form.applyParams(job.params ?? {}, { seed: null });
      generate();
    },
    useInit: (job, image) => useAsInit(image),
    inpaint: async (job, image) => {
      if (await useAsInit(image)) await paintMask();
    },
  },
});
const account = new Account({ onChange: accountChanged });
let formLoaded = false;

// 3. generating
async function generate() {
  if ($("#generate").disabled) return; // not signed in, or the form is not filled from the server yet
  const spec = form.spec();
  if (!spec.prompt) {
    notify(t("noPrompt"), { kind: "error", code: "no_prompt" });
    $("#prompt").focus();
    return;
  }
  clearErrors();
  try {
    await queue.submit(spec);
  } catch (e) {
    showError(e);
    if (e.status === 401) account.refresh(); // the key was revoked: offer sign-in again
  }
  account.updateBalance();
}

$("#gen-form").addEventListener("submit", (e) => {
  e.preventDefault();
  generate();
});
document.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && (e.ctrlKey || e.metaKey) && !document.querySelector("dialog[open]")) {
    e.preventDefault();
    generate();
  }
});

// 4. the stage: the running job's step preview, then the finished images
function showProgress(job, preview, progress) {
  const view = $("#stage-view");
  let fig = view.querySelector(".stage-live");
  if (!fig) {
    fig = el("figure", { class: "stage-live" },
      el("img", { class: "stage-image", alt: "" }),
      el("figcaption", {}, el("progress", { max: "1", value: "0" })));
    view.replaceChildren(fig);
  }
  fig.dataset.jobId = job.id;
  const img = fig.querySelector("img");
  if (preview) img.src = preview;
  img.hidden = !img.getAttribute("src");
  const bar = fig.querySelector("progress");
  bar.max = progress.total;
  bar.value = progress.step;
  bar.setAttribute("aria-label", t("statusRunning", { step: progress.step, total: progress.total }));
}

function finished(job) {
  if (job.status === "succeeded") {
    const images = job.images ?? [];
    const grid = el("div", { class: `stage-grid n${Math.min(images.length, 4)}`, dataset: { jobId: job.id } });
    for (const image of images) {
      const img = el("img", { class: "stage-image", alt: t("imageAlt", { prompt: job.params?.prompt ?? "" }), dataset: { imageId: image.id } });
      const b = el("button", { type: "button", class: "stage-item" }, img);
      b.addEventListener("click", () => gallery.open(job, image));
      imageBlob(image).then(({ url }) => { img.src = url; }, showError);
      grid.append(b);
    }
    $("#stage-view").replaceChildren(grid);
    if (images.length) form.setLastSeed(images[0].seed);
    gallery.prependJob(job);
  } else if (job.status === "failed") {
    notify(t("statusFailed", { error: job.error ?? "" }), { kind: "error", code: "job_failed" });
    $("#stage-view").querySelector(`.stage-live[data-job-id="${job.id}"]`)?.remove();
  }
  account.updateBalance();
}

// 5. img2img and inpainting
async function useAsInit(image) {
  try {
    const { blob } = await imageBlob(image);
    await form.setInit(blob);
  } catch (e) {
    showError(e);
    return false;
  }
  notify(t("initSet"));
  $("#strength").focus();
  return true;
}

async function paintMask() {
  if (!form.init) return;
  const mask = await painter.open(form.init.url, form.init.width, form.init.height);
  if (mask !== undefined) form.setMask(mask);
}
$("#paint-mask").addEventListener("click", paintMask);

// 6. the cost of the next generation (debounced POST /api/v1/cost)
let costAbort = null;
const updateCost = debounce(async () => {
  if (!formLoaded || !account.signedIn) return;
  const line = $("#cost");
  costAbort?.abort();
  costAbort = new AbortController();
  try {
    const credits = await api.cost(form.spec({ withImages: false }), costAbort.signal);
    line.classList.remove("error");
    line.dataset.credits = String(credits);
    line.textContent = credits === 1 ? t("costOne") : t("cost", { n: credits });
    if (account.authMode === false) line.textContent += ` · ${t("costLocal")}`;
  } catch (e) {
    if (e.name === "AbortError") return;
    delete line.dataset.credits;
    line.classList.add("error");
    line.textContent = e.message;
  }
}, 250);

// 7. account changes: load what the user may see
let signInNotice = null;
async function accountChanged(acc) {
  signInNotice?.remove();
  if (!acc) {
    $("#generate").disabled = true;
    gallery.clear();
    signInNotice = notify(t("signInNeeded"), { sticky: true });
    $("#cost").textContent = "";
    document.body.dataset.ready = "1";
    return;
  }
  clearErrors(); // e.g. the 401 of a key that has since been replaced
  try {
    if (!formLoaded) {
      await form.load();
      formLoaded = true;
    }
    $("#generate").disabled = false;
  } catch (e) {
    showError(e);
  }
  updateCost();
  await gallery.reset("");
  document.body.dataset.ready = "1";
}

// 8. header controls
$("#lang").addEventListener("change", (e) => {
  setLanguage(e.target.value);
  for (const m of document.querySelectorAll("#messages .message:not(.error)")) m.remove(); // said in the old language
  signInNotice = account.authMode && !account.signedIn ? notify(t("signInNeeded"), { sticky: true }) : null;
  queue.retranslate();
  account.render();
  form.retranslate();
  updateCost();
});
$("#theme").addEventListener("click", () => {
  const next = document.documentElement.dataset.theme === "dark" ? "light" : "dark";
  document.documentElement.dataset.theme = next;
  localStorage.setItem(THEME_STORAGE, next);
});

account.refresh();
