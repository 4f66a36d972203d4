// The queue: one card per submitted job with its status, queue position, live step progress and
// step preview (from GET /api/v1/jobs/{id}/events), and a cancel button.

import { api, streamEvents } from "./api.js";
import { t } from "./i18n.js";
import { $, el, showError } from "./ui.js";

const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
const POLL_MS = 1500;

export class Queue {
  /** onProgress(job, previewDataUrl|null), onDone(job) drive the stage and the gallery. */
  constructor({ onProgress, onDone }) {
    this.list = $("#queue");
    this.onProgress = onProgress;
    this.onDone = onDone;
    this.cards = new Map(); // job id -> {job, node, parts, progress}
    this.timer = null;
  }

  /** POST the spec; on success a card appears and follows the job until it ends. */
  async submit(spec) {
    const job = await api.submit(spec);
    this.track(job);
    return job;
  }

  track(job) {
    const parts = {
      preview: el("img", { class: "job-preview", alt: "", hidden: true }),
      prompt: el("p", { class: "job-prompt" }, job.params?.prompt ?? job.spec?.prompt ?? ""),
      status: el("p", { class: "job-status" }),
      bar: el("progress", { class: "job-bar", max: "1", value: "0" }),
      cancel: el("button", { type: "button", class: "btn small ghost" }, t("cancel")),
    };
    parts.cancel.addEventListener("click", () => this.cancel(job.id));
    const node = el(
      "li", { class: "job", dataset: { jobId: job.id } },
      el("div", { class: "job-thumb" }, parts.preview),
      el("div", { class: "job-main" }, parts.prompt, parts.status, parts.bar),
      parts.cancel,
    );
    this.list.prepend(node);
    const card = { job, node, parts, progress: null };
    this.cards.set(job.id, card);
    this.render(card);
    this.updateEmpty();
    this.follow(card);
    this.schedulePoll();
  }

  async follow(card) {
    const id = card.job.id;
    try {
      await streamEvents(id, (kind, data) => this.onEvent(card, kind, data));
    } catch (e) {
      if (e.status && e.status !== 404) showError(e);
    }
    // The stream closed (or failed) before a terminal state: fall back to polling the job.
    while (this.cards.has(id) && !TERMINAL.has(card.job.status)) {
      await new Promise((r) => setTimeout(r, POLL_MS));
      try {
        this.update(card, await api.job(id));
      } catch (e) {
        if (e.status !== 0) { showError(e); break; }
      }
    }
  }

  onEvent(card, kind, data) {
    if (kind === "progress") {
      card.progress = data;
      if (card.job.status === "queued") card.job.status = "running";
      card.job.position = null;
      if (data.preview) {
        card.parts.preview.src = data.preview;
        card.parts.preview.hidden = false;
      }
      this.render(card);
      this.onProgress?.(card.job, data.preview || null, data);
    } else if (kind === "status" || kind === "done") {
      this.update(card, data);
    }
  }

  update(card, job) {
    if (!job || !job.id) return;
    const was = card.job.status;
    card.job = { ...card.job, ...job };
    if (job.progress && !card.progress) card.progress = job.progress;
    this.render(card);
    if (was !== job.status) this.refreshPositions(card.job.id);
    if (TERMINAL.has(job.status) && !card.finished) {
      card.finished = true;
      this.onDone?.(card.job);
      setTimeout(() => this.remove(card.job.id), job.status === "succeeded" ? 2500 : 8000);
    }
  }

  render(card) {
    const { job, parts, progress, node } = card;
    node.dataset.status = job.status;
    let text;
    if (job.status === "queued") {
      text = job.position ? t("statusQueued", { pos: job.position }) : t("statusNext");
    } else if (job.status === "running") {
      const p = progress || job.progress;
      text = p ? t("statusRunning", { step: p.step, total: p.total }) : t("statusStarting");
      const n = job.params?.n ?? 1;
      if (p && n > 1 && p.image_index !== undefined) text += ` · ${t("statusImage", { i: p.image_index + 1, n })}`;
      if (p) {
        parts.bar.max = p.total;
        parts.bar.value = p.step;
      }
    } else if (job.status === "succeeded") {
      text = t("statusSucceeded");
      parts.bar.value = parts.bar.max;
    } else if (job.status === "failed") {
      text = t("statusFailed", { error: job.error ?? "" });
    } else {
      text = t("statusCancelled");
    }
    if (job.status === "queued") parts.bar.removeAttribute("value"); // indeterminate
    parts.status.textContent = text;
    parts.cancel.hidden = TERMINAL.has(job.status);
  }

  async cancel(id) {
    const card = this.cards.get(id);
    if (!card) return;
    card.parts.cancel.disabled = true;
    try {
      this.update(card, await api.cancel(id));
    } catch (e) {
      showError(e);
      card.parts.cancel.disabled = false;
    }
  }

  /** Queue positions move when another job starts or ends: re-read the queued ones. */
  async refreshPositions(exceptId) {
    for (const card of this.cards.values()) {
      if (card.job.id === exceptId || card.job.status !== "queued") continue;
      try {
        this.update(card, await api.job(card.job.id));
      } catch {
        /* shown by the stream or the next poll */
      }
    }
  }

  schedulePoll() {
    if (this.timer) return;
    this.timer = setInterval(() => {
      const queued = [...this.cards.values()].some((c) => c.job.status === "queued");
      if (queued) this.refreshPositions(null);
      if (!this.cards.size) {
        clearInterval(this.timer);
        this.timer = null;
      }
    }, POLL_MS);
  }

  remove(id) {
    const card = this.cards.get(id);
    if (!card) return;
    this.cards.delete(id);
    card.node.remove();
    this.updateEmpty();
  }

  /** Re-render status lines after a language switch. */
  retranslate() {
    for (const card of this.cards.values()) {
      card.parts.cancel.textContent = t("cancel");
      this.render(card);
    }
  }

  updateEmpty() {
    $("#queue-empty").hidden = this.cards.size > 0;
  }
}
