// Time-series charts with uPlot (vendored from npm into ../vendor, loaded as the global
// `uPlot` before the modules run). A chart is made once and then fed new data in place.

import { h, fill } from "./dom.js";

const COLORS = ["#2f62c9", "#1a8f4c", "#c27c0e", "#8e44ad", "#c62d2d", "#16a0a0", "#6b6b6b"];

export class TimeChart {
  /**
   * @param {object} o title, height, format (value → text),
   *   min/max (fixed y range, e.g. 0..100 for a percentage), small (a sparkline)
   */
  constructor(o) {
    this.o = o;
    this.el = h("div", { class: o.small ? "chart small" : "chart", "data-chart": o.title || "" });
    this.title = o.small ? null : h("div", { class: "title" }, o.title);
    this.body = h("div");
    fill(this.el, this.title, this.body);
    this.plot = null;
    this.labels = null;
    this.points = 0;
  }

  width() {
    if (this.o.small) return 160;
    return Math.max(240, (this.el.clientWidth || this.el.parentElement?.clientWidth || 480) - 4);
  }

  /** `times` in seconds, `series` a Map or array of [label, values]. */
  update(times, series) {
    const entries = [...series];
    this.points = entries.reduce((n, [, v]) => n + v.filter((x) => x !== null).length, 0);
    // What a test (or a curious user in devtools) can read without uPlot's internals.
    this.el.dataset.points = String(this.points);
    const first = entries.length ? entries[0][1].filter((x) => x !== null) : [];
    this.el.dataset.last = first.length ? String(first[first.length - 1]) : "";
    if (!times.length || !entries.length) {
      this.destroy();
      fill(this.body, h("div", { class: "empty" }, this.o.small ? "–" : "no data in this window"));
      return;
    }
    const labels = entries.map(([l]) => l).join("\u0000");
    const data = [times, ...entries.map(([, v]) => v)];
    if (this.plot && labels === this.labels) {
      this.plot.setData(data);
      const width = this.width();
      if (width !== this.plot.width) this.plot.setSize({ width, height: this.plot.height });
      return;
    }
    this.destroy();
    this.labels = labels;
    fill(this.body);
    const format = this.o.format || ((v) => (v === null ? "–" : String(Math.round(v * 100) / 100)));
    const small = !!this.o.small;
    const opts = {
      width: this.width(),
      height: this.o.height || (small ? 36 : 170),
      legend: { show: !small },
      cursor: { show: !small },
      scales: {
        x: { time: true },
        y: this.o.min !== undefined ? { range: [this.o.min, this.o.max] } : { range: (u, lo, hi) => [Math.min(0, lo), hi > 0 ? hi * 1.1 : 1] },
      },
      axes: small
        ? [{ show: false }, { show: false }]
        : [{}, { size: 84, values: (u, vals) => vals.map(format) }],
      series: [
        {},
        ...entries.map(([label], i) => ({
          label: String(label),
          stroke: COLORS[i % COLORS.length],
          width: small ? 1 : 1.5,
          spanGaps: false,
          // Isolated samples (a new service, a gap) would draw nothing as a line: show the
          // points while a series is sparse.
          points: { show: (u, si) => u.data[si].filter((v) => v !== null).length < 90, size: small ? 3 : 5 },
          value: (u, v) => format(v),
        })),
      ],
    };
    this.plot = new uPlot(opts, data, this.body);
    if (!small) {
      this.onResize = () => this.plot && this.plot.setSize({ width: this.width(), height: opts.height });
      window.addEventListener("resize", this.onResize);
    }
  }

  destroy() {
    if (this.plot) this.plot.destroy();
    if (this.onResize) window.removeEventListener("resize", this.onResize);
    this.plot = null;
    this.onResize = null;
  }
}
