// The mask painter: a brush on a canvas at the init image's own pixel size. The mask sent to the
// server is a white-on-black PNG of that size (white = repaint), as egaku's and A1111's inpainting expect.

import { blobToBase64 } from "./api.js";
import { $ } from "./ui.js";

const STROKE = "rgb(255, 56, 112)"; // what the user sees; the mask is the stroke's alpha

export class MaskPainter {
  constructor() {
    this.dialog = $("#inpaint");
    this.canvas = $("#paint-canvas");
    this.ctx = this.canvas.getContext("2d", { willReadFrequently: true });
    this.brush = $("#brush");
    this.eraseButton = $("#paint-erase");
    this.erasing = false;
    this.forUrl = null;
    this.resolve = null;
    this.last = null;
    this.wire();
  }

  wire() {
    const c = this.canvas;
    c.addEventListener("pointerdown", (e) => {
      e.preventDefault();
      c.setPointerCapture(e.pointerId);
      this.last = this.point(e);
      this.stroke(this.last, this.last);
    });
    c.addEventListener("pointermove", (e) => {
      if (!this.last) return;
      const p = this.point(e);
      this.stroke(this.last, p);
      this.last = p;
    });
    const end = () => { this.last = null; };
    c.addEventListener("pointerup", end);
    c.addEventListener("pointercancel", end);
    this.brush.addEventListener("input", () => this.showBrush());
    this.eraseButton.addEventListener("click", () => {
      this.erasing = !this.erasing;
      this.eraseButton.setAttribute("aria-pressed", String(this.erasing));
    });
    $("#paint-clear").addEventListener("click", () => this.ctx.clearRect(0, 0, c.width, c.height));
    $("#paint-invert").addEventListener("click", () => this.invert());
    $("#paint-apply").addEventListener("click", () => this.apply());
    this.dialog.querySelector("[data-close]").addEventListener("click", () => this.dialog.close());
    this.dialog.addEventListener("close", () => this.finish(undefined));
    this.dialog.addEventListener("keydown", (e) => {
      if (e.key === "[" || e.key === "]") {
        this.brush.value = Number(this.brush.value) + (e.key === "]" ? 4 : -4);
        this.showBrush();
      }
    });
  }

  /** Open over the image at `url` (width x height px); resolves {base64, url} | null (no mask) | undefined (closed). */
  open(url, width, height) {
    if (this.forUrl !== url || this.canvas.width !== width || this.canvas.height !== height) {
      this.canvas.width = width;
      this.canvas.height = height;
      this.forUrl = url;
      this.brush.max = String(Math.max(8, Math.round(Math.max(width, height) / 2)));
      this.brush.value = String(Math.max(2, Math.round(Math.min(width, height) / 8)));
    }
    $("#paint-image").src = url;
    $(".paint-stage").style.aspectRatio = `${width} / ${height}`;
    this.showBrush();
    this.dialog.showModal();
    return new Promise((resolve) => { this.resolve = resolve; });
  }

  showBrush() {
    $("#brush-out").value = `${this.brush.value} px`;
  }

  /** Pointer position in canvas (= image) pixels. */
  point(e) {
    const r = this.canvas.getBoundingClientRect();
    return [(e.clientX - r.left) * (this.canvas.width / r.width), (e.clientY - r.top) * (this.canvas.height / r.height)];
  }

  stroke([x0, y0], [x1, y1]) {
    const ctx = this.ctx;
    ctx.globalCompositeOperation = this.erasing ? "destination-out" : "source-over";
    ctx.strokeStyle = STROKE;
    ctx.lineWidth = Number(this.brush.value);
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    ctx.beginPath();
    ctx.moveTo(x0, y0);
    ctx.lineTo(x1 + 0.01, y1); // a zero-length line draws nothing; a dot needs a hair of length
    ctx.stroke();
  }

  invert() {
    const { width, height } = this.canvas;
    const data = this.ctx.getImageData(0, 0, width, height);
    const px = data.data;
    for (let i = 0; i < px.length; i += 4) {
      px[i] = 255; px[i + 1] = 56; px[i + 2] = 112;
      px[i + 3] = 255 - px[i + 3];
    }
    this.ctx.putImageData(data, 0, 0);
  }

  /** The mask PNG: each pixel's grey level is the painted alpha (255 = repaint fully). */
  async maskBlob() {
    const { width, height } = this.canvas;
    const src = this.ctx.getImageData(0, 0, width, height).data;
    const out = new ImageData(width, height);
    let painted = 0;
    for (let i = 0; i < src.length; i += 4) {
      const a = src[i + 3];
      out.data[i] = out.data[i + 1] = out.data[i + 2] = a;
      out.data[i + 3] = 255;
      painted += a > 0;
    }
    if (!painted) return null;
    const c = document.createElement("canvas");
    c.width = width;
    c.height = height;
    c.getContext("2d").putImageData(out, 0, 0);
    return new Promise((resolve) => c.toBlob(resolve, "image/png"));
  }

  async apply() {
    const blob = await this.maskBlob();
    const mask = blob ? { base64: await blobToBase64(blob), url: URL.createObjectURL(blob) } : null;
    this.finish(mask);
    this.dialog.close();
  }

  finish(value) {
    const resolve = this.resolve;
    this.resolve = null;
    resolve?.(value);
  }
}
