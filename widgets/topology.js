// Topology front end: agents (blue) and topics (orange); edge width grows with traffic.

const SVG = "http://www.w3.org/2000/svg";

function s(tag, attrs) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  return el;
}

function render({ model, el }) {
  el.classList.add("loom-widget", "loom-topology");
  const head = document.createElement("div");
  head.className = "loom-head";
  const svg = s("svg", { width: "100%", height: 420, viewBox: "0 0 640 420" });
  el.append(head, svg);

  function update() {
    const nodes = model.get("nodes");
    const edges = model.get("edges");
    const xs = nodes.map((n) => n.x), ys = nodes.map((n) => n.y);
    const [minX, maxX] = [Math.min(...xs, -1), Math.max(...xs, 1)];
    const [minY, maxY] = [Math.min(...ys, -1), Math.max(...ys, 1)];
    const px = (v) => 60 + ((v - minX) / (maxX - minX || 1)) * 520;
    const py = (v) => 30 + ((v - minY) / (maxY - minY || 1)) * 360;
    const at = Object.fromEntries(nodes.map((n) => [n.id, [px(n.x), py(n.y)]]));
    svg.replaceChildren();
    const maxW = Math.max(1, ...edges.map((e) => e.weight));
    for (const e of edges) {
      const [a, b] = [at[e.source], at[e.target]];
      if (!a || !b) continue;
      const line = s("line", { x1: a[0], y1: a[1], x2: b[0], y2: b[1], class: "loom-edge",
        "stroke-width": 1 + (5 * e.weight) / maxW });
      const title = s("title", {});
      title.textContent = `${e.source} → ${e.target}: ${e.weight}`;
      line.append(title);
      svg.append(line);
    }
    for (const n of nodes) {
      const [x, y] = at[n.id];
      svg.append(s("circle", { cx: x, cy: y, r: n.kind === "agent" ? 11 : 7, class: `loom-node-${n.kind}` }));
      const label = s("text", { x: x + 13, y: y + 4, class: "loom-node-label" });
      label.textContent = n.label;
      svg.append(label);
    }
    head.textContent = `Loom topology · ${nodes.filter((n) => n.kind === "agent").length} agents · ` +
      `${nodes.filter((n) => n.kind === "topic").length} topics · ${edges.length} edges`;
    el.dataset.nodes = String(nodes.length);
  }

  model.on("change:nodes", update);
  model.on("change:edges", update);
  update();
}

export default { render };
