// ApprovalPanel front end: each waiting dangerous tool call with Approve / Deny buttons.

function h(tag, cls, text) {
  const el = document.createElement(tag);
  if (cls) el.className = cls;
  if (text !== undefined && text !== null) el.textContent = String(text);
  return el;
}

function render({ model, el }) {
  el.classList.add("loom-widget", "loom-approval");
  const head = h("div", "loom-head");
  const list = h("div");
  const past = h("div", "loom-detail");
  el.append(head, list, past);

  function update() {
    const pending = model.get("pending") || [];
    head.textContent = pending.length ? `${pending.length} tool call(s) waiting for approval` : "no call waiting for approval";
    list.replaceChildren();
    for (const p of pending) {
      const box = h("div", "loom-approval-item");
      box.dataset.id = p.id;
      box.append(h("div", null, `${p.agent} wants ${p.tool}`), h("pre", "loom-pre", p.args), h("div", "loom-note", p.reason));
      const buttons = h("div", "loom-controls");
      const yes = h("button", "loom-button loom-approve", "Approve");
      const no = h("button", "loom-button loom-deny", "Deny");
      yes.addEventListener("click", () => model.send({ decide: p.id, allow: true }));
      no.addEventListener("click", () => model.send({ decide: p.id, allow: false }));
      buttons.append(yes, no);
      box.append(buttons);
      list.append(box);
    }
    past.replaceChildren();
    for (const d of model.get("decided") || []) {
      past.append(h("div", d.verdict === "approved" ? "loom-leaf loom-state-running" : "loom-leaf loom-state-failed",
        `${d.verdict}: ${d.agent} → ${d.tool} ${d.args}`));
    }
  }

  model.on("change:pending", update);
  model.on("change:decided", update);
  update();
  model.send({ refresh: true });
}

export default { render };
