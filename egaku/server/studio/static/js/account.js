// Signing in with an API key (kept in localStorage) and the credit balance (GET /api/v1/account).
// In --no-auth mode the server answers account.auth == false and no sign-in is shown.

import { api, storedKey, storeKey } from "./api.js";
import { t } from "./i18n.js";
import { $, describeError, showError } from "./ui.js";

export class Account {
  /** onChange(account | null): null = signed out in auth mode. */
  constructor({ onChange }) {
    this.onChange = onChange;
    this.account = null;
    this.authMode = null; // unknown until the first answer
    const dlg = $("#signin");
    $("#signin-open").addEventListener("click", () => this.openSignIn());
    $("#signout").addEventListener("click", () => this.signOut());
    dlg.querySelector("[data-close]").addEventListener("click", () => dlg.close());
    $("#signin-form").addEventListener("submit", (e) => {
      e.preventDefault();
      this.signIn($("#api-key").value.trim());
    });
  }

  get signedIn() {
    return !!this.account;
  }

  /** Ask the server who we are; a 401 means auth mode without a (valid) key. */
  async refresh() {
    try {
      this.account = await api.account();
      this.authMode = this.account.auth !== false;
    } catch (e) {
      this.account = null;
      if (e.status === 401) {
        this.authMode = true;
        if (storedKey()) showError(e);
      } else {
        showError(e);
      }
    }
    this.render();
    this.onChange?.(this.account);
    return this.account;
  }

  render() {
    const auth = this.authMode === true;
    $("#signin-open").hidden = !auth || this.signedIn;
    $("#signout").hidden = !auth || !this.signedIn;
    const chip = $("#balance");
    chip.hidden = !auth || !this.signedIn;
    if (this.account) {
      chip.textContent = t("balance", { n: this.account.balance });
      chip.title = this.account.name ?? "";
      chip.dataset.balance = String(this.account.balance);
    }
  }

  /** Re-read the balance (after a submit or a finished job) without re-announcing the account. */
  async updateBalance() {
    if (!this.account) return;
    try {
      this.account = await api.account();
      this.render();
    } catch {
      /* the next action shows the error */
    }
  }

  openSignIn() {
    $("#signin-error").textContent = "";
    $("#api-key").value = "";
    $("#signin").showModal();
    $("#api-key").focus();
  }

  async signIn(key) {
    if (!key) return;
    const previous = storedKey();
    storeKey(key);
    try {
      this.account = await api.account();
    } catch (e) {
      storeKey(previous);
      $("#signin-error").textContent = describeError(e);
      return;
    }
    $("#signin").close();
    this.authMode = this.account.auth !== false;
    this.render();
    this.onChange?.(this.account);
  }

  signOut() {
    storeKey("");
    this.account = null;
    this.render();
    this.onChange?.(null);
  }
}
