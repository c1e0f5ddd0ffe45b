// RouterInspector front end: recent routing decisions; a click shows what was considered.

function h(tag, cls, text) {
  const el = document.createElement(tag);
  if (cls) el.className = cls;
  if (text !== undefined && text !== null) el.textContent = String(text);
  return el;
}

function fmt(v, digits) {
  return typeof v === "number" ? v.toFixed(digits) : "-";
}

function render({ model, el }) {
  el.classList.add("loom-widget", "loom-router");
  const head = h("div", "loom-head");
  const table = h("table", "loom-table");
  const detail = h("div", "loom-detail");
  el.append(head, table, detail);
  let open = -1;

  function update() {
    const rows = model.get("rows") || [];
    head.textContent = `model router · ${model.get("total")} decisions`;
    const thead = h("thead");
    const tr = h("tr");
    for (const c of ["route", "provider", "answered by", "privacy", "est. ms", "cost", "took ms", "reason"]) {
      tr.append(h("th", null, c));
    }
    thead.append(tr);
    const tbody = h("tbody");
    rows.forEach((r, i) => {
      const row = h("tr", "loom-row");
      row.dataset.route = r.route;
      const failed = r.error ? " loom-state-failed" : "";
      row.append(
        h("td", `loom-route${failed}`, r.route),
        h("td", null, r.provider),
        h("td", null, r.answered_by + (r.failovers.length ? ` (after ${r.failovers.join(", ")})` : "")),
        h("td", null, r.privacy),
        h("td", null, `${fmt(r.est_latency_ms, 0)} ${r.latency_source === "observed" ? "(obs.)" : ""}`),
        h("td", null, fmt(r.est_cost, 5)),
        h("td", null, fmt(r.latency_ms, 0)),
        h("td", null, r.error ? `${r.reason} — ${r.error}` : r.reason),
      );
      row.addEventListener("click", () => { open = open === i ? -1 : i; update(); });
      tbody.append(row);
    });
    table.replaceChildren(thead, tbody);
    detail.replaceChildren();
    if (open >= 0 && rows[open]) {
      detail.append(h("div", "loom-subhead", "providers considered"));
      for (const c of rows[open].considered) {
        const why = c.eligible ? "eligible" : `not eligible: ${c.why_not || c.reason || ""}`;
        detail.append(h("div", "loom-leaf", `${c.name} (${c.locality || "?"}) — ${why}`));
      }
    }
  }

  model.on("change:rows", update);
  update();
}

export default { render };
