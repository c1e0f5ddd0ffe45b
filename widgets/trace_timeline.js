// TraceTimeline front end: one swimlane per sender; spans for answered requests, marks for the rest.

const SVG = "http://www.w3.org/2000/svg";

function s(tag, attrs) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  return el;
}

function render({ model, el }) {
  el.classList.add("loom-widget", "loom-timeline");
  const head = document.createElement("div");
  head.className = "loom-head";
  const svg = s("svg", { width: "100%", height: 60 });
  const detail = document.createElement("pre");
  detail.className = "loom-pre";
  detail.textContent = "click an item for details";
  el.append(head, svg, detail);

  function update() {
    const items = model.get("items");
    const lanes = model.get("lanes");
    const now = model.get("now_ms");
    const win = model.get("window_ms");
    const laneH = 24, left = 140, width = 760;
    svg.setAttribute("height", String(Math.max(40, lanes.length * laneH + 20)));
    svg.setAttribute("viewBox", `0 0 ${left + width + 10} ${Math.max(40, lanes.length * laneH + 20)}`);
    svg.replaceChildren();
    // Zoom to the data when it spans less than the window (a short notebook run, say).
    const first = items.length ? Math.min(...items.map((i) => i.start)) : now - win;
    const t0 = Math.max(now - win, first - 200);
    const span = Math.max(now - t0, 1);
    const x = (t) => left + Math.max(0, Math.min(width, ((t - t0) / span) * width));
    lanes.forEach((lane, i) => {
      const y = i * laneH + 10;
      svg.append(s("line", { x1: left, x2: left + width, y1: y + laneH / 2, y2: y + laneH / 2, class: "loom-lane" }));
      const label = s("text", { x: 4, y: y + laneH / 2 + 4, class: "loom-lane-label" });
      label.textContent = lane.slice(0, 20);
      svg.append(label);
    });
    for (const it of items) {
      const y = lanes.indexOf(it.lane) * laneH + 10;
      const shape = it.kind === "span"
        ? s("rect", { x: x(it.start), y: y + 5, width: Math.max(3, x(it.end) - x(it.start)), height: laneH - 10, class: "loom-span" })
        : s("circle", { cx: x(it.end), cy: y + laneH / 2, r: 4, class: "loom-mark" });
      shape.addEventListener("click", () => {
        detail.textContent = JSON.stringify(it, null, 1);
      });
      const title = s("title", {});
      title.textContent = `${it.label} (${it.topic})`;
      shape.append(title);
      svg.append(shape);
    }
    head.textContent = `Loom timeline · ${lanes.length} lanes · ${items.length} items · last ${(span / 1000).toFixed(1)}s`;
    el.dataset.items = String(items.length);
  }

  for (const name of ["items", "lanes", "now_ms"]) model.on(`change:${name}`, update);
  update();
}

export default { render };
