// VoicePanel front end: input meter, VAD and speaker state, transcript, wake events, answers.

function h(tag, cls, text) {
  const el = document.createElement(tag);
  if (cls) el.className = cls;
  if (text !== undefined && text !== null) el.textContent = String(text);
  return el;
}

const LABELS = {
  heard: "heard", partial: "…", wake: "wake", query: "query", answer: "answer",
  interrupted: "barge-in", error: "error",
};

function render({ model, el }) {
  el.classList.add("loom-widget", "loom-voice");
  const head = h("div", "loom-head");
  const meter = h("div", "loom-voice-meter");
  const bar = h("div", "loom-voice-level");
  meter.append(bar);
  const lamps = h("div", "loom-voice-lamps");
  const vad = h("span", "loom-voice-lamp loom-voice-vad", "speech");
  const talk = h("span", "loom-voice-lamp loom-voice-talk", "agent speaking");
  lamps.append(vad, talk);
  const partial = h("div", "loom-voice-partial");
  const log = h("div", "loom-voice-log");
  el.append(head, meter, lamps, partial, log);

  function update() {
    head.textContent = `voice · ${model.get("state")}`;
    const level = Math.min(1, Math.sqrt(model.get("level") || 0) * 2);  // a perceptual scale
    bar.style.width = `${Math.round(level * 100)}%`;
    bar.dataset.level = String(model.get("level"));
    vad.classList.toggle("loom-on", !!model.get("speaking"));
    talk.classList.toggle("loom-on", !!model.get("talking"));
    partial.textContent = model.get("partial") ? `… ${model.get("partial")}` : "";
    const lines = model.get("lines") || [];
    log.replaceChildren(
      ...lines.map((ln) => {
        const row = h("div", `loom-voice-line loom-voice-${ln.kind}`);
        row.append(h("span", "loom-voice-kind", LABELS[ln.kind] || ln.kind), h("span", "loom-voice-text", ln.text));
        return row;
      }),
    );
  }

  for (const name of ["level", "speaking", "talking", "partial", "lines", "state"]) model.on(`change:${name}`, update);
  update();
}

export default { render };
