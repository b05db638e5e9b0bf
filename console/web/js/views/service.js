// A MonitoredService: response time and availability from metric_data (1 h / 24 h / 7 d), its
// instances with their last checks, and its exceptions (each opens the detail view).

import { RANGES, get, eveQuery, meanAcross, windowMean } from "../api.js";
import { TimeChart } from "../chart.js";
import { ago, fill, h, ms, pct, serviceState, state, table } from "../dom.js";
import { exceptionTable, seriesOrNone } from "./overview.js";

export function rangeTabs(initial, onChange) {
  let current = initial;
  const buttons = Object.keys(RANGES).map((r) =>
    h("button", { type: "button", "data-range": r, class: r === current ? "on" : "", onclick: () => pick(r) }, r),
  );
  function pick(r) {
    current = r;
    for (const b of buttons) b.classList.toggle("on", b.dataset.range === r);
    onChange(r);
  }
  return { el: h("span", { class: "range" }, buttons), get: () => current };
}

export function servicePage(id) {
  const title = h("h1", {}, id);
  const summary = h("div", { id: "service-summary" });
  const latency = new TimeChart({ title: "Response time", format: (v) => (v === null ? "–" : `${Math.round(v)} ms`) });
  const availability = new TimeChart({ title: "Availability", min: 0, max: 100, format: (v) => (v === null ? "–" : `${v.toFixed(1)} %`) });
  const windowAvail = h("span", { id: "window-availability", class: "muted" });
  const instances = h("div", { id: "instances" });
  const exceptions = h("div", { id: "service-exceptions" });
  let view;
  const tabs = rangeTabs("1h", () => refresh().catch((e) => view.onError(e)));
  const el = h(
    "div",
    {},
    h("p", {}, h("a", { href: "#/" }, "← Overview")),
    title,
    h("section", { class: "panel" }, summary),
    h(
      "section",
      { class: "panel" },
      h("div", { class: "tabs" }, h("h2", {}, "Checks"), tabs.el, windowAvail),
      h("div", { class: "grid" }, latency.el, availability.el),
    ),
    h("section", { class: "panel" }, h("h2", {}, "Instances"), instances),
    h("section", { class: "panel" }, h("h2", {}, "Exceptions"), exceptions),
  );

  async function refresh() {
    const [namespace, name] = id.split("/");
    const range = RANGES[tabs.get()];
    const q = { service: id, last: range.last, interval: range.interval };
    const [item, rt, up, exc] = await Promise.all([
      get(`/api/v1/services/${encodeURIComponent(namespace)}/${encodeURIComponent(name)}`),
      seriesOrNone("response.time", q),
      seriesOrNone("check.up", q),
      get(`/api/v1/exceptions${eveQuery({ where: { service: id }, max_results: "20" })}`),
    ]);
    const st = serviceState(item);
    const spec = item.spec || {};
    const status = item.status || {};
    const target = spec.url || (spec.serviceRef ? `Service ${namespace}/${spec.serviceRef.name} port ${spec.serviceRef.port}` : "–");
    fill(title, id, " ", state(st.text, st.kind));
    fill(
      summary,
      h(
        "dl",
        { class: "kv" },
        h("dt", {}, "Target"), h("dd", {}, `${spec.tcp ? "TCP" : "HTTP"} ${target}`),
        h("dt", {}, "Type / environment"), h("dd", {}, `${spec.type || "check"} / ${spec.environment || "–"}`),
        h("dt", {}, "Every"), h("dd", {}, spec.checkInterval || "–"),
        h("dt", {}, "Latency"), h("dd", {}, ms(status.latencyMs)),
        h("dt", {}, "Last check"), h("dd", {}, ago(status.lastCheck)),
        h("dt", {}, "Last error"), h("dd", { class: status.lastError ? "error" : "", id: "last-error" }, status.lastError || "none"),
        ...(status.conditions || []).flatMap((c) => [h("dt", {}, c.type), h("dd", {}, `${c.status} — ${c.reason}: ${c.message || ""}`)]),
      ),
    );
    latency.update(rt ? rt.times : [], rt ? [...rt.labels].map(([l, e]) => [l, e.values]) : []);
    availability.update(up ? up.times : [], up ? [["available", meanAcross(up).map((v) => (v === null ? null : v * 100))]] : []);
    const mean = up ? windowMean(up) : null;
    windowAvail.textContent = `availability over ${tabs.get()}: ${pct(mean === null ? null : mean * 100)}`;
    fill(
      instances,
      table(
        ["Address", "Ready", "Healthy", h("th", { class: "num" }, "Latency"), "Last check", "Error"],
        (status.instances || []).map((i) =>
          h(
            "tr",
            {},
            h("td", {}, i.address),
            h("td", {}, i.ready ? "yes" : "no"),
            h("td", {}, i.healthy ? state("up", "up") : state("down", "down")),
            h("td", { class: "num" }, ms(i.latencyMs)),
            h("td", { class: "muted" }, ago(i.lastCheck)),
            h("td", { class: "error" }, i.error || ""),
          ),
        ),
        "No instance checked yet.",
      ),
    );
    fill(exceptions, exceptionTable(exc._items || []));
  }

  view = {
    el,
    refresh,
    destroy() {
      latency.destroy();
      availability.destroy();
    },
  };
  return view;
}
