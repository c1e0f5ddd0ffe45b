// ReplayPanel front end: Play / Pause / Step over a replay, where it stands, the last events.

function h(tag, cls, text) {
  const el = document.createElement(tag);
  if (cls) el.className = cls;
  if (text !== undefined && text !== null) el.textContent = String(text);
  return el;
}

function render({ model, el }) {
  el.classList.add("loom-widget", "loom-replay");
  const head = h("div", "loom-head");
  const controls = h("div", "loom-controls");
  const play = h("button", "loom-button loom-play", "Play");
  const pause = h("button", "loom-button loom-pause", "Pause");
  const step = h("button", "loom-button loom-step", "Step");
  play.addEventListener("click", () => model.send({ cmd: "play" }));
  pause.addEventListener("click", () => model.send({ cmd: "pause" }));
  step.addEventListener("click", () => model.send({ cmd: "step" }));
  controls.append(play, pause, step);
  const list = h("div", "loom-detail");
  el.append(head, controls, list);

  function update() {
    const state = model.get("state");
    head.textContent = `${model.get("title")} · ${state} · ${model.get("events")} events · ` +
      `record ${model.get("position")} at ${model.get("recorded_s").toFixed(3)} s` +
      (model.get("error") ? ` · ${model.get("error")}` : "");
    el.dataset.state = state;
    el.dataset.events = String(model.get("events"));
    step.disabled = state !== "paused";
    list.replaceChildren(...(model.get("recent") || []).map((r) =>
      h("div", "loom-leaf", `${r.topic} ${r.type} ${r.payload}`)));
  }

  for (const name of ["state", "position", "events", "recent", "error"]) model.on(`change:${name}`, update);
  update();
}

export default { render };
