// BusInspector front end: controls, recent events, per-topic rates and drops.
// State comes from Python (throttled); the only writes back are the filter controls.

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v);
  }
  for (const c of children) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

function render({ model, el }) {
  el.classList.add("loom-widget", "loom-bus");
  const head = h("div", { class: "loom-head" });
  const err = h("div", { class: "loom-error" });
  const pattern = h("input", { class: "loom-input", placeholder: "topic pattern, e.g. market.>", title: "topic pattern" });
  const types = h("input", { class: "loom-input", placeholder: "types, comma-separated", title: "event types" });
  const pause = h("button", { class: "loom-button" });
  pattern.value = model.get("pattern");
  types.value = model.get("types");
  pattern.addEventListener("change", () => { model.set("pattern", pattern.value || ">"); model.save_changes(); });
  types.addEventListener("change", () => { model.set("types", types.value); model.save_changes(); });
  pause.addEventListener("click", () => { model.set("paused", !model.get("paused")); model.save_changes(); });
  const controls = h("div", { class: "loom-controls" }, pattern, types, pause);

  const events = h("table", { class: "loom-table loom-events" });
  const topics = h("table", { class: "loom-table loom-topics" });
  const scroll = h("div", { class: "loom-scroll" }, events);
  el.append(head, controls, err, scroll, h("div", { class: "loom-subhead" }, "topics"), topics);

  function cells(tr, values, tag = "td") {
    for (const v of values) tr.append(h(tag, {}, v));
    return tr;
  }

  function update() {
    // a filter set from Python (a Topology or TraceTimeline click) shows in the boxes too
    if (document.activeElement !== pattern) pattern.value = model.get("pattern");
    if (document.activeElement !== types) types.value = model.get("types");
    const rows = model.get("rows");
    const total = model.get("total");
    const missed = model.get("missed");
    head.textContent = `Loom bus · ${total} events · showing ${rows.length}` +
      (missed ? ` · inspector skipped ${missed}` : "") + (model.get("paused") ? " · paused" : "");
    pause.textContent = model.get("paused") ? "resume" : "pause";
    err.textContent = model.get("error");
    events.replaceChildren(
      cells(h("tr"), ["time", "topic", "type", "sender", "thread", "payload"], "th"),
      ...rows.map((r) => {
        const tr = cells(h("tr", { class: "loom-row" }), [r.time, r.topic, r.type, r.sender, r.thread, r.payload]);
        tr.title = `#${r.seq}`;
        return tr;
      }),
    );
    topics.replaceChildren(
      cells(h("tr"), ["topic", "events", "rate/s", "subs", "queued", "dropped"], "th"),
      ...model.get("topics").map((t) => {
        const tr = cells(h("tr"), [t.topic, t.events, t.rate, t.subscriptions, t.depth, t.dropped]);
        if (t.dropped) {
          tr.lastChild.classList.add("loom-drop");
          tr.lastChild.title = Object.entries(t.drops).map(([k, v]) => `${k}: ${v}`).join("\n");
        }
        return tr;
      }),
    );
    // hooks for browser tests
    el.dataset.total = String(total);
    el.dataset.rows = String(rows.length);
  }

  for (const name of ["rows", "topics", "total", "missed", "paused", "error", "pattern", "types"]) {
    model.on(`change:${name}`, update);
  }
  update();
}

export default { render };
