// DOM building without innerHTML (no markup from data, nothing the page's CSP refuses), and the
// formats the views share.

/** `h("td", {class: "num"}, "12 ms")`: an element with attributes and children. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** Replaces the children of `el`. */
export function fill(el, ...children) {
  el.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return el;
}

export function table(headers, rows, empty = "Nothing yet.") {
  if (!rows.length) return h("p", { class: "muted" }, empty);
  return h(
    "table",
    {},
    h("thead", {}, h("tr", {}, headers.map((x) => (typeof x === "string" ? h("th", {}, x) : x)))),
    h("tbody", {}, rows),
  );
}

export function state(text, kind) {
  return h("span", { class: `state ${kind}` }, text);
}

export function pct(v, digits = 2) {
  return v === null || v === undefined || Number.isNaN(v) ? "–" : `${Number(v).toFixed(digits)} %`;
}

export function ms(v) {
  return v === null || v === undefined ? "–" : `${Math.round(v)} ms`;
}

export function bytes(v, suffix = "") {
  if (v === null || v === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let n = Number(v);
  while (Math.abs(n) >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}${suffix}`;
}

/** "3 min ago" for an RFC 3339 or HTTP date. */
export function ago(stamp) {
  if (!stamp) return "–";
  const t = Date.parse(stamp);
  if (Number.isNaN(t)) return stamp;
  const s = Math.round((Date.now() - t) / 1000);
  if (s < 5) return "just now";
  if (s < 90) return `${s} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  if (s < 129600) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

/** A bar for a percentage. */
export function bar(value) {
  const b = h("div", { class: value !== null && value >= 90 ? "bar hot" : "bar", title: pct(value, 1) }, h("span"));
  b.firstChild.style.width = `${Math.max(0, Math.min(100, value || 0))}%`;
  return b;
}

/** A MonitoredService's state from its conditions: up, degraded, down or unknown. */
export function serviceState(item) {
  const conditions = (item.status && item.status.conditions) || [];
  const available = conditions.find((c) => c.type === "Available");
  const degraded = conditions.find((c) => c.type === "Degraded");
  if (!available) return { kind: "unknown", text: "not checked yet" };
  if (available.status !== "True") return { kind: "down", text: "down" };
  if (degraded && degraded.status === "True") return { kind: "degraded", text: "degraded" };
  return { kind: "up", text: "up" };
}

export function serviceHref(id) {
  return `#/services/${id.split("/").map(encodeURIComponent).join("/")}`;
}

/** Marks the first meaningful render of the page (once): what scripts/bench-console.sh times. */
export function markFirstRender() {
  if (!performance.getEntriesByName("opsplane:first-render").length) performance.mark("opsplane:first-render");
}
