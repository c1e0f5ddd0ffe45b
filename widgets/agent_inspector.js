// AgentInspector front end: one row per agent; click a row to open its state as a tree.

function h(tag, cls, text) {
  const el = document.createElement(tag);
  if (cls) el.className = cls;
  if (text !== undefined) el.textContent = String(text);
  return el;
}

function tree(value, name) {
  if (value === null || typeof value !== "object") {
    return h("div", "loom-leaf", `${name}: ${JSON.stringify(value)}`);
  }
  const details = h("details");
  details.open = true;
  const entries = Array.isArray(value) ? value.map((v, i) => [i, v]) : Object.entries(value);
  details.append(h("summary", null, `${name} (${entries.length})`));
  for (const [k, v] of entries) details.append(tree(v, k));
  return details;
}

function render({ model, el }) {
  el.classList.add("loom-widget", "loom-agents");
  const head = h("div", "loom-head");
  const table = h("table", "loom-table");
  const detail = h("div", "loom-detail");
  el.append(head, table, detail);
  let selected = null;

  function update() {
    const agents = model.get("agents");
    head.textContent = `Loom agents · ${agents.length}`;
    const header = h("tr");
    for (const c of ["agent", "status", "mailbox", "subscriptions", "handled", "failed", "expired", "last error"]) {
      header.append(h("th", null, c));
    }
    table.replaceChildren(header);
    for (const a of agents) {
      const tr = h("tr", "loom-row");
      const values = [a.agent_id, a.status, `${a.mailbox_depth}/${a.mailbox_size}`, a.topics.join(", "),
        a.handled, a.failed, a.expired, a.last_error];
      values.forEach((v, i) => {
        const td = h("td", i === 1 ? `loom-state-${a.status}` : null, v);
        tr.append(td);
      });
      tr.addEventListener("click", () => { selected = a.agent_id; update(); });
      table.append(tr);
    }
    const chosen = agents.find((a) => a.agent_id === selected);
    detail.replaceChildren(...(chosen ? [tree(chosen.state.persistent, `${chosen.agent_id} persistent state`),
      tree(chosen.state.ephemeral, "ephemeral")] : [h("div", "loom-note", "click an agent to see its state")]));
    el.dataset.agents = String(agents.length);
  }

  model.on("change:agents", update);
  update();
}

export default { render };
