// NodeTasks: the list, a task's detail with live per-node phases, and the form that creates one
// — a dry run first (a NodeTask with spec.dryRun: true, which the operator plans without
// releasing anything), then, from the plan, the real run with the same spec.

import { ApiFailure, call, get, items } from "../api.js";
import { ago, fill, h, state, table } from "../dom.js";
import { nodeProgress } from "./overview.js";

/** Seed 002's handlers and their commands (the CRD's CEL rule says the same). */
const COMMANDS = {
  ServiceHandler: ["start", "stop", "restart", "enable", "disable"],
  OsHandler: ["shutdown", "reboot"],
  CrontabHandler: ["setup_shutdown", "delete_shutdown", "select_shutdown", "modify_shutdown"],
  TimerHandler: ["update", "pause", "resume"],
  FileHandler: ["delete_file"],
  NetworkHandler: ["add_ip", "update_ip", "delete_ip", "exchange_ip"],
};

/** What `data` each command needs (as the CRD's validation says). */
const DATA_HINT = {
  ServiceHandler: '{"service": ["nginx"]}',
  setup_shutdown: '{"task_name": …, "exec_hour": …, "exec_minute": …, "exec_weekly": …}',
  modify_shutdown: '{"task_name": …, "exec_hour": …, "exec_minute": …, "exec_weekly": …}',
  delete_shutdown: '{"task_name": …}',
  select_shutdown: '{"task_name": …}',
  update: '{"addr": "http://…/", "node_uuid": …}',
  delete_file: '{"file_name": "/absolute/path"}',
  add_ip: '{"name": "eth0:0", "ip": …, "netmask": …}',
  update_ip: '{"name": "eth0:0", "ip": …, "netmask": …}',
  delete_ip: '{"name": "eth0:0"}',
  exchange_ip: '{"name1": …, "name2": …}',
};

const DRY_RUN_OF = "opsplane.io/dry-run-of";

function taskHref(name) {
  return `#/tasks/${encodeURIComponent(name)}`;
}

function targets(spec) {
  const parts = [];
  if (spec.nodeNames && spec.nodeNames.length) parts.push(spec.nodeNames.join(", "));
  const labels = spec.nodeSelector && spec.nodeSelector.matchLabels;
  if (labels) parts.push(Object.entries(labels).map(([k, v]) => `${k}=${v}`).join(","));
  return parts.join(" + ") || "–";
}

/** The plan of a task: its phase, its conditions' message and each node in release order. */
function plan(task) {
  const status = task.status || {};
  const conditions = status.conditions || [];
  const message = conditions.map((c) => c.message).find(Boolean);
  return h(
    "div",
    { class: "plan", "data-task": task._id },
    h("p", {}, state(status.phase || "Pending", status.phase || "Pending"), " ", status.progress || "", message ? ` — ${message}` : ""),
    table(
      ["#", "Node", "Phase", "Code", "Message", "Released", "Finished"],
      (status.nodes || []).map((n, i) =>
        h(
          "tr",
          { "data-node": n.name },
          h("td", { class: "muted" }, i + 1),
          h("td", {}, n.name),
          h("td", {}, state(n.phase || "Pending", n.phase || "Pending")),
          h("td", {}, n.code ?? ""),
          h("td", {}, n.msg || ""),
          h("td", { class: "muted" }, n.releasedAt ? ago(n.releasedAt) : ""),
          h("td", { class: "muted" }, n.finishedAt ? ago(n.finishedAt) : ""),
        ),
      ),
      "Not planned yet: the operator plans a task at its first reconcile.",
    ),
  );
}

function specFrom(form) {
  const spec = { handler: form.handler.value, command: form.command.value };
  const names = form.nodes.value.split(/[\s,]+/).filter(Boolean);
  if (names.length) spec.nodeNames = names;
  const labels = form.selector.value.split(",").map((s) => s.trim()).filter(Boolean);
  if (labels.length) {
    const matchLabels = {};
    for (const l of labels) {
      const [k, ...v] = l.split("=");
      matchLabels[k.trim()] = v.join("=").trim();
    }
    spec.nodeSelector = { matchLabels };
  }
  if (form.data.value.trim()) spec.data = JSON.parse(form.data.value);
  if (form.maxUnavailable.value) spec.maxUnavailable = Number(form.maxUnavailable.value);
  return spec;
}

async function create(name, spec, dryRunOf) {
  const metadata = { name };
  if (dryRunOf) metadata.annotations = { [DRY_RUN_OF]: dryRunOf };
  return (await call("/api/v1/tasks", { method: "POST", body: { metadata, spec } })).body;
}

/** Why a write failed, for the form: the role's message on 403, the issues on 422. */
function writeError(e) {
  if (e instanceof ApiFailure && e.status === 403) return `Your role may not create this NodeTask: ${e.message}`;
  if (e instanceof ApiFailure && e.status === 401) return `Log in to create NodeTasks: ${e.message}`;
  return e.message;
}

export function tasksPage() {
  const list = h("div", { id: "task-list" });
  const result = h("div", { id: "dry-run" });
  const error = h("p", { class: "error", id: "task-error" });
  const handler = h("select", { name: "handler", id: "task-handler" }, Object.keys(COMMANDS).map((k) => h("option", { value: k }, k)));
  const command = h("select", { name: "command", id: "task-command" });
  const data = h("textarea", { name: "data", id: "task-data", spellcheck: "false" });
  const hint = h("span", { class: "muted" });
  const run = h("button", { type: "button", id: "task-run", disabled: true }, "Run it");
  let dryRun = null; // {name, spec, intended}

  function commands() {
    fill(command, COMMANDS[handler.value].map((c) => h("option", { value: c }, c)));
    hintFor();
  }
  function hintFor() {
    const d = DATA_HINT[command.value] || DATA_HINT[handler.value];
    hint.textContent = d ? `data: ${d}` : "no data needed";
  }
  handler.addEventListener("change", commands);
  command.addEventListener("change", hintFor);
  commands();

  const form = h(
    "form",
    { id: "task-form" },
    h(
      "div",
      { class: "row" },
      h("div", {}, h("label", { for: "task-name" }, "Name"), h("input", { name: "taskName", id: "task-name", required: true, placeholder: "restart-nginx" })),
      h("div", {}, h("label", { for: "task-handler" }, "Handler"), handler),
      h("div", {}, h("label", { for: "task-command" }, "Command"), command),
    ),
    h(
      "div",
      { class: "row" },
      h("div", {}, h("label", { for: "task-nodes" }, "Node names"), h("input", { name: "nodes", id: "task-nodes", placeholder: "node-a, node-b" })),
      h("div", {}, h("label", { for: "task-selector" }, "and/or node labels"), h("input", { name: "selector", id: "task-selector", placeholder: "role=kvm" })),
      h("div", {}, h("label", { for: "task-max" }, "Nodes at a time (disruptive)"), h("input", { name: "maxUnavailable", id: "task-max", type: "number", min: "1", placeholder: "1" })),
    ),
    h("label", { for: "task-data" }, "Data (JSON) ", hint),
    data,
    error,
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary", id: "task-dry-run" }, "Dry run"), run),
  );

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    error.textContent = "";
    run.disabled = true;
    let spec;
    try {
      spec = specFrom(form);
    } catch (e) {
      error.textContent = `Data is not JSON: ${e.message}`;
      return;
    }
    const intended = form.taskName.value.trim();
    const name = `${intended}-dry-run-${Date.now().toString(36)}`;
    try {
      await create(name, { ...spec, dryRun: true }, intended);
      dryRun = { name, spec, intended };
      await refresh();
      run.disabled = false;
      run.textContent = `Run it as ${intended}`;
    } catch (e) {
      error.textContent = writeError(e);
    }
  });

  run.addEventListener("click", async () => {
    if (!dryRun) return;
    error.textContent = "";
    try {
      await create(dryRun.intended, { ...dryRun.spec, dryRun: false }, null);
      location.hash = taskHref(dryRun.intended);
    } catch (e) {
      error.textContent = writeError(e);
    }
  });

  async function showDryRun() {
    if (!dryRun) return;
    const task = await get(`/api/v1/tasks/${encodeURIComponent(dryRun.name)}`);
    fill(result, h("h2", {}, "Plan of the dry run ", h("a", { href: taskHref(dryRun.name) }, dryRun.name)), plan(task));
  }

  async function refresh() {
    const tasks = await items("tasks");
    tasks.sort((a, b) => String(b.metadata.creationTimestamp || "").localeCompare(String(a.metadata.creationTimestamp || "")));
    fill(
      list,
      table(
        ["Task", "Command", "Targets", "Phase", "Nodes", "Created"],
        tasks.map((t) =>
          h(
            "tr",
            { "data-task": t._id },
            h("td", {}, h("a", { href: taskHref(t._id) }, t._id)),
            h("td", {}, `${t.spec.handler}/${t.spec.command}`, t.spec.dryRun ? h("span", { class: "muted" }, " (dry run)") : null),
            h("td", {}, targets(t.spec)),
            h("td", {}, state((t.status && t.status.phase) || "Pending", (t.status && t.status.phase) || "Pending")),
            h("td", {}, nodeProgress(t)),
            h("td", { class: "muted" }, ago(t.metadata.creationTimestamp)),
          ),
        ),
        "No NodeTasks.",
      ),
    );
    await showDryRun();
  }

  const el = h(
    "div",
    {},
    h("h1", {}, "NodeTasks"),
    h("section", { class: "panel" }, h("h2", {}, "New NodeTask"), form, result),
    h("section", { class: "panel" }, h("h2", {}, "All NodeTasks"), list),
  );
  return { el, refresh };
}

export function taskPage(name) {
  const body = h("div", { id: "task" });
  const el = h("div", {}, h("p", {}, h("a", { href: "#/tasks" }, "← NodeTasks")), h("h1", {}, name), body);
  async function refresh() {
    const t = await get(`/api/v1/tasks/${encodeURIComponent(name)}`);
    const spec = t.spec || {};
    const of = t.metadata.annotations && t.metadata.annotations[DRY_RUN_OF];
    fill(
      body,
      h(
        "section",
        { class: "panel" },
        h(
          "dl",
          { class: "kv" },
          h("dt", {}, "Command"), h("dd", {}, `${spec.handler}/${spec.command}`),
          h("dt", {}, "Targets"), h("dd", {}, targets(spec)),
          h("dt", {}, "Nodes at a time"), h("dd", {}, spec.maxUnavailable ?? "default"),
          h("dt", {}, "Dry run"), h("dd", {}, spec.dryRun ? `yes${of ? ` (of ${of})` : ""}` : "no"),
          h("dt", {}, "Data"), h("dd", {}, h("pre", {}, JSON.stringify(spec.data || {}, null, 2))),
          h("dt", {}, "Created"), h("dd", {}, `${t.metadata.creationTimestamp || ""} (${ago(t.metadata.creationTimestamp)})`),
        ),
      ),
      h("section", { class: "panel" }, h("h2", {}, spec.dryRun ? "Plan" : "Nodes"), plan(t)),
    );
  }
  return { el, refresh };
}
