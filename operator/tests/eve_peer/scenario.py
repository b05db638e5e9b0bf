"""One scenario of an Eve client, run against the real Eve 2.3.1 and against opsplane, step by
step; per request it compares the status code, the headers that matter, the envelope keys and
the link relations. The client only follows `_links` and sends `If-Match` with the `_etag` it
read, so it needs no knowledge of either server's ids.

Usage: python scenario.py EVE_BASE OPSPLANE_BASE TOKEN
Prints one line per step; exits 1 when a step differs (other than the documented differences
in KNOWN, which are printed too).
"""

import json
import sys
import urllib.error
import urllib.parse
import urllib.request

# Differences that are opsplane's on purpose (docs/api.md, "Differences from Eve 2.3.1").
KNOWN = {
    # Eve's PATCH 422 has no _error; opsplane's 422s all carry it (an extra key is fine anyway).
}

# Headers whose presence must agree when Eve sends them.
HEADERS = ["etag", "last-modified", "location", "x-total-count", "cache-control", "expires",
           "access-control-allow-origin", "access-control-allow-methods", "access-control-max-age"]

# Meta fields whose presence in an item must agree.
META = ["_id", "_etag", "_created", "_updated", "_links", "_status", "_issues", "_error",
        "_items", "_meta", "_deleted", "_version", "_latest_version"]


class Target:
    def __init__(self, base, token):
        self.base = base.rstrip("/")
        self.token = token
        self.state = {}

    def send(self, method, path, body=None, headers=None, auth=True):
        url = path if path.startswith("http") else f"{self.base}/{path.lstrip('/')}"
        data = None
        h = dict(headers or {})
        if auth:
            h["Authorization"] = f"Bearer {self.token}"
        if body is not None:
            data = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        req = urllib.request.Request(url, data=data, method=method, headers=h)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
        except urllib.error.HTTPError as e:
            return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def observe(status, headers, raw):
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = None
    obs = {"status": status, "headers": sorted(h for h in HEADERS if h in headers)}
    ctype = headers.get("content-type", "")
    obs["content-type"] = ctype.split(";")[0] if raw else ""
    if isinstance(body, dict):
        obs["keys"] = sorted(k for k in body if k in META)
        links = body.get("_links", {})
        obs["links"] = sorted(links) if isinstance(links, dict) else []
        items = body.get("_items")
        if isinstance(items, list) and items and isinstance(items[0], dict):
            obs["item-keys"] = sorted(k for k in items[0] if k in META)
            il = items[0].get("_links", {})
            obs["item-links"] = sorted(il) if isinstance(il, dict) else []
        if isinstance(body.get("_meta"), dict):
            obs["meta"] = sorted(body["_meta"])
    elif raw and ctype.startswith("application/xml"):
        text = raw.decode()
        obs["xml-root"] = text.split("\n", 1)[-1][:9]
    elif raw:
        obs["prefix"] = raw[:5].decode(errors="replace")
    return obs, body


def q(params):
    return "?" + urllib.parse.urlencode(params)


def steps():
    """(name, function(target) -> (method, path, body, headers, auth))."""
    svc = lambda name, interval="30s": {"metadata": {"name": name, "namespace": "peer"},
                                        "spec": {"url": f"http://127.0.0.1:9/{name}", "checkInterval": interval, "type": "geonode"}}

    def self_href(t, key):
        return t.state[key]["_links"]["self"]["href"]

    def etag(t, key):
        return t.state[key]["_etag"]

    return [
        ("root", lambda t: ("GET", "", None, {}, True), None),
        ("unauthenticated", lambda t: ("GET", "services", None, {}, False), None),
        ("create", lambda t: ("POST", "services", svc("web"), {}, True), "web"),
        ("create invalid", lambda t: ("POST", "services", svc("bad", "soon"), {}, True), None),
        ("bulk with one invalid", lambda t: ("POST", "services", [svc("b1"), svc("b2", "x"), svc("b3")], {}, True), None),
        ("bulk", lambda t: ("POST", "services", [svc("c1"), svc("c2"), svc("c3")], {}, True), None),
        ("list", lambda t: ("GET", "services", None, {}, True), None),
        ("list paged", lambda t: ("GET", "services" + q({"max_results": 2}), None, {}, True), None),
        ("page 2", lambda t: ("GET", "services" + q({"max_results": 2, "page": 2}), None, {}, True), None),
        ("where json", lambda t: ("GET", "services" + q({"where": json.dumps({"metadata.name": "web"})}), None, {}, True), None),
        ("where operators", lambda t: ("GET", "services" + q({"where": json.dumps({"metadata.name": {"$in": ["c1", "c2"]}})}), None, {}, True), None),
        ("where python", lambda t: ("GET", "services" + q({"where": 'metadata.name=="web"'}), None, {}, True), None),
        ("where single quotes", lambda t: ("GET", "services" + q({"where": "{'metadata.name': 'web'}"}), None, {}, True), None),
        ("sort", lambda t: ("GET", "services" + q({"sort": "-metadata.name"}), None, {}, True), None),
        ("sort mongo", lambda t: ("GET", "services" + q({"sort": '[("metadata.name", -1)]'}), None, {}, True), None),
        ("projection", lambda t: ("GET", "services" + q({"projection": json.dumps({"spec": 1})}), None, {}, True), None),
        ("pretty", lambda t: ("GET", "services" + q({"pretty": ""}), None, {}, True), None),
        ("xml", lambda t: ("GET", "services", None, {"Accept": "application/xml"}, True), None),
        ("jsonp", lambda t: ("GET", "services" + q({"callback": "show"}), None, {}, True), None),
        ("item", lambda t: ("GET", self_href(t, "web"), None, {}, True), "web-read"),
        ("item 304", lambda t: ("GET", self_href(t, "web"), None, {"If-None-Match": t.state["web"]["_etag_header"]}, True), None),
        ("patch without if-match", lambda t: ("PATCH", self_href(t, "web"), {"spec": {"checkInterval": "10s"}}, {}, True), None),
        ("patch stale", lambda t: ("PATCH", self_href(t, "web"), {"spec": {"checkInterval": "10s"}}, {"If-Match": "0" * 40}, True), None),
        ("patch", lambda t: ("PATCH", self_href(t, "web"), {"spec": {"checkInterval": "10s"}}, {"If-Match": etag(t, "web")}, True), "web"),
        ("patch invalid", lambda t: ("PATCH", self_href(t, "web"), {"spec": {"checkInterval": "soon"}}, {"If-Match": etag(t, "web")}, True), None),
        ("put", lambda t: ("PUT", self_href(t, "web"), {"metadata": {"name": "web", "namespace": "peer"}, "spec": {"url": "http://127.0.0.1:9/x", "checkInterval": "20s"}}, {"If-Match": etag(t, "web")}, True), "web"),
        ("override", lambda t: ("POST", self_href(t, "web"), {"spec": {"checkInterval": "25s"}}, {"If-Match": etag(t, "web"), "X-HTTP-Method-Override": "PATCH"}, True), "web"),
        ("versions all", lambda t: ("GET", self_href(t, "web") + q({"version": "all"}), None, {}, True), None),
        ("versions diffs", lambda t: ("GET", self_href(t, "web") + q({"version": "diffs"}), None, {}, True), None),
        ("version 1", lambda t: ("GET", self_href(t, "web") + q({"version": "1"}), None, {}, True), None),
        ("version 99", lambda t: ("GET", self_href(t, "web") + q({"version": "99"}), None, {}, True), None),
        ("version abc", lambda t: ("GET", self_href(t, "web") + q({"version": "abc"}), None, {}, True), None),
        ("cors preflight", lambda t: ("OPTIONS", "services", None, {"Origin": "https://console.example", "Access-Control-Request-Method": "POST"}, False), None),
        ("cors get", lambda t: ("GET", "services", None, {"Origin": "https://console.example"}, True), None),
        ("delete without if-match", lambda t: ("DELETE", self_href(t, "web"), None, {}, True), None),
        ("delete", lambda t: ("DELETE", self_href(t, "web"), None, {"If-Match": etag(t, "web")}, True), None),
        ("deleted item", lambda t: ("GET", self_href(t, "web"), None, {}, True), "tomb"),
        ("show deleted", lambda t: ("GET", "services" + q({"show_deleted": ""}), None, {}, True), None),
        ("restore", lambda t: ("PATCH", self_href(t, "web"), {"spec": {"checkInterval": "15s"}}, {"If-Match": etag(t, "tomb")}, True), None),
        ("restored item", lambda t: ("GET", self_href(t, "web"), None, {}, True), None),
        ("oplog", lambda t: ("GET", "oplog", None, {}, True), None),
        ("schema", lambda t: ("GET", "schema", None, {}, True), None),
        ("schema services", lambda t: ("GET", "schema/services", None, {}, True), None),
        ("no such resource", lambda t: ("GET", "nothing", None, {}, True), None),
        ("method not allowed", lambda t: ("PUT", "services", {"spec": {}}, {}, True), None),
        ("not json", lambda t: ("GET", "services" + q({"where": "{\"a\": "}), None, {}, True), None),
        ("bad embedded", lambda t: ("GET", "exceptions" + q({"embedded": "{x"}), None, {}, True), None),
        ("embedded", lambda t: ("GET", "exceptions" + q({"embedded": json.dumps({"service": 1})}), None, {}, True), None),
        ("tasks", lambda t: ("POST", "tasks", {"metadata": {"name": "t1"}, "spec": {"nodeNames": ["n1"], "handler": "ServiceHandler", "command": "start", "data": {"service": ["a.service"]}}}, {}, True), "task"),
        ("task", lambda t: ("GET", self_href(t, "task"), None, {}, True), None),
        ("delete collection", lambda t: ("DELETE", "tasks", None, {}, True), None),
        ("tasks after delete", lambda t: ("GET", "tasks", None, {}, True), None),
    ]


def main():
    eve_base, ops_base, token = sys.argv[1:4]
    eve, ops = Target(eve_base, token), Target(ops_base, token)
    failures = 0
    for name, make, keep in steps():
        results = []
        for t in (eve, ops):
            method, path, body, headers, auth = make(t)
            status, hdrs, raw = t.send(method, path, body, headers, auth)
            obs, parsed = observe(status, hdrs, raw)
            if keep and isinstance(parsed, dict) and status < 500:
                merged = dict(t.state.get(keep.replace("-read", ""), {}))
                merged.update(parsed)
                if "etag" in hdrs:
                    merged["_etag_header"] = hdrs["etag"]
                t.state[keep.replace("-read", "")] = merged
            results.append(obs)
        e, o = results
        diffs = []
        for k, ev in e.items():
            ov = o.get(k)
            if k in ("keys", "item-keys", "links", "item-links", "headers", "meta") and isinstance(ev, list):
                # Eve's must all be there; opsplane may add (an extra key or header is both).
                missing = [x for x in ev if x not in (ov or [])]
                if missing:
                    diffs.append(f"{k}: opsplane lacks {missing}")
            elif ev != ov:
                diffs.append(f"{k}: eve {ev!r} opsplane {ov!r}")
        known = KNOWN.get(name)
        if diffs and known:
            print(f"KNOWN {name}: {'; '.join(diffs)} ({known})")
        elif diffs:
            failures += 1
            print(f"DIFF  {name}: {'; '.join(diffs)}")
        else:
            print(f"SAME  {name}: {e['status']}")
    print(f"{failures} step(s) differ")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
