// Service page (#/service/NAME): golden figures and sparklines, instances,
// routes, inbound and outbound edges, the policies that apply, and a live
// tap streamed from /api/tap (filterable, pausable, bounded).

import { ApiError, getJSON, tap } from "./api.js";
import {
  LiveTable, goldenColumns, h, health, lockIcon, ms, panel, percent, rate, setText, sparkline, tlsColumn,
} from "./ui.js";

const WINDOW = "60s";
const SPARK_WINDOW = "5m";
const SPARK_STEP = "10s";
const TAP_MAX_ROWS = 200;
const TAP_DURATION_S = 600;
const TAP_RECONNECT_MS = 1000;
// Where the authorization-policy feature will publish what applies to a
// service; until it exists the section says there is no policy data.
const POLICY_ENDPOINT = "/api/authz";

function serviceLink(name) {
  return h("a", { href: `#/service/${encodeURIComponent(name)}`, text: name });
}

function edgeTable(peerKey, peerLabel, emptyText) {
  return new LiveTable(
    [
      {
        key: peerKey, label: peerLabel, sort: (r) => r[peerKey], cellClass: "name",
        render: (r, td) => { if (!td.firstChild) td.append(serviceLink(r[peerKey])); },
      },
      ...goldenColumns().filter((c) => c.key !== "p50" && c.key !== "p95"),
      {
        key: "identity", label: "Identity", sort: (r) => (r.secured ? 1 : 0),
        render: (r, td) => {
          const identity = peerKey === "src" ? r.client_id : r.server_id;
          const text = `${r.secured}:${identity}`;
          if (td.dataset.value === text) return;
          td.dataset.value = text;
          td.replaceChildren(r.secured ? lockIcon() : "", " ", identity ? h("code", {}, identity) : h("span", { class: "muted" }, r.secured ? "mTLS" : "plaintext"));
        },
      },
    ],
    { key: (r) => r[peerKey], sortKey: "rps", sortDesc: true, emptyText },
  );
}

class TapPanel {
  constructor(service) {
    this.service = service;
    this.paused = false;
    this.controller = null;
    this.reconnect = null;
    this.seen = 0;
    this.form = {
      path: h("input", { name: "path", placeholder: "path prefix, e.g. /api", "aria-label": "Path prefix" }),
      method: h(
        "select",
        { name: "method", "aria-label": "Method" },
        ["", "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"].map((m) => h("option", { value: m }, m || "any method")),
      ),
      status: h("input", { name: "status", placeholder: "status: 503, 5xx", "aria-label": "Status" }),
    };
    this.pauseButton = h("button", { class: "button primary", type: "button", "data-action": "pause", onclick: () => this.togglePause() }, "Pause");
    this.state = h("span", { class: "tap-state", "data-tap-state": "" }, "connecting…");
    let debounce = null;
    const changed = () => {
      // Rows already shown are filtered at once; the stream restarts with the
      // filters server-side once typing pauses.
      this.prune();
      clearTimeout(debounce);
      debounce = setTimeout(() => this.restart(), 400);
    };
    for (const field of Object.values(this.form)) field.addEventListener("input", changed);
    this.body = h("tbody");
    this.empty = h("div", { class: "empty" }, "Waiting for requests…");
    const head = h("tr", {}, ["Time", "Dir", "Method", "Path", "Status", "Latency", "From", "To", "TLS", "Route"].map((t) => h("th", { scope: "col", class: t === "Latency" ? "num" : null }, t)));
    this.element = panel(
      "Live tap",
      h(
        "div",
        {},
        h(
          "div",
          { class: "tap-controls" },
          this.form.path, this.form.method, this.form.status, this.pauseButton,
          h("button", { class: "button", type: "button", onclick: () => this.clear() }, "Clear"),
          this.state,
        ),
        h("div", { class: "tap-list" }, h("table", { "data-tap": "" }, h("thead", {}, head), this.body), this.empty),
      ),
    );
  }

  params() {
    return {
      service: this.service,
      path: this.form.path.value.trim(),
      method: this.form.method.value,
      status: this.form.status.value.trim(),
      duration: TAP_DURATION_S,
      limit: 100000,
    };
  }

  start() {
    if (this.paused) return;
    const controller = new AbortController();
    this.controller = controller;
    setText(this.state, "streaming");
    tap(this.params(), (event) => this.add(event), controller.signal)
      .then(() => this.ended(controller, null))
      .catch((error) => this.ended(controller, error));
  }

  ended(controller, error) {
    if (controller !== this.controller || controller.signal.aborted) return;
    this.controller = null;
    const status = error instanceof ApiError ? error.status : 0;
    if (status === 401) {
      // The read views work without a credential; live tap does not.
      setText(this.state, "live tap needs the API token: open the dashboard with `tulle dashboard`");
      this.state.dataset.tapState = "unauthorized";
    } else if (error) {
      setText(this.state, `tap failed: ${error.message}; retrying`);
    }
    // A stream ends by its duration or the control plane restarting: go on.
    this.reconnect = setTimeout(() => this.start(), status === 404 || status === 401 || status === 403 ? 5000 : TAP_RECONNECT_MS);
  }

  stop() {
    clearTimeout(this.reconnect);
    this.controller?.abort();
    this.controller = null;
  }

  restart() {
    this.stop();
    this.start();
  }

  togglePause() {
    this.paused = !this.paused;
    this.pauseButton.textContent = this.paused ? "Resume" : "Pause";
    this.pauseButton.dataset.action = this.paused ? "resume" : "pause";
    if (this.paused) {
      this.stop();
      setText(this.state, `paused · ${this.seen} requests seen`);
    } else {
      this.start();
    }
  }

  matches(method, path, status) {
    const want = this.params();
    if (want.method && method !== want.method) return false;
    if (want.path && !path.startsWith(want.path)) return false;
    if (!want.status) return true;
    const wanted = want.status.toLowerCase();
    return /^[1-5]xx$/.test(wanted) ? status[0] === wanted[0] : status === wanted;
  }

  prune() {
    for (const row of [...this.body.children]) {
      if (!this.matches(row.dataset.method, row.dataset.path, row.dataset.status)) row.remove();
    }
    this.empty.hidden = this.body.childElementCount > 0;
  }

  clear() {
    this.body.replaceChildren();
    this.empty.hidden = false;
  }

  add(event) {
    if (event.kind === "error") {
      setText(this.state, `${event.instance}: ${event.error}`);
      return;
    }
    if (event.kind !== "event") return;
    this.seen += 1;
    const status = event.error ? "err" : String(event.status ?? "");
    // Events of a stream opened before the filters changed may still arrive.
    if (!this.matches(event.method, event.path, status)) return;
    const time = new Date(event.ts * 1000).toLocaleTimeString([], { hour12: false }) + `.${String(Math.floor((event.ts % 1) * 1000)).padStart(3, "0")}`;
    const row = h(
      "tr",
      { "data-method": event.method, "data-path": event.path, "data-status": status },
      h("td", { class: "muted" }, time),
      h("td", {}, h("span", { class: "dir" }, event.direction === "inbound" ? "in" : "out")),
      h("td", {}, event.method),
      h("td", { title: event.path }, event.path.length > 60 ? `${event.path.slice(0, 57)}…` : event.path),
      // A gRPC call's outcome is its grpc-status (its HTTP status is 200).
      h("td", { class: `status-${status[0] === "e" || event.grpc_status > 0 ? "err" : status[0]}`, title: event.error || null },
        event.error ? `err` : event.grpc_status == null ? status : `${status} grpc ${event.grpc_status}`),
      h("td", { class: "num" }, ms(event.latency_ms)),
      h("td", { class: "muted" }, event.client_id || event.src),
      h("td", { class: "muted" }, event.dst_service || event.server_id || event.dst),
      h("td", {}, event.tls ? lockIcon() : ""),
      h("td", { class: "muted" }, event.route || ""),
    );
    this.body.prepend(row);
    // Bounded: the oldest rows go, so a busy service never grows the page.
    while (this.body.childElementCount > TAP_MAX_ROWS) this.body.lastElementChild.remove();
    this.empty.hidden = true;
    setText(this.state, `streaming · ${this.seen} requests seen`);
  }
}

class PolicyPanel {
  constructor(service) {
    this.service = service;
    this.body = h("div", { class: "placeholder", "data-policy": "none" }, "Loading…");
    this.element = panel("Policies", this.body, h("span", { class: "count muted" }, `from ${POLICY_ENDPOINT}`));
  }

  async refresh() {
    let document;
    try {
      document = await getJSON(POLICY_ENDPOINT, { service: this.service });
    } catch (error) {
      if (error.name === "AbortError") throw error;
      this.none(error instanceof ApiError && error.status === 404 ? "" : error.message);
      return;
    }
    const items = Array.isArray(document) ? document : document?.policies ?? document?.rows ?? [];
    if (!items.length) {
      this.none("");
      return;
    }
    const keys = [...new Set(items.flatMap((item) => Object.keys(item)))];
    const render = (value) => (typeof value === "object" && value !== null ? JSON.stringify(value) : String(value ?? ""));
    this.body.dataset.policy = "some";
    this.body.className = "";
    this.body.replaceChildren(
      h(
        "div",
        { class: "table-scroll" },
        h(
          "table",
          {},
          h("thead", {}, h("tr", {}, keys.map((k) => h("th", {}, k)))),
          h("tbody", {}, items.map((item) => h("tr", {}, keys.map((k) => h("td", {}, render(item[k])))))),
        ),
      ),
    );
  }

  none(why) {
    this.body.dataset.policy = "none";
    this.body.className = "placeholder";
    this.body.replaceChildren(
      h("strong", {}, "No policy data. "),
      `Policies that apply to ${this.service} will be listed here once the control plane serves ${POLICY_ENDPOINT}?service=${this.service}.`,
      why ? h("div", { class: "muted" }, why) : "",
    );
  }
}

export class ServiceView {
  constructor(name) {
    this.name = name;
    this.figures = {};
    const figure = (key, label) => {
      const value = h("div", { class: "value", "data-figure": key }, "—");
      this.figures[key] = value;
      return h("div", { class: "card" }, h("div", { class: "label" }, label), value);
    };
    this.sparks = { rps: sparkline(true), success: sparkline(true), p99: sparkline(true) };
    const sparkCard = (label, spark) => h("div", { class: "card" }, h("div", { class: "label" }, label), spark);
    this.badge = h("span", { class: "badge" }, "no traffic");
    this.meta = h("span", { class: "sub" }, "");
    this.error = h("div", { class: "error-banner", hidden: true, role: "alert" });
    this.instances = new LiveTable(
      [
        { key: "instance", label: "Instance", sort: (r) => r.instance, cellClass: "name", render: (r, td) => setText(td, r.instance) },
        { key: "admin", label: "Admin", sort: (r) => r.admin, render: (r, td) => setText(td, r.admin ?? "", "mono muted") },
        ...goldenColumns(),
        tlsColumn(),
      ],
      { key: (r) => r.instance, sortKey: "instance", emptyText: "No proxies of this service are scraped." },
    );
    this.routes = new LiveTable(
      [
        { key: "route", label: "Route", sort: (r) => r.route, cellClass: "name", render: (r, td) => setText(td, r.route) },
        ...goldenColumns(),
        { key: "retries", label: "Retries", num: true, sort: (r) => r.retries, render: (r, td) => setText(td, String(Math.round(r.retries ?? 0))) },
        // What the route's fault and outbound rate limit answered themselves: their own counts, not generic errors.
        { key: "faults_injected", label: "Faulted", num: true, sort: (r) => r.faults_injected, render: (r, td) => setText(td, String(r.faults_injected ?? 0)) },
        // Rate-limited: the callers' outbound limit plus the service's inbound limit on a policy route of the same name.
        { key: "rate_limited", label: "Rate-limited", num: true, sort: (r) => r.rate_limited, render: (r, td) => setText(td, String(r.rate_limited ?? 0)) },
        { key: "mirrored", label: "Mirrored", num: true, sort: (r) => r.mirrored, render: (r, td) => setText(td, String(r.mirrored ?? 0)) },
      ],
      { key: (r) => r.route, sortKey: "rps", sortDesc: true, emptyText: "No route traffic in the last minute." },
    );
    // The service's own inbound limits (policy.rateLimits), each with what it refused.
    this.limits = new LiveTable(
      [
        { key: "name", label: "Limit", sort: (r) => r.name, cellClass: "name", render: (r, td) => setText(td, r.name) },
        { key: "target", label: "Target", sort: (r) => r.target, render: (r, td) => setText(td, r.target) },
        { key: "total", label: "Total", render: (r, td) => setText(td, r.total || "—") },
        { key: "per_caller", label: "Per caller", render: (r, td) => setText(td, r.per_caller || "—") },
        { key: "allowed", label: "Allowed", num: true, sort: (r) => r.allowed, render: (r, td) => setText(td, String(r.allowed ?? 0)) },
        { key: "limited", label: "Rate-limited", num: true, sort: (r) => r.limited, render: (r, td) => setText(td, String(r.limited ?? 0)) },
      ],
      { key: (r) => r.name, sortKey: "name", emptyText: "No inbound rate limits protect this service." },
    );
    this.inbound = edgeTable("src", "From", "No meshed callers in the last minute.");
    this.outbound = edgeTable("dst", "To", "No calls to other services in the last minute.");
    this.policy = new PolicyPanel(name);
    this.tap = new TapPanel(name);
    this.element = h(
      "div",
      { class: "service-page", "data-page": "service", "data-service": name },
      h("div", { class: "page-head" }, h("a", { href: "#/" }, "Services"), h("span", { class: "muted" }, "/"), h("h1", {}, name), this.badge, this.meta),
      this.error,
      h(
        "div",
        { class: "cards" },
        figure("success", "Success rate"),
        figure("rps", "Requests / s"),
        figure("p50", "P50"),
        figure("p95", "P95"),
        figure("p99", "P99"),
        figure("tls", "Meshed (mTLS)"),
      ),
      h("div", { class: "cards" }, sparkCard("RPS, last 5 min", this.sparks.rps), sparkCard("Success rate", this.sparks.success), sparkCard("P99 latency", this.sparks.p99)),
      panel("Instances", this.instances.element),
      panel("Routes", this.routes.element),
      panel("Inbound rate limits", this.limits.element),
      h("div", { class: "grid-2 stack" }, panel("Inbound", this.inbound.element), panel("Outbound", this.outbound.element)),
      this.policy.element,
      this.tap.element,
    );
    this.tap.start();
  }

  async refresh() {
    const [stat, instances, routes, edges, series] = await Promise.all([
      getJSON("/api/stat", { service: this.name, window: WINDOW }),
      getJSON("/api/stat", { kind: "instance", service: this.name, window: WINDOW }),
      getJSON("/api/routes", { service: this.name, window: WINDOW }),
      getJSON("/api/edges", { window: WINDOW }),
      getJSON("/api/timeseries", { service: this.name, window: SPARK_WINDOW, step: SPARK_STEP }),
      this.policy.refresh(),
    ]);
    this.error.hidden = true;
    const row = stat.rows[0];
    const cls = health(row?.success_rate);
    this.badge.className = `badge ${cls}`;
    setText(this.badge, row?.requests ? (cls === "health-ok" ? "healthy" : cls === "health-warn" ? "degraded" : "failing") : "no traffic");
    setText(this.meta, row ? `${row.instances ?? 0} instance(s) · figures from the ${row.source} side · last ${Math.round(stat.window_s)} s` : "not seen by the control plane yet");
    setText(this.figures.success, percent(row?.success_rate, 2), `value rate ${cls}`);
    setText(this.figures.rps, rate(row?.rps));
    setText(this.figures.p50, ms(row?.latency_ms?.p50));
    setText(this.figures.p95, ms(row?.latency_ms?.p95));
    setText(this.figures.p99, ms(row?.latency_ms?.p99));
    setText(this.figures.tls, row ? percent(row.tls_share ?? 0, 0) : "—");
    this.sparks.rps.update(series.points.map((p) => p.rps));
    this.sparks.success.update(series.points.map((p) => p.success_rate ?? 0));
    this.sparks.p99.update(series.points.map((p) => p.p99_ms ?? 0));
    this.instances.update(instances.rows);
    this.routes.update(routes.rows);
    this.limits.update(routes.inbound_limits ?? []);
    this.inbound.update(edges.rows.filter((e) => e.dst === this.name));
    this.outbound.update(edges.rows.filter((e) => e.src === this.name));
  }

  showError(error) {
    this.error.hidden = false;
    this.error.textContent = `Could not load ${this.name}: ${error.message}. Retrying every 2 s.`;
  }

  destroy() {
    this.tap.stop();
  }
}
