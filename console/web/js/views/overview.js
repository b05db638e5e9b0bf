// Overview: every MonitoredService (state, availability over 24 h and 7 d, latency trend, last
// error), every node (CPU, memory, disk, network now and over the last hour), recent
// exceptions, and running NodeTasks with per-node progress.

import { ApiFailure, get, items, last, metricSeries, sumAcross, windowMean } from "../api.js";
import { TimeChart } from "../chart.js";
import { ago, bar, bytes, fill, h, markFirstRender, ms, pct, serviceHref, serviceState, state, table } from "../dom.js";

/** metric_data, or null when the service or host has no data yet (metric_data names an
 * unknown `service` in a 400). */
export async function seriesOrNone(metric, params) {
  try {
    return await metricSeries(metric, params);
  } catch (e) {
    if (e instanceof ApiFailure && e.status === 400 && e.body && e.body.errors && e.body.errors.service) return null;
    throw e;
  }
}

/** Charts and numbers from metric_data are refreshed every SLOW-th poll. */
const SLOW = 5;

export function overview() {
  const services = h("div", { id: "services" });
  const nodes = h("div", { id: "nodes" });
  const exceptions = h("div", { id: "exceptions" });
  const tasks = h("div", { id: "running-tasks" });
  const el = h(
    "div",
    {},
    h("h1", {}, "Overview"),
    h("section", { class: "panel" }, h("h2", {}, "Services"), services),
    h("section", { class: "panel" }, h("h2", {}, "Nodes"), nodes),
    h(
      "div",
      { class: "grid" },
      h("section", { class: "panel" }, h("h2", {}, "Recent exceptions"), exceptions),
      h("section", { class: "panel" }, h("h2", {}, "Running NodeTasks"), tasks),
    ),
  );
  const metrics = new Map(); // service or node id → {charts, numbers}
  let tick = 0;

  function metricsOf(id, make) {
    if (!metrics.has(id)) metrics.set(id, make());
    return metrics.get(id);
  }

  async function serviceMetrics(id, m) {
    const [day, week, latency] = await Promise.all([
      seriesOrNone("check.up", { service: id, last: 86400, interval: 3600 }),
      seriesOrNone("check.up", { service: id, last: 7 * 86400, interval: 86400 }),
      seriesOrNone("response.time", { service: id, last: 3600, interval: 60 }),
    ]);
    m.day = day ? windowMean(day) : null;
    m.week = week ? windowMean(week) : null;
    if (latency) m.spark.update(latency.times, [["ms", meanValues(latency)]]);
    else m.spark.update([], []);
  }

  async function nodeMetrics(name, m) {
    const service = `host:${name}`;
    const q = { service, last: 3600, interval: 60 };
    const [cpu, mem, disk, netIn, netOut] = await Promise.all([
      seriesOrNone("cpu.usage", q),
      seriesOrNone("mem.usage", q),
      seriesOrNone("storage.usage", q),
      seriesOrNone("network.in.bytes", q),
      seriesOrNone("network.out.bytes", q),
    ]);
    const first = (s) => (s ? [...s.labels.values()][0]?.values || [] : []);
    m.cpu = last(first(cpu));
    m.mem = last(first(mem));
    m.disk = disk ? Math.max(...[...disk.labels.values()].map((e) => last(e.values) ?? 0)) : null;
    m.netIn = netIn ? last(sumAcross(netIn)) : null;
    m.netOut = netOut ? last(sumAcross(netOut)) : null;
    m.cpuSpark.update(cpu ? cpu.times : [], cpu ? [["cpu", first(cpu)]] : []);
    m.memSpark.update(mem ? mem.times : [], mem ? [["mem", first(mem)]] : []);
  }

  async function refresh() {
    const slow = tick++ % SLOW === 0;
    const [svc, nds, exc, tks] = await Promise.all([
      items("services"),
      items("nodes"),
      get('/api/v1/exceptions?max_results=10'),
      items("tasks"),
    ]);
    const work = [];
    for (const s of svc) {
      const m = metricsOf(`s:${s._id}`, () => ({ spark: new TimeChart({ small: true, title: `latency ${s._id}` }) }));
      // A service's metrics exist from its first check on (before, metric_data answers 400).
      const checked = !!(s.status && s.status.lastCheck);
      if (checked && (slow || m.day === undefined)) work.push(serviceMetrics(s._id, m));
    }
    for (const n of nds) {
      const m = metricsOf(`n:${n._id}`, () => ({
        cpuSpark: new TimeChart({ small: true, title: `cpu ${n._id}`, min: 0, max: 100 }),
        memSpark: new TimeChart({ small: true, title: `mem ${n._id}`, min: 0, max: 100 }),
      }));
      if (n.report && (slow || m.cpu === undefined)) work.push(nodeMetrics(n._id, m));
    }
    // Render what the lists say at once (the first meaningful render waits for no metric), then
    // again with the metrics.
    render(svc, nds, exc, tks);
    markFirstRender();
    if (work.length) {
      await Promise.all(work);
      render(svc, nds, exc, tks);
    }
  }

  function render(svc, nds, exc, tks) {
    fill(
      services,
      table(
        ["Service", "State", h("th", { class: "num" }, "24 h"), h("th", { class: "num" }, "7 d"), h("th", { class: "num" }, "Latency"), "Last hour", "Last error", "Checked"],
        svc.map((s) => {
          const st = serviceState(s);
          const m = metrics.get(`s:${s._id}`);
          const status = s.status || {};
          return h(
            "tr",
            { "data-service": s._id },
            h("td", {}, h("a", { href: serviceHref(s._id) }, s._id)),
            h("td", {}, state(st.text, st.kind)),
            h("td", { class: "num" }, pct(m.day === null ? null : m.day * 100)),
            h("td", { class: "num" }, pct(m.week === null ? null : m.week * 100)),
            h("td", { class: "num" }, ms(status.latencyMs)),
            h("td", { class: "spark" }, m.spark.el),
            h("td", { class: "error" }, status.lastError || ""),
            h("td", { class: "muted" }, ago(status.lastCheck)),
          );
        }),
        "No MonitoredServices yet.",
      ),
    );

    fill(
      nodes,
      table(
        ["Node", "Last report", "CPU", "", "Memory", "", "Disk (fullest)", h("th", { class: "num" }, "Net in"), h("th", { class: "num" }, "Net out")],
        nds.map((n) => {
          const m = metrics.get(`n:${n._id}`);
          return h(
            "tr",
            { "data-node": n._id },
            h("td", {}, h("a", { href: `#/nodes/${encodeURIComponent(n._id)}` }, n._id)),
            h("td", { class: "muted" }, n.report ? ago(n.report.heartbeat) : "never"),
            h("td", {}, bar(m.cpu), h("span", { class: "muted" }, pct(m.cpu, 1))),
            h("td", { class: "spark" }, m.cpuSpark.el),
            h("td", {}, bar(m.mem), h("span", { class: "muted" }, pct(m.mem, 1))),
            h("td", { class: "spark" }, m.memSpark.el),
            h("td", {}, bar(m.disk), h("span", { class: "muted" }, pct(m.disk, 1))),
            h("td", { class: "num" }, bytes(m.netIn, "/s")),
            h("td", { class: "num" }, bytes(m.netOut, "/s")),
          );
        }),
        "No nodes.",
      ),
    );

    fill(exceptions, exceptionTable(exc._items || []));

    const running = tks.filter((t) => ["Pending", "Running"].includes(t.status && t.status.phase));
    fill(
      tasks,
      table(
        ["Task", "Command", "Phase", "Nodes"],
        running.map((t) =>
          h(
            "tr",
            {},
            h("td", {}, h("a", { href: `#/tasks/${encodeURIComponent(t._id)}` }, t._id)),
            h("td", {}, `${t.spec.handler}/${t.spec.command}`, t.spec.dryRun ? h("span", { class: "muted" }, " (dry run)") : null),
            h("td", {}, state(t.status.phase, t.status.phase)),
            h("td", {}, nodeProgress(t)),
          ),
        ),
        "No NodeTask is running.",
      ),
    );
  }

  return {
    el,
    refresh,
    destroy() {
      for (const m of metrics.values()) for (const c of Object.values(m)) if (c instanceof TimeChart) c.destroy();
    },
  };
}

/** Per interval, the average over instances of response.time. */
function meanValues(series) {
  return series.times.map((_, i) => {
    const vals = [...series.labels.values()].map((e) => e.values[i]).filter((v) => v !== null);
    return vals.length ? vals.reduce((a, b) => a + b, 0) / vals.length : null;
  });
}

export function exceptionTable(list) {
  return table(
    ["When", "Service", "Type", "Message"],
    list.map((e) =>
      h(
        "tr",
        { "data-exception": e._id },
        h("td", { class: "muted" }, h("a", { href: `#/exceptions/${encodeURIComponent(e._id)}` }, ago(e._created))),
        h("td", {}, serviceLink(e.service)),
        h("td", {}, e.error_type),
        h("td", {}, (e.error_message || "").slice(0, 160)),
      ),
    ),
    "No exceptions.",
  );
}

/** "node-a Succeeded · node-b Running" as badges. */
export function nodeProgress(task) {
  const nodes = (task.status && task.status.nodes) || [];
  if (!nodes.length) return h("span", { class: "muted" }, "not planned yet");
  return h("span", {}, nodes.map((n) => h("span", {}, `${n.name} `, state(n.phase || "Pending", n.phase || "Pending"), " ")));
}

/** A link to a MonitoredService's page (`namespace/name`); other services (an application's
 * ingested events) as text. */
export function serviceLink(service) {
  if (!service) return "–";
  const s = String(service);
  return s.split("/").length === 2 ? h("a", { href: serviceHref(s) }, s) : s;
}
