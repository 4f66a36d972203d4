// History: thumbnails of the user's finished jobs (GET /api/v1/jobs, newest first, paged with
// `before`), search by prompt text (q), and a detail dialog with every parameter and the actions.

import { api } from "./api.js";
import { t } from "./i18n.js";
import { $, debounce, el, notify, showError } from "./ui.js";

const PAGE = 24;
const blobs = new Map(); // image id -> Promise<{blob, url}>

/** The server PNG of an image as a Blob and an object URL (img src cannot carry the API key). */
export function imageBlob(image) {
  if (!blobs.has(image.id)) {
    const p = api.imageBlob(image).then((blob) => ({ blob, url: URL.createObjectURL(blob) }));
    p.catch(() => blobs.delete(image.id));
    blobs.set(image.id, p);
  }
  return blobs.get(image.id);
}

const paramsOf = (job) => job.params ?? job.spec ?? {};

export class Gallery {
  /** actions: {reuse(job, image), vary(job, image), useInit(job, image), inpaint(job, image)}. */
  constructor({ actions, modelLabel }) {
    this.grid = $("#gallery-grid");
    this.actions = actions;
    this.modelLabel = modelLabel;
    this.q = "";
    this.next = null;
    this.done = false;
    this.loading = null;
    this.generation = 0; // bumps on reset so late pages of an old search are dropped
    this.current = null; // {job, image} in the detail dialog
    this.observer = new IntersectionObserver((entries) => {
      if (entries.some((e) => e.isIntersecting)) this.loadMore();
    }, { rootMargin: "400px" });
    this.observer.observe($("#gallery-sentinel"));
    $("#search").addEventListener("input", debounce((e) => this.reset(e.target.value.trim()), 300));
    this.wireDetail();
  }

  async reset(q = this.q) {
    this.q = q;
    this.next = null;
    this.done = false;
    this.generation += 1;
    this.loading = null;
    this.grid.replaceChildren();
    await this.loadMore();
  }

  /** Load the next page (once at a time); more pages load while the sentinel stays in view. */
  loadMore() {
    if (this.done) return Promise.resolve();
    if (this.loading) return this.loading;
    const gen = this.generation;
    this.loading = (async () => {
      try {
        const page = await api.jobs({ limit: PAGE, before: this.next, q: this.q });
        if (gen !== this.generation) return;
        for (const job of page.jobs ?? []) this.appendJob(job);
        this.next = page.next ?? null;
        this.done = !this.next;
      } catch (e) {
        if (gen === this.generation) {
          this.done = true;
          if (e.status !== 401) showError(e);
        }
      } finally {
        if (gen === this.generation) this.loading = null;
        this.updateEmpty();
      }
      // Re-observing makes the observer report the sentinel's current state: if it is still in
      // view (a tall screen, a short page), the next page loads without waiting for a scroll.
      if (gen === this.generation && !this.done) {
        this.observer.unobserve($("#gallery-sentinel"));
        this.observer.observe($("#gallery-sentinel"));
      }
    })();
    return this.loading;
  }

  thumb(job, image) {
    const prompt = paramsOf(job).prompt ?? "";
    const img = el("img", { alt: t("imageAlt", { prompt }), width: image.width, height: image.height, loading: "lazy" });
    const button = el("button", { type: "button", class: "thumb", title: prompt, dataset: { imageId: image.id, jobId: job.id } }, img);
    button.addEventListener("click", () => this.open(job, image));
    imageBlob(image).then(({ url }) => { img.src = url; }, () => button.classList.add("broken"));
    return el("li", { dataset: { imageId: image.id } }, button);
  }

  appendJob(job) {
    for (const image of job.images ?? []) this.grid.append(this.thumb(job, image));
  }

  /** A job that just succeeded goes to the top (if it matches the current search). */
  prependJob(job) {
    const prompt = (paramsOf(job).prompt ?? "").toLowerCase();
    if (this.q && !prompt.includes(this.q.toLowerCase())) return;
    const nodes = (job.images ?? []).filter((im) => !this.grid.querySelector(`li[data-image-id="${im.id}"]`))
      .map((im) => this.thumb(job, im));
    this.grid.prepend(...nodes);
    this.updateEmpty();
  }

  updateEmpty() {
    $("#gallery-empty").hidden = this.grid.children.length > 0 || !!this.loading;
  }

  clear() {
    this.generation += 1;
    this.grid.replaceChildren();
    this.done = true;
    this.updateEmpty();
  }

  // --- the detail dialog ---

  wireDetail() {
    const dlg = $("#detail");
    dlg.querySelector("[data-close]").addEventListener("click", () => dlg.close());
    dlg.addEventListener("click", (e) => { if (e.target === dlg) dlg.close(); }); // backdrop
    const act = (name) => () => {
      const { job, image } = this.current;
      dlg.close();
      this.actions[name](job, image);
    };
    $("#act-reuse").addEventListener("click", act("reuse"));
    $("#act-vary").addEventListener("click", act("vary"));
    $("#act-init").addEventListener("click", act("useInit"));
    $("#act-inpaint").addEventListener("click", act("inpaint"));
    $("#act-delete").addEventListener("click", () => this.deleteCurrent());
  }

  async open(job, image) {
    this.current = { job, image };
    const p = paramsOf(job);
    const rows = [
      ["pPrompt", p.prompt], ["pNegative", p.negative_prompt || "—"], ["pModel", this.modelLabel(p.model)],
      ["pSampler", p.sampler], ["pSteps", p.steps], ["pCfg", p.cfg_scale], ["pSeed", image.seed],
      ["pSize", `${image.width} × ${image.height}`],
    ];
    if (p.loras?.length) rows.push(["pLoras", p.loras.map((l) => `${l.name} ${l.weight}`).join(", ")]);
    if (p.init_image) rows.push(["pInit", t("yes")], ["pStrength", p.strength], ["pMask", p.mask ? t("yes") : t("no")]);
    rows.push(["pCost", job.cost], ["pCreated", new Date(job.created_at).toLocaleString()]);
    $("#detail-params").replaceChildren(
      ...rows.flatMap(([k, v]) => [el("dt", {}, t(k)), el("dd", { dataset: { param: k } }, String(v ?? "—"))]),
    );
    $("#detail-infotext").textContent = image.infotext ?? "";
    const del = $("#act-delete");
    del.textContent = t("delete");
    delete del.dataset.armed;
    const img = $("#detail-image");
    img.alt = t("imageAlt", { prompt: p.prompt ?? "" });
    img.removeAttribute("src");
    const dl = $("#act-download");
    dl.download = `egaku-${image.seed}-${image.id.slice(0, 8)}.png`;
    $("#detail").showModal();
    try {
      const { url } = await imageBlob(image);
      img.src = url;
      dl.href = url;
    } catch (e) {
      showError(e);
    }
  }

  /** Delete asks twice (the button arms for 4 s), then DELETE /api/v1/images/{id}. */
  async deleteCurrent() {
    const del = $("#act-delete");
    if (!del.dataset.armed) {
      del.dataset.armed = "1";
      del.textContent = t("confirmDelete");
      setTimeout(() => { delete del.dataset.armed; del.textContent = t("delete"); }, 4000);
      return;
    }
    const { image } = this.current;
    try {
      await api.deleteImage(image.id);
    } catch (e) {
      showError(e);
      return;
    }
    for (const li of this.grid.querySelectorAll(`li[data-image-id="${image.id}"]`)) li.remove();
    blobs.get(image.id)?.then(({ url }) => URL.revokeObjectURL(url));
    blobs.delete(image.id);
    $("#detail").close();
    this.updateEmpty();
    notify(t("deleted"));
  }
}
