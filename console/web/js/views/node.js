// A node: the host's charts from its reports (CPU, memory, filesystems, disk and network
// rates), its systemd units (service reports), and the inventory its reports carry.

import { RANGES, get, last, sumAcross } from "../api.js";
import { TimeChart } from "../chart.js";
import { ago, bytes, fill, h, pct, state, table } from "../dom.js";
import { seriesOrNone } from "./overview.js";
import { rangeTabs } from "./service.js";

const percent = (v) => (v === null ? "–" : `${v.toFixed(1)} %`);
const rate = (v) => bytes(v, "/s");

export function nodePage(name) {
  const service = `host:${name}`;
  const summary = h("div", { id: "node-summary" });
  const cpu = new TimeChart({ title: "CPU", min: 0, max: 100, format: percent });
  const mem = new TimeChart({ title: "Memory", min: 0, max: 100, format: percent });
  const storage = new TimeChart({ title: "Filesystems", min: 0, max: 100, format: percent });
  const disk = new TimeChart({ title: "Disk I/O", format: rate });
  const net = new TimeChart({ title: "Network", format: rate });
  const units = h("div", { id: "units" });
  const inventory = h("div", { id: "inventory" });
  let view;
  const tabs = rangeTabs("1h", () => refresh().catch((e) => view.onError(e)));
  const el = h(
    "div",
    {},
    h("p", {}, h("a", { href: "#/" }, "← Overview")),
    h("h1", {}, name),
    h("section", { class: "panel" }, summary),
    h(
      "section",
      { class: "panel" },
      h("div", { class: "tabs" }, h("h2", {}, "Host"), tabs.el),
      h("div", { class: "grid" }, cpu.el, mem.el, storage.el, disk.el, net.el),
    ),
    h(
      "div",
      { class: "grid" },
      h("section", { class: "panel" }, h("h2", {}, "systemd units"), units),
      h("section", { class: "panel" }, h("h2", {}, "Inventory (from its reports)"), inventory),
    ),
  );

  async function refresh() {
    const range = RANGES[tabs.get()];
    const q = { service, last: range.last, interval: range.interval };
    const hour = { service, last: 3600, interval: 60 };
    const [node, c, m, s, dr, dw, ni, no, up, count, total, fsTotal] = await Promise.all([
      get(`/api/v1/nodes/${encodeURIComponent(name)}`),
      seriesOrNone("cpu.usage", q),
      seriesOrNone("mem.usage", q),
      seriesOrNone("storage.usage", q),
      seriesOrNone("disk.read.bytes", q),
      seriesOrNone("disk.write.bytes", q),
      seriesOrNone("network.in.bytes", q),
      seriesOrNone("network.out.bytes", q),
      seriesOrNone("service.up", hour),
      seriesOrNone("cpu.count", hour),
      seriesOrNone("mem.total", hour),
      seriesOrNone("storage.total", hour),
    ]);
    const report = node.report || {};
    const info = (node.status && node.status.nodeInfo) || {};
    fill(
      summary,
      h(
        "dl",
        { class: "kv" },
        h("dt", {}, "Last report"), h("dd", { id: "last-report" }, node.report ? ago(report.heartbeat) : "no report yet"),
        h("dt", {}, "Address"), h("dd", {}, report.ip || ((node.status && node.status.addresses) || []).map((a) => a.address).join(", ") || "–"),
        h("dt", {}, "Node UUID"), h("dd", {}, report.node_uuid || "–"),
        info.osImage ? [h("dt", {}, "OS"), h("dd", {}, `${info.osImage} (${info.kernelVersion || ""})`)] : null,
      ),
    );
    const one = (x, label) => (x ? [[label, [...x.labels.values()][0].values]] : []);
    cpu.update(c ? c.times : [], one(c, "cpu"));
    mem.update(m ? m.times : [], one(m, "memory"));
    storage.update(s ? s.times : [], s ? [...s.labels].map(([l, e]) => [l, e.values]) : []);
    const times = (dr || dw || { times: [] }).times;
    disk.update(times, [dr ? ["read", sumAcross(dr)] : null, dw ? ["write", sumAcross(dw)] : null].filter(Boolean));
    const ntimes = (ni || no || { times: [] }).times;
    net.update(ntimes, [ni ? ["in", sumAcross(ni)] : null, no ? ["out", sumAcross(no)] : null].filter(Boolean));

    fill(
      units,
      table(
        ["Unit", "State", "Up over the last hour"],
        up
          ? [...up.labels].map(([unit, e]) => {
              const now = last(e.values);
              const share = e.samples ? (e.sum / e.samples) * 100 : null;
              return h("tr", { "data-unit": unit }, h("td", {}, unit), h("td", {}, now === 1 ? state("running", "up") : state("not running", "down")), h("td", {}, pct(share, 0)));
            })
          : [],
        "No service report in the last hour (the node-daemon's --services names the units).",
      ),
    );
    const lastOf = (x) => (x ? last([...x.labels.values()][0].values) : null);
    const names = (x) => (x ? [...x.labels.keys()].join(", ") : "–");
    fill(
      inventory,
      h(
        "dl",
        { class: "kv" },
        h("dt", {}, "CPUs"), h("dd", {}, lastOf(count) ?? "–"),
        h("dt", {}, "Memory"), h("dd", {}, bytes(lastOf(total))),
        h("dt", {}, "Filesystems"),
        h("dd", {}, fsTotal ? [...fsTotal.labels].map(([mount, e]) => `${mount} ${bytes(last(e.values))}`).join(", ") : "–"),
        h("dt", {}, "Disks"), h("dd", {}, names(dr)),
        h("dt", {}, "NICs"), h("dd", {}, names(ni)),
      ),
    );
  }

  view = {
    el,
    refresh,
    destroy() {
      for (const c of [cpu, mem, storage, disk, net]) c.destroy();
    },
  };
  return view;
}
