// Small DOM helpers and the page's message area (every server error is shown here, in words).

import { t } from "./i18n.js";

export const $ = (sel, root = document) => root.querySelector(sel);

/** Create an element: el("button", {class: "btn", onclick}, "text", child...). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "class") node.className = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

/** A user-facing sentence for an ApiError (or any Error), built from the server's JSON message. */
export function describeError(err) {
  const message = err?.message || String(err);
  switch (err?.status) {
    case 0: return t("errNetwork");
    case 400: case 413: case 422: return t("errInvalid", { message });
    case 401: return t("errUnauthorized");
    case 402: return t("errCredits", { message });
    case 403: return t("errForbidden", { message });
    case 404: return t("errNotFound", { message });
    case 429: return t("errRate", { s: err.retryAfter ?? "?", message });
    default:
      if (err?.status >= 500) return t("errServer", { message });
      return t("errGeneric", { message });
  }
}

const MAX_MESSAGES = 4;

/** Show a message at the top of the page; kind "error" | "info". Errors (and sticky ones) stay until dismissed. */
export function notify(text, { kind = "info", code = "", status = "", sticky = false } = {}) {
  const box = $("#messages");
  const dismiss = el("button", { type: "button", class: "btn ghost icon small", "aria-label": t("dismiss") }, "✕");
  const item = el(
    "div",
    { class: `message ${kind}`, role: kind === "error" ? "alert" : "status", dataset: { code, status: String(status) } },
    el("span", { class: "message-text" }, text),
    dismiss,
  );
  dismiss.addEventListener("click", () => item.remove());
  box.prepend(item);
  while (box.children.length > MAX_MESSAGES) box.lastElementChild.remove();
  if (kind !== "error" && !sticky) setTimeout(() => item.remove(), 6000);
  return item;
}

export function showError(err) {
  if (err?.name === "AbortError") return null;
  console.warn(err);
  return notify(describeError(err), { kind: "error", code: err?.code || "", status: err?.status ?? "" });
}

export function clearErrors() {
  for (const m of document.querySelectorAll("#messages .message.error")) m.remove();
}

/** Run fn at most once per `ms` of quiet. */
export function debounce(fn, ms) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}
