// How the console talks to opsplane: the user's credential (kept in sessionStorage, sent as
// Authorization on every call), the two envelopes' errors, and metric_data as chart series.

const KEY = "opsplane.authorization";

export function credential() {
  return sessionStorage.getItem(KEY);
}

export function setCredential(value) {
  if (value) sessionStorage.setItem(KEY, value);
  else sessionStorage.removeItem(KEY);
}

/** `Authorization` for a bearer token, or for HTTP Basic with a user name and password. */
export function authorization({ token, user, password }) {
  if (token) return `Bearer ${token.trim()}`;
  const bytes = new TextEncoder().encode(`${user}:${password}`);
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  return `Basic ${btoa(binary)}`;
}

/** A failed call: the HTTP status and the API's own message (Eve's `_error`/`_issues`,
 * GeoNode's `errors`). */
export class ApiFailure extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

function messageOf(status, body) {
  if (body && typeof body === "object") {
    if (body._issues) {
      return Object.entries(body._issues).map(([k, v]) => `${k}: ${v}`).join("; ");
    }
    if (body._error && body._error.message) return body._error.message;
    if (body.errors && typeof body.errors === "object") {
      const parts = Object.entries(body.errors).map(([k, v]) => `${k}: ${Array.isArray(v) ? v[0] : v}`);
      if (parts.length) return parts.join("; ");
    }
  }
  return `HTTP ${status}`;
}

/** One call to the API; the parsed JSON body, or an ApiFailure. */
export async function call(path, { method = "GET", body, headers = {} } = {}) {
  const h = { Accept: "application/json", ...headers };
  const auth = credential();
  if (auth) h.Authorization = auth;
  if (body !== undefined) h["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method,
      headers: h,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "omit",
      cache: "no-store",
    });
  } catch (e) {
    throw new ApiFailure(0, `opsplane is unreachable (${e.message})`, null);
  }
  const text = await response.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = null;
  }
  if (!response.ok) throw new ApiFailure(response.status, messageOf(response.status, json), json);
  return { body: json, headers: response.headers };
}

export async function get(path) {
  return (await call(path)).body;
}

/** Eve's query string: `where` and friends as JSON. */
export function eveQuery(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null) q.set(k, typeof v === "string" ? v : JSON.stringify(v));
  }
  const s = q.toString();
  return s ? `?${s}` : "";
}

/** Every item of an Eve collection (pages followed). */
export async function items(resource, params = {}) {
  const out = [];
  for (let page = 1; page <= 50; page++) {
    const body = await get(`/api/v1/${resource}${eveQuery({ max_results: "100", ...params, page: String(page) })}`);
    out.push(...(body._items || []));
    if (!body._links || !body._links.next) break;
  }
  return out;
}

/** The windows the charts offer: span and interval in seconds (interval a multiple of 60). */
export const RANGES = {
  "1h": { last: 3600, interval: 60 },
  "24h": { last: 86400, interval: 1800 },
  "7d": { last: 7 * 86400, interval: 3 * 3600 },
};

function seconds(stamp) {
  // The seed writes UTC without an offset.
  return Date.parse(/[zZ]|[+-]\d\d:?\d\d$/.test(stamp) ? stamp : `${stamp}Z`) / 1000;
}

/**
 * `metric_data/<metric>/` as chart columns: times (the start of each interval) and one array
 * of values per label (null where an interval has no data). `combine` folds several rows of one
 * interval and label (several mounts under one label never happen; several labels do).
 */
export async function metricSeries(metric, params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined) q.set(k, String(v));
  const body = await get(`/monitoring/api/metric_data/${encodeURIComponent(metric)}/?${q}`);
  const rows = body.data.data || [];
  const times = rows.map((r) => seconds(r.valid_from));
  const labels = new Map();
  rows.forEach((row, i) => {
    for (const d of row.data || []) {
      const label = d.label ?? (d.resource && d.resource.name) ?? "value";
      if (!labels.has(label)) labels.set(label, { values: new Array(rows.length).fill(null), samples: 0, sum: 0 });
      const entry = labels.get(label);
      entry.values[i] = Number(d.val);
      entry.samples += Number(d.samples_count) || 0;
      entry.sum += Number(d.sum) || 0;
    }
  });
  return { times, labels, unit: body.data.axis_label, type: body.data.type };
}

/** The mean of a value metric over the whole window (Σ sum / Σ samples), or null. */
export function windowMean(series) {
  let sum = 0;
  let samples = 0;
  for (const e of series.labels.values()) {
    sum += e.sum;
    samples += e.samples;
  }
  return samples ? sum / samples : null;
}

/** Per interval, the mean over labels weighted by nothing (for check.up per instance:
 * the share of instances up); null where no label has data. */
export function meanAcross(series) {
  return series.times.map((_, i) => {
    const vals = [...series.labels.values()].map((e) => e.values[i]).filter((v) => v !== null);
    return vals.length ? vals.reduce((a, b) => a + b, 0) / vals.length : null;
  });
}

/** Per interval, the sum over labels (bytes/s over every NIC); null where none has data. */
export function sumAcross(series) {
  return series.times.map((_, i) => {
    const vals = [...series.labels.values()].map((e) => e.values[i]).filter((v) => v !== null);
    return vals.length ? vals.reduce((a, b) => a + b, 0) : null;
  });
}

/** The last non-null value of `values`, or null. */
export function last(values) {
  for (let i = values.length - 1; i >= 0; i--) if (values[i] !== null) return values[i];
  return null;
}
