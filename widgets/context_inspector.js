// ContextInspector front end: the parts of an agent's context with token bars against its window,
// and what was dropped or compacted (and why).

function h(tag, cls, text) {
  const el = document.createElement(tag);
  if (cls) el.className = cls;
  if (text !== undefined && text !== null) el.textContent = String(text);
  return el;
}

const PARTS = ["system", "instructions", "memory", "messages", "tools"];

function render({ model, el }) {
  el.classList.add("loom-widget", "loom-context");
  const head = h("div", "loom-head");
  const sub = h("div", "loom-note");
  const bars = h("div", "loom-bars");
  const body = h("div", "loom-detail");
  el.append(head, sub, bars, body);

  function bar(label, tokens, budget) {
    const row = h("div", "loom-bar-row");
    row.dataset.part = label;
    const track = h("div", "loom-bar-track");
    const fill = h("div", "loom-bar-fill");
    const pct = Math.min(100, (100 * tokens) / Math.max(budget, 1));
    fill.style.width = `${pct}%`;
    if (pct > 80) fill.classList.add("loom-bar-hot");
    track.append(fill);
    row.append(h("span", "loom-bar-label", label), track, h("span", "loom-bar-value", `${tokens} tok`));
    return row;
  }

  function section(title, children) {
    const d = h("details");
    d.append(h("summary", null, title), ...children);
    return d;
  }

  function update() {
    const b = model.get("bundle") || {};
    const budget = model.get("budget");
    const t = b.tokens || {};
    const used = t.total !== undefined ? t.total : PARTS.reduce((s, p) => s + (t[p] || 0), 0);
    head.textContent = `context of ${model.get("agent_id")} · ${used} / ${budget} tokens`;
    sub.textContent = [b.source, b.tokenizer, b.reserve ? `${b.reserve} reserved for the answer` : "",
      b.fits === false ? "system + tools alone exceed the window" : ""].filter(Boolean).join(" · ");
    const rows = PARTS.filter((p) => t[p] !== undefined).map((p) => bar(p, t[p], budget));
    rows.push(bar("total", used, budget));
    bars.replaceChildren(...rows);
    const parts = [];
    for (const p of ["system", "instructions", "memory"]) {
      if (b[p]) parts.push(section(p, [h("pre", "loom-pre", b[p])]));
    }
    const msgs = (b.messages || []).map((m) => h("div", "loom-leaf", `[${m.role}]${m.name ? " " + m.name : ""}: ${m.content}`));
    parts.push(section(`messages (${msgs.length})`, msgs));
    const tools = (b.tools || []).map((tool) => h("pre", "loom-pre", JSON.stringify(tool, null, 1)));
    parts.push(section(`tools (${tools.length})`, tools));
    const dropped = (b.dropped || []).map((d) => h("div", "loom-leaf loom-drop", `${d.kind} ${d.id}: ${d.reason}`));
    if (dropped.length) parts.push(section(`dropped (${dropped.length})`, dropped));
    const compacted = (b.compacted || []).map((c) => h("div", "loom-leaf", JSON.stringify(c)));
    if (compacted.length) parts.push(section(`compacted (${compacted.length})`, compacted));
    for (const n of b.notes || []) parts.push(h("div", "loom-note", n));
    body.replaceChildren(...parts);
    el.dataset.tokens = String(used);
    el.dataset.dropped = String(dropped.length);
  }

  model.on("change:bundle", update);
  model.on("change:budget", update);
  update();
}

export default { render };
