// Topology: services as nodes, calls as edges (rate, success rate, a lock
// when every response was over mTLS), from /api/services, /api/stat and
// /api/edges. The layout is layered: callers left, callees right; a layer is
// the longest call path from a service nobody calls. The SVG is rebuilt only
// when the set of nodes or edges changes; figures update in place.

import { getJSON } from "./api.js";
import {
  LiveTable, goldenColumns, h, health, lockIcon, panel, percent, rate, s, setText,
} from "./ui.js";

const WINDOW = "60s";
const NODE_W = 200;
const NODE_H = 62;
const COLUMN_GAP = 190;
const ROW_GAP = 40;
const MARGIN = 30;
const LOCK_PATH = "M4 7V5a4 4 0 0 1 8 0v2h.5A1.5 1.5 0 0 1 14 8.5v5a1.5 1.5 0 0 1-1.5 1.5h-9A1.5 1.5 0 0 1 2 13.5v-5A1.5 1.5 0 0 1 3.5 7H4zm2 0h4V5a2 2 0 0 0-4 0v2z";

// Layers by longest path from the roots (Kahn's order; a cycle is broken at
// the node with the fewest unplaced callers), then each layer ordered by the
// mean position of its callers to keep edges short and uncrossed.
export function layout(names, edges) {
  const callers = new Map(names.map((n) => [n, new Set()]));
  const callees = new Map(names.map((n) => [n, new Set()]));
  for (const e of edges) {
    if (e.src === e.dst) continue;
    callees.get(e.src).add(e.dst);
    callers.get(e.dst).add(e.src);
  }
  const layer = new Map();
  const remaining = new Map(names.map((n) => [n, callers.get(n).size]));
  const placed = new Set();
  while (placed.size < names.length) {
    let ready = names.filter((n) => !placed.has(n) && remaining.get(n) === 0);
    if (!ready.length) {
      const left = names.filter((n) => !placed.has(n));
      left.sort((a, b) => remaining.get(a) - remaining.get(b) || a.localeCompare(b));
      ready = [left[0]];
    }
    for (const n of ready) {
      const from = [...callers.get(n)].filter((c) => placed.has(c)).map((c) => layer.get(c) + 1);
      layer.set(n, Math.max(0, ...from));
      placed.add(n);
      for (const callee of callees.get(n)) remaining.set(callee, remaining.get(callee) - 1);
    }
  }
  const layers = [];
  for (const n of [...names].sort()) {
    const index = layer.get(n);
    (layers[index] ??= []).push(n);
  }
  const order = new Map();
  layers.forEach((members, index) => {
    if (index > 0) {
      const weight = (n) => {
        const from = [...callers.get(n)].filter((c) => order.has(c)).map((c) => order.get(c));
        return from.length ? from.reduce((a, b) => a + b, 0) / from.length : Number.MAX_SAFE_INTEGER;
      };
      members.sort((a, b) => weight(a) - weight(b) || a.localeCompare(b));
    }
    members.forEach((n, i) => order.set(n, i));
  });
  const tallest = Math.max(1, ...layers.map((m) => (m ? m.length : 0)));
  const height = MARGIN * 2 + tallest * NODE_H + (tallest - 1) * ROW_GAP;
  const positions = new Map();
  layers.forEach((members, index) => {
    const span = members.length * NODE_H + (members.length - 1) * ROW_GAP;
    const top = (height - span) / 2;
    members.forEach((n, i) => {
      positions.set(n, { x: MARGIN + index * (NODE_W + COLUMN_GAP), y: top + i * (NODE_H + ROW_GAP) });
    });
  });
  const width = MARGIN * 2 + Math.max(1, layers.length) * NODE_W + Math.max(0, layers.length - 1) * COLUMN_GAP;
  return { positions, width, height };
}

function edgeGeometry(from, to) {
  if (to.x > from.x) {
    const x1 = from.x + NODE_W;
    const y1 = from.y + NODE_H / 2;
    const x2 = to.x - 6;
    const y2 = to.y + NODE_H / 2;
    const bend = (x2 - x1) / 2;
    return { d: `M${x1} ${y1} C${x1 + bend} ${y1} ${x2 - bend} ${y2} ${x2} ${y2}`, mid: { x: (x1 + x2) / 2, y: (y1 + y2) / 2 } };
  }
  // A call to the same or an earlier layer loops below the nodes.
  const x1 = from.x + NODE_W / 2;
  const y1 = from.y + NODE_H;
  const x2 = to.x + NODE_W / 2 + 12;
  const y2 = to.y + NODE_H + 6;
  const dip = Math.max(y1, y2) + 60;
  return { d: `M${x1} ${y1} C${x1} ${dip} ${x2} ${dip} ${x2} ${y2}`, mid: { x: (x1 + x2) / 2, y: dip - 14 } };
}

export class TopologyView {
  constructor() {
    this.structure = "";
    this.nodes = new Map();
    this.edgeParts = new Map();
    this.svgHolder = h("div", { class: "topology-holder" });
    this.error = h("div", { class: "error-banner", hidden: true, role: "alert" });
    const lock = lockIcon();
    this.edgeTable = new LiveTable(
      [
        {
          key: "src", label: "From", sort: (r) => r.src, cellClass: "name",
          render: (r, td) => { if (!td.firstChild) td.append(h("a", { href: `#/service/${encodeURIComponent(r.src)}`, text: r.src })); },
        },
        {
          key: "dst", label: "To", sort: (r) => r.dst, cellClass: "name",
          render: (r, td) => { if (!td.firstChild) td.append(h("a", { href: `#/service/${encodeURIComponent(r.dst)}`, text: r.dst })); },
        },
        ...goldenColumns(),
        {
          key: "secured", label: "mTLS", sort: (r) => (r.secured ? 1 : 0),
          render: (r, td) => {
            const text = r.secured ? "secured" : "plaintext";
            if (td.dataset.value !== text) {
              td.dataset.value = text;
              td.replaceChildren(r.secured ? lockIcon() : "", r.secured ? " " + (r.server_id || "mTLS") : h("span", { class: "muted" }, "no"));
            }
          },
        },
      ],
      { key: (r) => `${r.src}->${r.dst}`, sortKey: "rps", sortDesc: true, emptyText: "No calls between meshed services in the last minute." },
    );
    this.element = h(
      "div",
      { class: "topology-page", "data-page": "topology" },
      h("div", { class: "page-head" }, h("h1", {}, "Topology"), h("span", { class: "sub" }, "calls in the last 60 s · click a service for its page")),
      this.error,
      h(
        "section",
        { class: "panel" },
        this.svgHolder,
        h(
          "div",
          { class: "legend" },
          h("span", {}, h("span", { class: "dot health-ok" }), "≥ 99 % success"),
          h("span", {}, h("span", { class: "dot health-warn" }), "≥ 95 %"),
          h("span", {}, h("span", { class: "dot health-bad" }), "< 95 %"),
          h("span", {}, h("span", { class: "dot" }), "no traffic"),
          h("span", {}, lock, "every call over mTLS"),
        ),
      ),
      panel("Edges", this.edgeTable.element),
    );
  }

  async refresh() {
    const [services, stat, edges] = await Promise.all([
      getJSON("/api/services"),
      getJSON("/api/stat", { window: WINDOW }),
      getJSON("/api/edges", { window: WINDOW }),
    ]);
    this.error.hidden = true;
    const statByName = new Map(stat.rows.map((r) => [r.service, r]));
    const names = new Set(services.services.map((sv) => sv.name));
    for (const r of stat.rows) names.add(r.service);
    for (const e of edges.rows) {
      names.add(e.src);
      names.add(e.dst);
    }
    const sorted = [...names].sort();
    const key = JSON.stringify([sorted, edges.rows.map((e) => `${e.src}->${e.dst}`).sort()]);
    if (key !== this.structure) {
      this.structure = key;
      this.draw(sorted, edges.rows);
    }
    for (const [name, node] of this.nodes) {
      const row = statByName.get(name);
      node.group.setAttribute("class", `node ${health(row?.success_rate)}`);
      const out = edges.rows.filter((e) => e.src === name).reduce((sum, e) => sum + e.rps, 0);
      // A service nobody calls (a frontend, a job) still shows what it sends.
      const text = row && row.requests
        ? `${percent(row.success_rate)} · ${rate(row.rps)} rps`
        : out > 0 ? `calls out ${rate(out)} rps` : "no traffic";
      setText(node.figures, text);
    }
    for (const e of edges.rows) {
      const parts = this.edgeParts.get(`${e.src}->${e.dst}`);
      if (!parts) continue;
      parts.group.setAttribute("class", `edge ${health(e.success_rate)}`);
      parts.group.dataset.secured = e.secured ? "true" : "false";
      setText(parts.text, `${rate(e.rps)} rps · ${percent(e.success_rate)}`);
      parts.lock.style.display = e.secured ? "" : "none";
      const width = parts.text.getComputedTextLength() + 14 + (e.secured ? 16 : 0);
      parts.box.setAttribute("width", width.toFixed(1));
      parts.box.setAttribute("x", (-width / 2).toFixed(1));
      parts.text.setAttribute("x", (-width / 2 + 7 + (e.secured ? 16 : 0)).toFixed(1));
      parts.lock.setAttribute("transform", `translate(${(-width / 2 + 6).toFixed(1)} -7) scale(0.85)`);
    }
    this.edgeTable.update(edges.rows);
  }

  draw(names, edges) {
    const { positions, width, height } = layout(names, edges);
    const marker = s(
      "marker",
      { id: "arrow", viewBox: "0 0 10 10", refX: "9", refY: "5", markerWidth: "7", markerHeight: "7", orient: "auto-start-reverse" },
      s("path", { d: "M0 0 L10 5 L0 10 z" }),
    );
    const edgeLayer = s("g", { class: "edges" });
    const labelLayer = s("g", { class: "edge-labels" });
    const nodeLayer = s("g", { class: "nodes" });
    this.edgeParts.clear();
    this.nodes.clear();
    let extraHeight = 0;
    for (const e of edges) {
      const from = positions.get(e.src);
      const to = positions.get(e.dst);
      if (!from || !to) continue;
      const { d, mid } = edgeGeometry(from, to);
      extraHeight = Math.max(extraHeight, mid.y + 30 - height);
      const id = `${e.src}->${e.dst}`;
      const group = s("g", { class: "edge", "data-edge": id }, s("path", { d, "marker-end": "url(#arrow)" }));
      const box = s("rect", { x: -40, y: -10, width: 80, height: 20 });
      const text = s("text", { x: -33, y: 4 });
      const lock = s("path", { d: LOCK_PATH, class: "lock-glyph" });
      const label = s("g", { class: "edge-label", "data-edge-label": id, transform: `translate(${mid.x.toFixed(1)} ${mid.y.toFixed(1)})` }, box, lock, text);
      edgeLayer.append(group);
      labelLayer.append(label);
      this.edgeParts.set(id, { group, text, box, lock });
    }
    for (const name of names) {
      const { x, y } = positions.get(name);
      const title = s("text", { class: "title", x: 16, y: 26, text: name });
      const figures = s("text", { class: "figures", x: 16, y: 46, text: "" });
      const group = s(
        "g",
        { class: "node", "data-node": name, transform: `translate(${x} ${y})`, tabindex: "0", role: "link" },
        s("title", { text: `${name}: open the service page` }),
        s("rect", { width: NODE_W, height: NODE_H, rx: 8 }),
        title,
        figures,
      );
      const open = () => { location.hash = `#/service/${encodeURIComponent(name)}`; };
      group.addEventListener("click", open);
      group.addEventListener("keydown", (event) => { if (event.key === "Enter") open(); });
      nodeLayer.append(group);
      this.nodes.set(name, { group, figures });
    }
    const totalHeight = height + extraHeight;
    const svg = s(
      "svg",
      { class: "topology", viewBox: `0 0 ${width} ${totalHeight}`, width, height: totalHeight, role: "img", "aria-label": "Service topology" },
      s("defs", {}, marker),
      edgeLayer,
      nodeLayer,
      labelLayer,
    );
    if (!names.length) {
      this.svgHolder.replaceChildren(h("div", { class: "empty" }, "No services known yet."));
      return;
    }
    this.svgHolder.replaceChildren(svg);
  }

  showError(error) {
    this.error.hidden = false;
    this.error.textContent = `Could not load the topology: ${error.message}. Retrying every 2 s.`;
  }

  destroy() {}
}
