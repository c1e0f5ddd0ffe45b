// MetricsView front end: one card per series (the latest value and an SVG sparkline of the last
// samples), then drops by reason, delivery latency, mailboxes, tools and LLM tokens as tables.

const SVG = "http://www.w3.org/2000/svg";

function h(tag, cls, text) {
  const el = document.createElement(tag);
  if (cls) el.className = cls;
  if (text !== undefined && text !== null) el.textContent = String(text);
  return el;
}

function s(tag, attrs) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  return el;
}

function sparkline(values, name) {
  const W = 150, H = 36;
  const svg = s("svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}`, class: "loom-spark", "data-series": name });
  svg.append(s("line", { x1: 0, x2: W, y1: H - 1, y2: H - 1, class: "loom-spark-base" }));
  if (values.length) {
    const top = Math.max(...values, 1e-9);
    const step = values.length > 1 ? W / (values.length - 1) : 0;
    const pts = values.map((v, i) => `${(i * step).toFixed(1)},${(H - 2 - (v / top) * (H - 6)).toFixed(1)}`);
    if (values.length === 1) pts.push(`${W},${pts[0].split(",")[1]}`);
    svg.append(s("polyline", { points: pts.join(" "), class: "loom-spark-line" }));
    const title = s("title", {});
    title.textContent = `max ${top} over the last ${values.length} samples`;
    svg.append(title);
  }
  return svg;
}

function table(cls, head, rows) {
  const t = h("table", `loom-table ${cls}`);
  const tr = h("tr");
  for (const c of head) tr.append(h("th", null, c));
  t.append(tr);
  for (const r of rows) {
    const row = h("tr");
    for (const c of r) row.append(h("td", null, c === null || c === undefined ? "-" : c));
    t.append(row);
  }
  return t;
}

function render({ model, el }) {
  el.classList.add("loom-widget", "loom-metrics");
  const head = h("div", "loom-head");
  const cards = h("div", "loom-cards");
  const tables = h("div", "loom-detail");
  el.append(head, cards, tables);

  function update() {
    const series = model.get("series") || {};
    const cur = model.get("current") || {};
    const labels = model.get("labels") || {};
    cards.replaceChildren();
    for (const name of Object.keys(labels)) {
      const card = h("div", "loom-card");
      card.dataset.series = name;
      const value = h("div", "loom-card-value", `${cur[name] ?? 0}`);
      value.dataset.value = String(cur[name] ?? 0);
      card.append(h("div", "loom-card-label", labels[name]), value, sparkline(series[name] || [], name));
      if (cur[`${name}_total`] !== undefined) card.append(h("div", "loom-note", `total ${cur[`${name}_total`]}`));
      cards.append(card);
    }
    tables.replaceChildren();
    const lat = model.get("latency") || [];
    tables.append(h("div", "loom-subhead", "delivery latency (sampled, µs)" +
      (cur.latency_p50_us !== undefined ? ` · p50 ${cur.latency_p50_us} · worst p99 ${cur.latency_p99_us}` : " · no samples outside the inspectors yet")));
    if (lat.length) {
      tables.append(table("loom-latency", ["subscription", "patterns", "qos", "p50", "p99", "samples"],
        lat.map((r) => [r.subscription + (r.observer ? " (inspector, polled)" : ""), r.patterns, r.qos, r.p50_us, r.p99_us, r.samples])));
    }
    const drops = model.get("drops") || [];
    tables.append(h("div", "loom-subhead", `drops by reason (${drops.reduce((a, d) => a + d.count, 0)})`));
    if (drops.length) tables.append(table("loom-drops", ["reason", "count", "topics"], drops.map((d) => [d.reason, d.count, d.topics.join(", ")])));
    const boxes = model.get("mailboxes") || [];
    tables.append(h("div", "loom-subhead", "mailboxes"));
    tables.append(table("loom-mailboxes", ["agent", "depth", "handled", "errors"], boxes.map((m) => [m.agent, m.depth, m.handled, m.errors])));
    const tools = model.get("tools") || [];
    tables.append(h("div", "loom-subhead", "tools"));
    const tt = table("loom-tools", ["tool", "calls", "errors", "calls/s"], tools.map((t) => [t.tool, t.calls, t.errors, t.rate]));
    tools.forEach((t, i) => {
      if (t.errors) {
        const cell = tt.rows[i + 1].cells[2];
        cell.classList.add("loom-error");
        cell.title = Object.entries(t.codes || {}).map(([k, v]) => `${k}: ${v}`).join("\n");
      }
    });
    tables.append(tt);
    const llm = model.get("llm") || [];
    tables.append(h("div", "loom-subhead", llm.length ? "LLM" : "LLM · no calls seen (tokens need telemetry on)"));
    if (llm.length) {
      tables.append(table("loom-llm", ["provider", "model", "calls", "mean ms", "input tokens", "output tokens"],
        llm.map((r) => [r.provider, r.model, r.calls, r.mean_ms, r.input, r.output])));
    }
    head.textContent = `Loom metrics · ${cur.published ?? 0} published/s · ${cur.delivered ?? 0} delivered/s · ` +
      `${cur.published_total ?? 0} events in all`;
    el.dataset.published = String(cur.published_total ?? 0);
    el.dataset.samples = String((series.published || []).length);
  }

  for (const name of ["series", "current", "drops", "latency", "mailboxes", "tools", "llm"]) model.on(`change:${name}`, update);
  update();
}

export default { render };
