// Topology front end: agents (left column) and topics (right column); publish edges (agent → topic)
// bend up, subscribe edges (topic → agent) bend down; width = recent events/s. Click a node to
// highlight its edges (and, for a topic, filter the linked bus inspector: done in Python).

const SVG = "http://www.w3.org/2000/svg";

function s(tag, attrs, text) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = String(text);
  return el;
}

function render({ model, el }) {
  el.classList.add("loom-widget", "loom-topology");
  const head = document.createElement("div");
  head.className = "loom-head";
  const note = document.createElement("div");
  note.className = "loom-note";
  const svg = s("svg", { width: "100%", height: 200 });
  el.append(head, note, svg);

  const W = 760, xl = 230, xr = 530, rowH = 34, top = 24;

  function update() {
    const nodes = model.get("nodes") || [];
    const edges = model.get("edges") || [];
    const chosen = model.get("selected");
    const counts = { agent: 0, topic: 0 };
    for (const n of nodes) counts[n.kind === "agent" ? "agent" : "topic"] += 1;
    const height = top + Math.max(counts.agent, counts.topic, 1) * rowH + 10;
    svg.setAttribute("height", String(height));
    svg.setAttribute("viewBox", `0 0 ${W} ${height}`);
    svg.replaceChildren();
    const defs = s("defs", {});
    for (const kind of ["publish", "subscribe"]) {
      const m = s("marker", { id: `loom-arrow-${kind}`, viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 8,
        markerHeight: 8, orient: "auto-start-reverse", markerUnits: "userSpaceOnUse" });
      m.append(s("path", { d: "M 0 0 L 10 5 L 0 10 z", class: `loom-arrow-${kind}` }));
      defs.append(m);
    }
    svg.append(defs);
    svg.append(s("text", { x: xl, y: 14, class: "loom-col-head", "text-anchor": "middle" }, "agents"));
    svg.append(s("text", { x: xr, y: 14, class: "loom-col-head", "text-anchor": "middle" }, "topics"));

    const at = {};
    for (const n of nodes) at[n.id] = [n.kind === "agent" ? xl : xr, top + n.y * (height - top - 10)];
    const maxRate = Math.max(1e-9, ...edges.map((e) => e.rate));
    for (const e of edges) {
      const [a, b] = [at[e.source], at[e.target]];
      if (!a || !b) continue;
      const bend = e.kind === "publish" ? -14 : 14;
      const dir = Math.sign(b[0] - a[0]) || 1;
      const x1 = a[0] + dir * (e.source.startsWith("agent:") ? 11 : 7), x2 = b[0] - dir * (e.target.startsWith("agent:") ? 13 : 9);
      const mx = (x1 + x2) / 2, my = (a[1] + b[1]) / 2 + bend;
      const width = e.rate > 0 ? 1.5 + (6 * e.rate) / maxRate : 1;
      const touches = chosen && (e.source === chosen || e.target === chosen);
      const path = s("path", {
        d: `M ${x1} ${a[1]} Q ${mx} ${my} ${x2} ${b[1]}`,
        class: `loom-edge loom-edge-${e.kind}` + (e.rate > 0 ? "" : " loom-edge-idle") + (touches ? " loom-edge-chosen" : "") +
          (chosen && !touches ? " loom-edge-faded" : ""),
        "stroke-width": width.toFixed(2),
        "marker-end": `url(#loom-arrow-${e.kind})`,
        "data-kind": e.kind,
        "data-rate": e.rate,
        "data-source": e.source,
        "data-target": e.target,
      });
      path.append(s("title", {}, `${e.kind}: ${e.source.split(":")[1]} → ${e.target.split(":")[1]} · ${e.rate}/s now · ${e.events} events`));
      svg.append(path);
    }
    for (const n of nodes) {
      const [x, y] = at[n.id];
      const agent = n.kind === "agent";
      const g = s("g", { class: `loom-node loom-node-${n.kind}-g` + (n.id === chosen ? " loom-node-chosen" : ""),
        "data-node-id": n.id, "data-kind": n.kind });
      g.append(s("circle", { cx: x, cy: y, r: agent ? 10 : 7, class: `loom-node-${n.kind}` + (agent && n.status !== "running" ? " loom-node-down" : "") }));
      const anchor = agent ? "end" : "start";
      const tx = agent ? x - 15 : x + 12;
      g.append(s("text", { x: tx, y: y - 1, class: "loom-node-label", "text-anchor": anchor }, n.label));
      const live = agent
        ? `in ${n.received} · out ${n.published}` + (n.depth ? ` · mailbox ${n.depth}` : "")
        : `${n.events} events · ${n.rate}/s`;
      g.append(s("text", { x: tx, y: y + 11, class: "loom-node-count", "text-anchor": anchor }, live));
      g.append(s("title", {}, `${n.label}: ${live}` + (agent ? ` · ${n.status}` : "")));
      g.addEventListener("click", () => {
        model.set("selected", model.get("selected") === n.id ? "" : n.id);
        model.save_changes();
      });
      svg.append(g);
    }
    const pubs = edges.filter((e) => e.kind === "publish").length;
    head.textContent = `Loom topology · ${counts.agent} agents · ${counts.topic} topics · ${pubs} publish edges · ` +
      `${edges.length - pubs} subscribe edges`;
    note.textContent = `edge width = events/s over the last ${model.get("window_s")} s` +
      (model.get("linked") ? " · click a topic to filter the bus inspector" : " · click a node to highlight its edges");
    el.dataset.nodes = String(nodes.length);
    el.dataset.edges = String(edges.length);
    el.dataset.selected = chosen;
  }

  for (const name of ["nodes", "edges", "selected"]) model.on(`change:${name}`, update);
  update();
}

export default { render };
