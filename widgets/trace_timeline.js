// TraceTimeline front end: the collector's spans as swimlanes (one lane per agent, then the parts),
// children one row under their parent, a time axis; a click shows the span (computed in Python).

const SVG = "http://www.w3.org/2000/svg";

function s(tag, attrs, text) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = String(text);
  return el;
}

function h(tag, cls, text) {
  const el = document.createElement(tag);
  if (cls) el.className = cls;
  if (text !== undefined && text !== null) el.textContent = String(text);
  return el;
}

function ms(v) {
  return v >= 1000 ? `${(v / 1000).toFixed(3)} s` : `${v.toFixed(3)} ms`;
}

function render({ model, el }) {
  el.classList.add("loom-widget", "loom-timeline");
  const head = h("div", "loom-head");
  const hint = h("div", "loom-note loom-hint");
  const filter = h("select", "loom-input loom-trace-filter");
  filter.title = "trace";
  filter.addEventListener("change", () => {
    model.set("trace", filter.value);
    model.set("selected", "");
    model.save_changes();
  });
  const controls = h("div", "loom-controls");
  controls.append(h("span", "loom-note", "trace"), filter);
  const svg = s("svg", { width: "100%", height: 60 });
  const detail = h("div", "loom-detail loom-span-detail");
  detail.append(h("div", "loom-note", "click a span for its attributes, events and bus events"));
  el.append(head, hint, controls, svg, detail);

  const laneH = 16, left = 150, width = 800, top = 22;

  function select(id) {
    model.set("selected", id);
    model.save_changes();
  }

  function update() {
    const items = model.get("items") || [];
    const lanes = model.get("lanes") || [];
    const ticks = model.get("ticks") || [];
    const spanMs = Math.max(model.get("span_ms"), 1e-3);
    const chosen = model.get("selected");
    hint.textContent = model.get("hint");
    hint.style.display = model.get("hint") ? "" : "none";

    const traces = model.get("traces") || [];
    filter.replaceChildren(new Option(`all traces (${traces.length})`, ""), ...traces.slice().reverse().map((t) =>
      new Option(t.label, t.id)));
    filter.value = model.get("trace");

    const laneTop = {};
    let y = top;
    for (const lane of lanes) {
      laneTop[lane.name] = y;
      y += lane.rows * laneH + 6;
    }
    const height = Math.max(y + 4, 50);
    svg.setAttribute("height", String(height));
    svg.setAttribute("viewBox", `0 0 ${left + width + 10} ${height}`);
    svg.replaceChildren();
    const x = (t) => left + (t / spanMs) * width;

    const axis = s("g", { class: "loom-axis" });
    for (const tk of ticks) {
      axis.append(s("line", { x1: x(tk.t), x2: x(tk.t), y1: top - 4, y2: height, class: "loom-grid" }));
      axis.append(s("text", { x: x(tk.t), y: top - 8, class: "loom-tick", "text-anchor": "middle" }, tk.label));
    }
    svg.append(axis);
    lanes.forEach((lane, i) => {
      const y0 = laneTop[lane.name];
      const hgt = lane.rows * laneH + 4;
      svg.append(s("rect", { x: 0, y: y0 - 2, width: left + width, height: hgt, class: `loom-lane-bg loom-lane-${i % 2}` }));
      const g = s("g", { class: `loom-lane loom-lane-${lane.kind}`, "data-lane": lane.name });
      g.append(s("text", { x: 4, y: y0 + laneH - 4, class: "loom-lane-label" }, lane.name.slice(0, 22)));
      svg.append(g);
    });
    // longest first: a short span is drawn over a long neighbour in its row, so it stays clickable
    const drawn = items.slice().sort((a, b) => (b.end - b.start) - (a.end - a.start));
    for (const it of drawn) {
      const y0 = laneTop[it.lane] + it.row * laneH;
      const x0 = x(it.start);
      const w = Math.max(3, x(it.end) - x0);
      const g = s("g", { class: "loom-span-g", "data-span-id": it.id, "data-depth": it.depth, "data-name": it.name, "data-label": it.label });
      const cls = `loom-span loom-span-${it.status}` + (it.id === chosen ? " loom-span-chosen" : "");
      const bar = s("rect", { x: x0, y: y0 + 1, width: w, height: laneH - 3, class: cls, rx: 2 });
      bar.append(s("title", {}, `${it.label} · ${ms(it.end - it.start)} · depth ${it.depth}`));
      g.append(bar);
      if (w > 40) {
        g.append(s("text", { x: x0 + 3, y: y0 + laneH - 5, class: "loom-span-label" }, it.label.slice(0, Math.floor(w / 6))));
      }
      g.addEventListener("click", () => select(it.id));
      svg.append(g);
    }
    const agents = lanes.filter((l) => l.kind === "agent").length;
    head.textContent = `Loom traces · ${agents} agents · ${lanes.length - agents} parts · ${items.length} spans · ${ms(spanMs)}`;
    el.dataset.items = String(items.length);
    el.dataset.lanes = String(lanes.length);
  }

  function row(table, k, v) {
    const tr = h("tr");
    tr.append(h("th", null, k), h("td", null, typeof v === "object" ? JSON.stringify(v) : v));
    table.append(tr);
  }

  function showDetail() {
    const d = model.get("detail") || {};
    if (!d.span_id) return;
    const box = h("div");
    const title = h("div", "loom-subhead", `${d.name} · ${d.lane} · ${ms(d.duration_ms)} · depth ${d.depth} · ${d.status}`);
    box.append(title);
    if (d.error) box.append(h("div", "loom-error", d.error));
    const buttons = h("div", "loom-controls");
    if (d.parent_span_id && d.parent_name) {
      const up = h("button", "loom-button loom-parent", `parent: ${d.parent_name}`);
      up.addEventListener("click", () => select(d.parent_span_id));
      buttons.append(up);
    }
    if (model.get("linked") && d.topic) {
      const bus = h("button", "loom-button loom-show-bus", `show ${d.topic} in the bus inspector`);
      bus.addEventListener("click", () => model.send({ cmd: "show_in_bus", span: d.span_id }));
      buttons.append(bus);
    }
    box.append(buttons);
    const attrs = h("table", "loom-table loom-attrs");
    row(attrs, "trace", d.trace_id);
    row(attrs, "span", d.span_id);
    for (const [k, v] of Object.entries(d.attributes)) row(attrs, k, v);
    box.append(attrs);
    if (d.events.length) {
      box.append(h("div", "loom-subhead", "span events"));
      const evs = h("table", "loom-table loom-span-events");
      for (const e of d.events) row(evs, `+${ms(e.at_ms)} ${e.name}`, e.attributes);
      box.append(evs);
    }
    if (d.children.length) {
      box.append(h("div", "loom-subhead", "children"));
      for (const c of d.children) {
        const line = h("div", "loom-row loom-leaf", `${c.label} (${c.lane})`);
        line.addEventListener("click", () => select(c.id));
        box.append(line);
      }
    }
    box.append(h("div", "loom-subhead", `bus events of this trace (${d.bus_events.length})`));
    const evTable = h("table", "loom-table loom-trace-events");
    const headRow = h("tr");
    for (const c of ["at", "sender", "topic", "type", "event id", "delivered"]) headRow.append(h("th", null, c));
    evTable.append(headRow);
    for (const e of d.bus_events) {
      const tr = h("tr", "loom-row" + (e.event_id && e.event_id === d.event_id ? " loom-row-chosen" : ""));
      for (const v of [`+${ms(e.at_ms)}`, e.sender, e.topic, e.type, e.event_id.slice(-12), e.delivered]) tr.append(h("td", null, v));
      tr.addEventListener("click", () => select(e.span));
      evTable.append(tr);
    }
    box.append(evTable);
    detail.replaceChildren(box);
    el.dataset.selected = d.span_id;
  }

  for (const name of ["items", "lanes", "ticks", "traces", "trace", "hint", "selected"]) model.on(`change:${name}`, update);
  model.on("change:detail", showDetail);
  update();
  showDetail();
}

export default { render };
