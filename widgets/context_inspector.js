// ContextInspector front end: the parts of an agent's context with token-budget bars.

function h(tag, cls, text) {
  const el = document.createElement(tag);
  if (cls) el.className = cls;
  if (text !== undefined) el.textContent = String(text);
  return el;
}

function render({ model, el }) {
  el.classList.add("loom-widget", "loom-context");
  const head = h("div", "loom-head");
  const bars = h("div", "loom-bars");
  const body = h("div", "loom-detail");
  el.append(head, bars, body);

  function bar(label, tokens, budget) {
    const row = h("div", "loom-bar-row");
    const track = h("div", "loom-bar-track");
    const fill = h("div", "loom-bar-fill");
    const pct = Math.min(100, (100 * tokens) / Math.max(budget, 1));
    fill.style.width = `${pct}%`;
    if (pct > 80) fill.classList.add("loom-bar-hot");
    track.append(fill);
    row.append(h("span", "loom-bar-label", label), track, h("span", "loom-bar-value", `${tokens} tok`));
    return row;
  }

  function update() {
    const b = model.get("bundle");
    const budget = model.get("budget");
    const t = b.tokens || { system: 0, messages: 0, tools: 0 };
    const used = t.system + t.messages + t.tools;
    head.textContent = `context of ${model.get("agent_id")} · ${used} / ${budget} tokens (est.)`;
    bars.replaceChildren(bar("system", t.system, budget), bar("messages", t.messages, budget),
      bar("tools", t.tools, budget), bar("total", used, budget));
    const sys = h("details");
    sys.append(h("summary", null, "system"), h("pre", "loom-pre", b.system || ""));
    const msgs = h("details");
    msgs.append(h("summary", null, `messages (${(b.messages || []).length})`));
    for (const m of b.messages || []) msgs.append(h("div", "loom-leaf", `[${m.role}] ${m.name || ""}: ${m.content}`));
    const tools = h("details");
    tools.append(h("summary", null, `tools (${(b.tools || []).length})`));
    for (const tool of b.tools || []) tools.append(h("pre", "loom-pre", JSON.stringify(tool, null, 1)));
    body.replaceChildren(sys, msgs, tools);
    el.dataset.tokens = String(used);
  }

  model.on("change:bundle", update);
  model.on("change:budget", update);
  update();
}

export default { render };
