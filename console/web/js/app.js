// The console's shell: log-in, hash routes, and live updates by short polling (every view's
// refresh() runs every POLL_MS while the tab is visible; views update in place).

import { ApiFailure, authorization, call, credential, setCredential } from "./api.js";
import { h, fill, markFirstRender } from "./dom.js";
import { overview } from "./views/overview.js";
import { servicePage } from "./views/service.js";
import { nodePage } from "./views/node.js";
import { tasksPage, taskPage } from "./views/tasks.js";
import { exceptionPage } from "./views/exception.js";

const POLL_MS = 2000;
const WHO = "opsplane.who";

const main = document.getElementById("main");
const banner = document.getElementById("banner");
const live = document.getElementById("live");
const who = document.getElementById("who");
const logoutButton = document.getElementById("logout");
const loginButton = document.getElementById("login-open");

let view = null;
let timer = null;
let busy = false;
let publicReads = false;

function route() {
  const path = (location.hash.replace(/^#/, "") || "/").split("?")[0];
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  switch (parts[0]) {
    case undefined:
      return ["overview", () => overview()];
    case "services":
      if (parts.length === 3) return ["overview", () => servicePage(`${parts[1]}/${parts[2]}`)];
      break;
    case "nodes":
      if (parts.length === 2) return ["overview", () => nodePage(parts[1])];
      break;
    case "tasks":
      if (parts.length === 1) return ["tasks", () => tasksPage()];
      if (parts.length === 2) return ["tasks", () => taskPage(parts[1])];
      break;
    case "exceptions":
      if (parts.length === 2) return ["overview", () => exceptionPage(parts[1])];
      break;
  }
  return ["", () => ({ el: h("p", {}, "No such page. ", h("a", { href: "#/" }, "Overview")), refresh: async () => {} })];
}

function showBanner(text) {
  banner.hidden = !text;
  banner.textContent = text || "";
}

function header() {
  const signedIn = !!credential();
  logoutButton.hidden = !signedIn;
  loginButton.hidden = signedIn || !publicReads;
  who.textContent = signedIn ? sessionStorage.getItem(WHO) || "signed in" : publicReads ? "public reads" : "";
}

async function refresh() {
  if (!view || busy || document.hidden) return;
  busy = true;
  try {
    await view.refresh();
    markFirstRender();
    showBanner("");
    live.textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (e) {
    failed(e);
  } finally {
    busy = false;
  }
}

/** What a failed read means for the user: 401 is the log-in form, 403 the role's message. */
function failed(e) {
  if (e instanceof ApiFailure && e.status === 401) {
    const had = !!credential();
    setCredential(null);
    login(had ? `Your credential was refused: ${e.message}` : `Log in to see this page (${e.message}).`);
    return;
  }
  if (e instanceof ApiFailure && e.status === 403) {
    showBanner(`Your role may not do this: ${e.message}`);
    return;
  }
  showBanner(e instanceof ApiFailure ? e.message : `The console failed: ${e.message}`);
  if (!(e instanceof ApiFailure)) console.warn(e);
}

function show() {
  clearInterval(timer);
  if (view && view.destroy) view.destroy();
  const [nav, make] = route();
  for (const a of document.querySelectorAll("[data-nav]")) a.classList.toggle("active", a.dataset.nav === nav);
  view = make();
  view.onError = failed;
  fill(main, view.el);
  header();
  refresh();
  timer = setInterval(refresh, POLL_MS);
}

/** The log-in form: a bearer token, or a user name and password (HTTP Basic). */
function login(message) {
  clearInterval(timer);
  if (view && view.destroy) view.destroy();
  view = null;
  showBanner("");
  header();
  const error = h("p", { class: "error", id: "login-error" }, message || "");
  const mode = h("select", { id: "login-mode" }, h("option", { value: "token" }, "Token"), h("option", { value: "basic" }, "User and password"));
  const token = h("input", { id: "login-token", type: "password", autocomplete: "off" });
  const user = h("input", { id: "login-user", autocomplete: "username" });
  const password = h("input", { id: "login-password", type: "password", autocomplete: "current-password" });
  const tokenRow = h("div", {}, h("label", { for: "login-token" }, "Token"), token);
  const basicRow = h("div", { hidden: true }, h("label", { for: "login-user" }, "User"), user, h("label", { for: "login-password" }, "Password"), password);
  mode.addEventListener("change", () => {
    tokenRow.hidden = mode.value !== "token";
    basicRow.hidden = mode.value === "token";
  });
  const form = h(
    "form",
    { class: "panel login", id: "login" },
    h("h1", {}, "Log in to opsplane"),
    h("p", { class: "muted" }, "The same credentials and roles as the API: a bearer token, or a user of the htpasswd file."),
    h("label", { for: "login-mode" }, "Credential"),
    mode,
    tokenRow,
    basicRow,
    error,
    h("div", { class: "actions" }, h("button", { class: "primary", type: "submit", id: "login-submit" }, "Log in")),
  );
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const basic = mode.value === "basic";
    if (basic ? !user.value : !token.value.trim()) {
      error.textContent = basic ? "Enter a user name." : "Enter a token.";
      return;
    }
    setCredential(authorization(basic ? { user: user.value, password: password.value } : { token: token.value }));
    try {
      // A read every role but reporter may make: proves the credential and its role.
      await call("/api/v1/services?max_results=1");
      sessionStorage.setItem(WHO, basic ? `signed in as ${user.value}` : "signed in with a token");
      show();
    } catch (e) {
      setCredential(null);
      error.textContent =
        e instanceof ApiFailure && e.status === 401
          ? `Not accepted: ${e.message}`
          : e instanceof ApiFailure && e.status === 403
            ? `This credential may not read (the console needs the viewer role or more): ${e.message}`
            : e.message;
    }
  });
  fill(main, form);
  (basic() ? user : token).focus();
  function basic() {
    return mode.value === "basic";
  }
}

logoutButton.addEventListener("click", () => {
  setCredential(null);
  sessionStorage.removeItem(WHO);
  login("Logged out.");
});
loginButton.addEventListener("click", () => login(""));
window.addEventListener("hashchange", () => {
  if (view || credential() || publicReads) show();
});
document.addEventListener("visibilitychange", refresh);

async function boot() {
  if (credential()) return show();
  try {
    await call("/api/v1/services?max_results=1");
    publicReads = true;
    show();
  } catch (e) {
    login(e instanceof ApiFailure && e.status === 401 ? "" : e.message);
  }
}

boot();
