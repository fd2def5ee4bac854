// Overview: every service's golden figures, health colour and sparkline, from
// one `/api/overview` call per poll (the figures of /api/stat plus each
// service's /api/timeseries points).

import { getJSON } from "./api.js";
import {
  LiveTable, count, goldenColumns, h, health, panel, percent, rate, setText, sparkline, tlsColumn,
} from "./ui.js";

const WINDOW = "60s";
const SPARK_WINDOW = "5m";
const SPARK_STEP = "10s";

export class OverviewView {
  constructor() {
    this.sparks = new Map();
    this.table = new LiveTable(
      [
        {
          key: "service", label: "Service", sort: (r) => r.service, cellClass: "name",
          render: (r, td) => {
            if (!td.firstChild) {
              td.append(h("span", { class: "dot" }), h("a", { href: `#/service/${encodeURIComponent(r.service)}`, text: r.service }));
            }
            const className = `name ${health(r.success_rate)}`;
            if (td.className !== className) td.className = className;
          },
        },
        ...goldenColumns(),
        tlsColumn(),
        {
          key: "spark", label: "RPS, last 5 min", cellClass: "spark-cell",
          render: (r, td) => {
            let spark = this.sparks.get(r.service);
            if (!spark) {
              spark = sparkline();
              this.sparks.set(r.service, spark);
            }
            if (td.firstChild !== spark) td.replaceChildren(spark);
            spark.update((r.points ?? []).map((p) => p.rps));
          },
        },
        {
          key: "instances", label: "Instances", num: true, sort: (r) => r.instances,
          render: (r, td) => setText(td, r.instances === undefined ? "—" : String(r.instances)),
        },
      ],
      {
        key: (r) => r.service,
        sortKey: "service",
        emptyText: "No services yet: the control plane has no scrape targets, or has not scraped them yet.",
        rowAttrs: (r, tr) => {
          tr.dataset.service = r.service;
        },
      },
    );
    this.cards = {
      services: h("div", { class: "value", "data-summary": "services" }, "—"),
      rps: h("div", { class: "value", "data-summary": "rps" }, "—"),
      success: h("div", { class: "value", "data-summary": "success" }, "—"),
      tls: h("div", { class: "value", "data-summary": "tls" }, "—"),
      unhealthy: h("div", { class: "value", "data-summary": "unhealthy" }, "—"),
    };
    const card = (label, value) => h("div", { class: "card" }, h("div", { class: "label" }, label), value);
    this.error = h("div", { class: "error-banner", hidden: true, role: "alert" });
    this.window = h("span", { class: "sub" }, "");
    // A link to the mesh's trace receiver when the control plane knows one.
    this.traces = h("a", { class: "sub", "data-traces": "", target: "_blank", rel: "noopener noreferrer", hidden: true }, "Traces ↗");
    this.element = h(
      "div",
      { class: "overview", "data-page": "overview" },
      h("div", { class: "page-head" }, h("h1", {}, "Services"), this.window, this.traces),
      this.error,
      h(
        "div",
        { class: "cards" },
        card("Services", this.cards.services),
        card("Requests / s", this.cards.rps),
        card("Success rate", this.cards.success),
        card("Meshed (mTLS)", this.cards.tls),
        card("Below 95 % success", this.cards.unhealthy),
      ),
      panel("Golden metrics", this.table.element),
    );
  }

  async refresh() {
    const document = await getJSON("/api/overview", { window: WINDOW, spark: SPARK_WINDOW, step: SPARK_STEP });
    this.error.hidden = true;
    const rows = document.rows;
    this.table.update(rows);
    this.summarise(rows);
    setText(this.window, `last ${Math.round(document.window_s)} s · source: ${document.source}`);
    const traces = typeof document.traces_url === "string" && /^https?:\/\//.test(document.traces_url) ? document.traces_url : "";
    if (traces && this.traces.getAttribute("href") !== traces) this.traces.setAttribute("href", traces);
    this.traces.hidden = !traces;
    if (window.tulleFirstData === undefined) {
      // Read by the performance test: the first frame painted with figures.
      window.tulleFirstData = null;
      requestAnimationFrame(() => { window.tulleFirstData = performance.now(); });
    }
  }

  summarise(rows) {
    const requests = rows.reduce((sum, r) => sum + (r.requests ?? 0), 0);
    const rps = rows.reduce((sum, r) => sum + (r.rps ?? 0), 0);
    const successes = rows.reduce((sum, r) => sum + (r.success_rate ?? 0) * (r.requests ?? 0), 0);
    const tls = rows.reduce((sum, r) => sum + (r.tls_share ?? 0) * (r.requests ?? 0), 0);
    const unhealthy = rows.filter((r) => r.success_rate !== null && r.success_rate < 0.95).length;
    setText(this.cards.services, count(rows.length));
    setText(this.cards.rps, rate(rps));
    setText(this.cards.success, requests ? percent(successes / requests, 2) : "—", `value rate ${health(requests ? successes / requests : null)}`);
    setText(this.cards.tls, requests ? percent(tls / requests, 0) : "—");
    setText(this.cards.unhealthy, String(unhealthy), `value rate ${unhealthy ? "health-bad" : "health-ok"}`);
  }

  showError(error) {
    this.error.hidden = false;
    this.error.textContent = `Could not load the overview: ${error.message}. Retrying every 2 s.`;
  }

  destroy() {}
}
