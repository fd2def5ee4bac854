// Small DOM and formatting helpers shared by every page: element builder,
// number formats, health colours, sparklines and a sortable table that updates
// its rows in place (no re-render flicker on each poll).

export const SVG_NS = "http://www.w3.org/2000/svg";

// Success-rate thresholds for the health colours (docs/dashboard.md).
export const HEALTH_OK = 0.99;
export const HEALTH_WARN = 0.95;

export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function s(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined) continue;
    if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, String(value));
  }
  for (const child of children.flat()) if (child) node.append(child);
  return node;
}

export function health(successRate) {
  if (successRate === null || successRate === undefined) return "health-none";
  if (successRate >= HEALTH_OK) return "health-ok";
  if (successRate >= HEALTH_WARN) return "health-warn";
  return "health-bad";
}

export function percent(value, digits = 1) {
  if (value === null || value === undefined) return "—";
  if (value >= 1) return "100%";
  return `${(value * 100).toFixed(digits)}%`;
}

export function rate(value) {
  if (value === null || value === undefined) return "—";
  if (value === 0) return "0";
  if (value < 0.1) return value.toFixed(3);
  if (value < 10) return value.toFixed(2);
  if (value < 1000) return value.toFixed(1);
  return `${(value / 1000).toFixed(1)}k`;
}

export function ms(value) {
  if (value === null || value === undefined) return "—";
  if (value < 10) return `${value.toFixed(2)} ms`;
  if (value < 1000) return `${value.toFixed(0)} ms`;
  return `${(value / 1000).toFixed(2)} s`;
}

export function count(value) {
  if (value === null || value === undefined) return "—";
  return Math.round(value).toLocaleString("en-US");
}

export function lockIcon(title = "mTLS") {
  const icon = s(
    "svg",
    { class: "lock", viewBox: "0 0 16 16", role: "img", "aria-label": title },
    s("title", { text: title }),
    s("path", { d: "M4 7V5a4 4 0 0 1 8 0v2h.5A1.5 1.5 0 0 1 14 8.5v5a1.5 1.5 0 0 1-1.5 1.5h-9A1.5 1.5 0 0 1 2 13.5v-5A1.5 1.5 0 0 1 3.5 7H4zm2 0h4V5a2 2 0 0 0-4 0v2z" }),
  );
  return icon;
}

export function tlsShare(share) {
  const value = share ?? 0;
  return h(
    "span",
    { class: "tls", title: `${percent(value)} of responses over mTLS` },
    h("span", { class: "tls-bar" }, h("span", { style: `width:${Math.round(value * 100)}%` })),
    percent(value, 0),
  );
}

// A sparkline SVG; `update` redraws it in place from new points.
export function sparkline(wide = false) {
  const area = s("path", { class: "area" });
  const line = s("path", { class: "line" });
  const svg = s("svg", { class: wide ? "spark wide" : "spark", viewBox: "0 0 100 24", preserveAspectRatio: "none", "aria-hidden": "true" }, area, line);
  svg.update = (values) => {
    const numbers = values.map((v) => (typeof v === "number" && Number.isFinite(v) ? v : 0));
    if (numbers.length < 2) {
      line.setAttribute("d", "M0 23 L100 23");
      area.setAttribute("d", "");
      return;
    }
    const max = Math.max(...numbers) || 1;
    const stepX = 100 / (numbers.length - 1);
    const points = numbers.map((v, i) => [i * stepX, 23 - (v / max) * 21]);
    const d = points.map(([x, y], i) => `${i ? "L" : "M"}${x.toFixed(2)} ${y.toFixed(2)}`).join(" ");
    line.setAttribute("d", d);
    area.setAttribute("d", `${d} L100 24 L0 24 Z`);
  };
  return svg;
}

// A table whose rows are keyed: `update(rows)` changes cell text in place,
// adds and removes rows, and reorders only when the order changed.
// columns: [{key, label, num, sort: (row) => value, render: (row, cell, old) => void}]
export class LiveTable {
  constructor(columns, { key, sortKey, sortDesc = false, emptyText = "No data yet.", rowAttrs } = {}) {
    this.columns = columns;
    this.key = key;
    this.sortKey = sortKey ?? columns[0].key;
    this.sortDesc = sortDesc;
    this.rowAttrs = rowAttrs;
    this.rows = [];
    this.byKey = new Map();
    this.headCells = new Map();
    const headRow = h("tr");
    for (const column of columns) {
      const th = h("th", { class: column.num ? "num" : null, scope: "col" }, column.label);
      if (column.sort) {
        th.dataset.sort = column.key;
        th.tabIndex = 0;
        th.addEventListener("click", () => this.sortBy(column.key));
        th.addEventListener("keydown", (event) => {
          if (event.key === "Enter" || event.key === " ") {
            event.preventDefault();
            this.sortBy(column.key);
          }
        });
      }
      this.headCells.set(column.key, th);
      headRow.append(th);
    }
    this.tbody = h("tbody");
    this.empty = h("div", { class: "empty" }, emptyText);
    this.table = h("table", {}, h("thead", {}, headRow), this.tbody);
    this.element = h("div", { class: "table-scroll" }, this.table, this.empty);
    this.markSort();
  }

  sortBy(key) {
    if (this.sortKey === key) this.sortDesc = !this.sortDesc;
    else {
      this.sortKey = key;
      this.sortDesc = this.columns.find((c) => c.key === key)?.num ?? false;
    }
    this.markSort();
    this.update(this.rows);
  }

  markSort() {
    for (const [key, th] of this.headCells) {
      if (key === this.sortKey) th.setAttribute("aria-sort", this.sortDesc ? "descending" : "ascending");
      else th.removeAttribute("aria-sort");
    }
  }

  update(rows) {
    this.rows = rows;
    const column = this.columns.find((c) => c.key === this.sortKey);
    const sorted = [...rows];
    if (column?.sort) {
      const direction = this.sortDesc ? -1 : 1;
      sorted.sort((a, b) => {
        const x = column.sort(a);
        const y = column.sort(b);
        // Rows without a value (no traffic) go last in both directions.
        if (x === null || x === undefined) return y === null || y === undefined ? 0 : 1;
        if (y === null || y === undefined) return -1;
        if (x < y) return -direction;
        if (x > y) return direction;
        return String(this.key(a)).localeCompare(String(this.key(b)));
      });
    }
    const seen = new Set();
    sorted.forEach((row, index) => {
      const key = String(this.key(row));
      seen.add(key);
      let entry = this.byKey.get(key);
      if (!entry) {
        const tr = h("tr", { "data-key": key });
        const cells = this.columns.map((c) => {
          const td = h("td", { class: [c.num ? "num" : "", c.cellClass ?? ""].join(" ").trim() || null, "data-col": c.key });
          tr.append(td);
          return td;
        });
        entry = { tr, cells };
        this.byKey.set(key, entry);
      }
      if (this.rowAttrs) this.rowAttrs(row, entry.tr);
      this.columns.forEach((c, i) => c.render(row, entry.cells[i]));
      if (this.tbody.children[index] !== entry.tr) this.tbody.insertBefore(entry.tr, this.tbody.children[index] ?? null);
    });
    for (const [key, entry] of this.byKey) {
      if (!seen.has(key)) {
        entry.tr.remove();
        this.byKey.delete(key);
      }
    }
    this.empty.hidden = rows.length > 0;
    this.table.hidden = rows.length === 0;
  }
}

// Cell renderers used by several tables.
export function setText(cell, text, className) {
  if (cell.textContent !== text) cell.textContent = text;
  if (className !== undefined && cell.className !== className) cell.className = className;
}

export function goldenColumns() {
  return [
    {
      key: "success_rate", label: "Success", num: true, sort: (r) => r.success_rate,
      render: (r, td) => setText(td, percent(r.success_rate, 2), `num rate ${health(r.success_rate)}`),
    },
    { key: "rps", label: "RPS", num: true, sort: (r) => r.rps, render: (r, td) => setText(td, rate(r.rps)) },
    { key: "requests", label: "Requests", num: true, sort: (r) => r.requests, render: (r, td) => setText(td, count(r.requests)) },
    { key: "p50", label: "P50", num: true, sort: (r) => r.latency_ms?.p50, render: (r, td) => setText(td, ms(r.latency_ms?.p50)) },
    { key: "p95", label: "P95", num: true, sort: (r) => r.latency_ms?.p95, render: (r, td) => setText(td, ms(r.latency_ms?.p95)) },
    { key: "p99", label: "P99", num: true, sort: (r) => r.latency_ms?.p99, render: (r, td) => setText(td, ms(r.latency_ms?.p99)) },
  ];
}

export function tlsColumn() {
  return {
    key: "tls_share", label: "mTLS", num: true, sort: (r) => r.tls_share,
    render: (r, td) => {
      const text = percent(r.tls_share ?? 0, 0);
      if (td.dataset.value !== text) {
        td.dataset.value = text;
        td.replaceChildren(tlsShare(r.tls_share));
      }
    },
  };
}

export function panel(title, body, extra = null) {
  const heading = h("h2", {}, title, extra);
  return h("section", { class: "panel" }, heading, body);
}
