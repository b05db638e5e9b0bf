// One exception (a failed check or an ingested error): the detail view.

import { get } from "../api.js";
import { fill, h } from "../dom.js";
import { serviceLink } from "./overview.js";

export function exceptionPage(id) {
  const body = h("div", { id: "exception" });
  const el = h("div", {}, h("p", {}, h("a", { href: "#/" }, "← Overview")), h("h1", {}, `Exception ${id}`), h("section", { class: "panel" }, body));
  let loaded = false;
  async function refresh() {
    // An exception never changes: read once.
    if (loaded) return;
    const e = await get(`/api/v1/exceptions/${encodeURIComponent(id)}`);
    loaded = true;
    fill(
      body,
      h(
        "dl",
        { class: "kv" },
        h("dt", {}, "When"), h("dd", {}, e._created),
        h("dt", {}, "Service"), h("dd", {}, serviceLink(e.service), e.service_type ? ` (${e.service_type})` : ""),
        h("dt", {}, "Type"), h("dd", { id: "error-type" }, e.error_type),
        h("dt", {}, "Message"), h("dd", { id: "error-message" }, e.error_message || "–"),
        h("dt", {}, "Request"), h("dd", {}, h("pre", {}, JSON.stringify(e.request, null, 2))),
        e.error_data ? [h("dt", {}, "Data"), h("dd", {}, h("pre", {}, typeof e.error_data === "string" ? e.error_data : JSON.stringify(e.error_data, null, 2)))] : null,
      ),
    );
  }
  return { el, refresh };
}
