// attn serve: the page. Plain JavaScript, no libraries, nothing fetched from elsewhere.
// It lists the served models (GET /v1/models), sends the text with "attention": true, and
// draws the answer: a heatmap of output x source pieces (seq2seq) or the sentence shaded by
// token importance (sentiment). All user and model text goes in through textContent.
"use strict";

const SPACE = "\u2581"; // SentencePiece's word-boundary marker
const VERB = { translate: "Translate", summarize: "Summarize", sentiment: "Classify" };
const HINT = {
  translate: "Type a sentence in the model's source language.",
  summarize: "Paste a document or a dialogue.",
  sentiment: "Type a review or any short text.",
};
const $ = (id) => document.getElementById(id);
const state = { key: sessionStorage.getItem("attn-key") || "", models: [], busy: false };

class NeedKey extends Error {}

async function api(path, body) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (state.key) headers["Authorization"] = "Bearer " + state.key;
  const res = await fetch(path, {
    method: body === undefined ? "GET" : "POST", headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = null;
  try { data = await res.json(); } catch (e) { data = null; }
  if (res.status === 401) throw new NeedKey((data && data.error) || "this server needs an API key");
  if (!res.ok) throw new Error((data && data.error) || `HTTP ${res.status}`);
  return data;
}

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

function display(piece) {
  const text = piece.split(SPACE).join("");
  return text || SPACE;
}

function showError(message) {
  $("error").textContent = message || "";
  $("error").hidden = !message;
}

// ------------------------------------------------------------------ models and the key

async function loadModels() {
  try {
    const data = await api("/v1/models");
    $("key-card").hidden = true;
    state.models = data.models;
    fillModels();
  } catch (e) {
    if (e instanceof NeedKey) {
      $("key-card").hidden = false;
      if (state.key) { $("key-error").textContent = "That key was refused."; $("key-error").hidden = false; }
      $("key").focus();
    } else {
      showError("Could not list the models: " + e.message);
    }
  }
}

function fillModels() {
  const select = $("model");
  select.textContent = "";
  for (const task of ["translate", "summarize", "sentiment"]) {
    const of = state.models.filter((m) => m.task === task);
    if (!of.length) continue;
    const group = el("optgroup");
    group.label = task;
    for (const m of of) {
      const opt = el("option", "", describe(m));
      opt.value = m.name;
      group.appendChild(opt);
    }
    select.appendChild(group);
  }
  const saved = sessionStorage.getItem("attn-model");
  if (saved && state.models.some((m) => m.name === saved)) select.value = saved;
  onModel();
}

function describe(m) {
  const langs = m.languages && m.languages.src && m.languages.tgt ? ` ${m.languages.src}\u2192${m.languages.tgt}` : "";
  return `${m.name} \u00b7 ${m.task}${langs}`;
}

function current() {
  return state.models.find((m) => m.name === $("model").value);
}

function onModel() {
  const m = current();
  $("run").disabled = !m;
  if (!m) return;
  sessionStorage.setItem("attn-model", m.name);
  $("run").textContent = VERB[m.task];
  $("text").placeholder = HINT[m.task];
  const bits = [m.engine];
  if (m.parameters) bits.push(`${(m.parameters / 1e6).toFixed(2)}M parameters`);
  if (m.labels) bits.push(m.labels.join(" / "));
  if (m.best_validation) bits.push(`best ${m.best_validation.name} ${Number(m.best_validation.value).toFixed(2)}`);
  $("model-info").textContent = bits.join(" \u00b7 ");
}

// ------------------------------------------------------------------ running

async function run() {
  const m = current();
  const text = $("text").value;
  if (!m || state.busy) return;
  if (!text.trim()) { showError("Type some text first."); return; }
  showError("");
  state.busy = true;
  $("run").disabled = true;
  $("run").classList.add("busy");
  const start = performance.now();
  try {
    const data = await api(`/v1/${m.task}`, { text, model: m.name, attention: true });
    $("timing").textContent = `${Math.round(performance.now() - start)} ms`;
    const out = data.outputs[0];
    if (m.task === "sentiment") showSentiment(out); else showSeq2Seq(m.task, out);
  } catch (e) {
    if (e instanceof NeedKey) { $("key-card").hidden = false; $("key").focus(); }
    showError(e.message);
  } finally {
    state.busy = false;
    $("run").disabled = false;
    $("run").classList.remove("busy");
  }
}

function showSeq2Seq(task, out) {
  $("result-title").textContent = task === "translate" ? "Translation" : "Summary";
  const box = $("output");
  box.textContent = "";
  box.appendChild(el("span", "text", out.text));
  box.appendChild(el("span", "score", `score ${out.score.toFixed(3)} (log-probability per length penalty)`));
  for (const note of out.notes || []) box.appendChild(el("span", "score", note));  // what was cut
  $("probs").textContent = "";
  $("result-card").hidden = false;
  const att = out.attention;
  $("attention-card").hidden = !att;
  if (att) drawAlignment(att);
}

function showSentiment(out) {
  $("result-title").textContent = "Sentiment";
  const box = $("output");
  box.textContent = "";
  const line = el("div", "label-line");
  line.appendChild(el("span", "label", out.label));
  line.appendChild(el("span", "conf", `${(out.confidence * 100).toFixed(1)}%`));
  box.appendChild(line);
  const probs = $("probs");
  probs.textContent = "";
  for (const [name, p] of Object.entries(out.probabilities)) {
    probs.appendChild(el("span", "pname", name));
    const bar = el("span", "bar");
    const fill = el("span");
    fill.style.width = `${(p * 100).toFixed(1)}%`;
    bar.appendChild(fill);
    probs.appendChild(bar);
    probs.appendChild(el("span", "pval", `${(p * 100).toFixed(1)}%`));
  }
  $("result-card").hidden = false;
  const att = out.attention;
  $("attention-card").hidden = !att;
  if (att) drawImportance(att);
}

// ------------------------------------------------------------------ pictures

function token(piece, weight, isFirst) {
  const special = /^<.*>$/.test(piece);
  const span = el("span", "tok", special ? piece : display(piece));
  if (special) span.classList.add("special");
  if (!isFirst && piece.startsWith(SPACE)) span.classList.add("space");
  setWeight(span, weight);
  return span;
}

function setWeight(node, w) {
  node.style.setProperty("--w", w.toFixed(3));
  node.classList.toggle("strong", w > 0.55);
}

function drawImportance(att) {
  $("attention-help").textContent = "Each token shaded by its importance for the pooled sentence "
    + "(attention rollout through the encoder's layers). Hover a token for its share.";
  $("strips").textContent = "";
  const top = Math.max(...att.importance, 1e-9);
  const sentence = el("div", "sentence");
  att.pieces.forEach((p, i) => {
    const t = token(p, att.importance[i] / top, i === 0);
    t.dataset.tip = `${display(p)}: ${(att.importance[i] * 100).toFixed(1)}% of the importance`;
    sentence.appendChild(t);
  });
  const box = $("attention");
  box.textContent = "";
  box.appendChild(sentence);
  const words = topWords(att.pieces, att.importance).slice(0, 5)
    .map(([w, v]) => `${w} ${(v * 100).toFixed(0)}%`).join(" \u00b7 ");
  box.appendChild(el("p", "muted small top-words", `Most important: ${words}`));
}

function topWords(pieces, weights) {
  const words = [];
  pieces.forEach((p, i) => {
    if (p.startsWith(SPACE) || !words.length) words.push([p, weights[i]]);
    else { words[words.length - 1][0] += p; words[words.length - 1][1] += weights[i]; }
  });
  return words.map(([w, v]) => [w.split(SPACE).join("").trim(), v]).filter(([w]) => w)
    .sort((a, b) => b[1] - a[1]);
}

function drawAlignment(att) {
  $("attention-help").textContent = "Rows: the output pieces, each with the cross-attention "
    + "(decoder layers and heads averaged) in use while the model produced it. Columns: the source "
    + "pieces. Hover a cell or an output piece to see what it attended to.";
  const src = att.source_pieces, outp = att.output_pieces, m = att.matrix;
  let top = 1e-9;
  for (const row of m) for (const v of row) top = Math.max(top, v);

  const strips = $("strips");
  strips.textContent = "";
  const srcStrip = el("div", "strip");
  srcStrip.appendChild(el("span", "who", "source"));
  const srcToks = src.map((p, j) => srcStrip.appendChild(token(p, 0, j === 0)));
  const outStrip = el("div", "strip");
  outStrip.appendChild(el("span", "who", "output"));
  const outToks = outp.map((p, i) => outStrip.appendChild(token(p, 0, i === 0)));
  strips.appendChild(srcStrip);
  strips.appendChild(outStrip);

  const table = el("table", "heatmap");
  const head = el("tr");
  head.appendChild(el("th"));
  const colHeads = src.map((p) => head.appendChild(el("th", "src", display(p))));
  table.appendChild(head);
  const rowHeads = [], cells = [];
  outp.forEach((p, i) => {
    const tr = el("tr");
    const th = el("th", "out", display(p));
    th.dataset.row = i;
    rowHeads.push(tr.appendChild(th));
    cells.push(m[i].map((v, j) => {
      const td = el("td", "heat-cell");
      td.style.setProperty("--w", (v / top).toFixed(3));
      td.dataset.row = i;
      td.dataset.col = j;
      td.dataset.tip = `${display(p)} \u2190 ${display(src[j])}: ${(v * 100).toFixed(1)}%`;
      return tr.appendChild(td);
    }));
    table.appendChild(tr);
  });
  const box = $("attention");
  box.textContent = "";
  box.appendChild(table);

  let lit = null;
  function light(i, j) {
    if (lit) {
      rowHeads[lit[0]].classList.remove("hl");
      outToks[lit[0]].classList.remove("active");
      cells[lit[0]].forEach((c) => c.classList.remove("rowhl"));
      if (lit[1] !== null) {
        colHeads[lit[1]].classList.remove("hl");
        cells[lit[0]][lit[1]].classList.remove("hot");
        cells.forEach((r) => r[lit[1]].classList.remove("colhl"));
      }
      srcToks.forEach((t) => { setWeight(t, 0); t.classList.remove("active"); });
    }
    lit = i === null ? null : [i, j];
    if (!lit) return;
    rowHeads[i].classList.add("hl");
    outToks[i].classList.add("active");
    cells[i].forEach((c) => c.classList.add("rowhl"));
    const rowTop = Math.max(...m[i], 1e-9);
    srcToks.forEach((t, k) => setWeight(t, m[i][k] / rowTop));
    if (j !== null) {
      colHeads[j].classList.add("hl");
      cells[i][j].classList.add("hot");
      cells.forEach((r) => r[j].classList.add("colhl"));
      srcToks[j].classList.add("active");
    }
  }
  table.addEventListener("mouseover", (ev) => {
    const target = ev.target.closest("td.heat-cell, th.out");
    if (!target) return;
    light(Number(target.dataset.row), target.dataset.col === undefined ? null : Number(target.dataset.col));
  });
  table.addEventListener("mouseleave", () => light(null, null));
  outToks.forEach((t, i) => {
    t.addEventListener("mouseenter", () => light(i, null));
    t.addEventListener("mouseleave", () => light(null, null));
  });
}

// ------------------------------------------------------------------ tooltips and wiring

document.addEventListener("mousemove", (ev) => {
  const tip = $("tip");
  const target = ev.target.closest ? ev.target.closest("[data-tip]") : null;
  if (!target) { tip.hidden = true; return; }
  tip.textContent = target.dataset.tip;
  tip.hidden = false;
  const x = Math.min(ev.clientX + 14, window.innerWidth - tip.offsetWidth - 8);
  tip.style.left = `${x}px`;
  tip.style.top = `${ev.clientY + 16}px`;
});

$("model").addEventListener("change", onModel);
$("run").addEventListener("click", run);
$("text").addEventListener("keydown", (ev) => {
  if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) { ev.preventDefault(); run(); }
});
$("key-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  state.key = $("key").value.trim();
  sessionStorage.setItem("attn-key", state.key);
  $("key-error").hidden = true;
  loadModels();
});
loadModels();
