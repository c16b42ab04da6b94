// tunesmith studio: plain JS, no build step. Polls the JSON API every 2 s; charts are SVG drawn here.
"use strict";

const $ = (sel) => document.querySelector(sel);
const POLL_MS = 2000;
const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];
const state = { view: "runs", runs: [], selected: new Set(), run: null, rows: [], next: 0, token: null, chat: [], compare: null };

// ---------------------------------------------------------------- the API (Bearer key from #key=... or asked once)

let apiKey = sessionStorage.getItem("tunesmith-key") || "";
const fromHash = new URLSearchParams(location.hash.slice(1)).get("key");
if (fromHash) { apiKey = fromHash; sessionStorage.setItem("tunesmith-key", apiKey); history.replaceState(null, "", location.pathname); }

async function api(path, body) {
  const headers = apiKey ? { Authorization: "Bearer " + apiKey } : {};
  const init = body === undefined ? { headers } : { method: "POST", headers: { ...headers, "Content-Type": "application/json" }, body: JSON.stringify(body) };
  const resp = await fetch("/studio/api/" + path, init);
  if (resp.status === 401) {
    const key = prompt("This studio needs its API key:");
    if (key) { apiKey = key; sessionStorage.setItem("tunesmith-key", key); return api(path, body); }
  }
  if (init.method && path === "chat" && resp.ok) return resp;
  const data = await resp.json();
  if (!resp.ok) throw new Error((data.error && data.error.message) || resp.statusText);
  return data;
}

function el(tag, attrs = {}, ...children) {
  const node = tag.startsWith("svg:") ? document.createElementNS("http://www.w3.org/2000/svg", tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined && v !== null) node.setAttribute(k, v);
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(c == null ? "" : String(c)));
  return node;
}
const fmt = (v) => (typeof v === "number" ? (Number.isInteger(v) ? String(v) : Math.abs(v) >= 1e-3 && Math.abs(v) < 1e4 ? String(Number(v.toFixed(4))) : v.toExponential(3)) : v == null ? "" : typeof v === "object" ? JSON.stringify(v) : String(v));
const wall = (s) => (s == null ? "" : s < 90 ? `${Math.round(s)} s` : s < 5400 ? `${(s / 60).toFixed(1)} min` : `${(s / 3600).toFixed(1)} h`);

// ---------------------------------------------------------------- views

function show(view) {
  state.view = view;
  for (const name of ["runs", "run", "compare", "launch"]) $(`#${name}-view`).hidden = name !== view;
}
document.querySelectorAll("nav a").forEach((a) => a.addEventListener("click", (e) => { e.preventDefault(); show(a.dataset.view); }));

// ---------------------------------------------------------------- SVG line chart: points carry data-step / data-value

function chart(title, lines, width = 420, height = 220) {
  const pad = { l: 56, r: 10, t: 20, b: 28 };
  const all = lines.flatMap((l) => l.points);
  const svg = el("svg:svg", { class: "chart", width, height, viewBox: `0 0 ${width} ${height}`, "data-key": title });
  svg.append(el("svg:text", { x: pad.l, y: 14, class: "title" }, title));
  if (!all.length) return svg;
  let [x0, x1] = [Math.min(...all.map((p) => p[0])), Math.max(...all.map((p) => p[0]))];
  let [y0, y1] = [Math.min(...all.map((p) => p[1])), Math.max(...all.map((p) => p[1]))];
  if (x0 === x1) { x0 -= 1; x1 += 1; }
  if (y0 === y1) { const d = Math.abs(y0) * 0.05 || 1; y0 -= d; y1 += d; }
  const X = (x) => pad.l + ((x - x0) / (x1 - x0)) * (width - pad.l - pad.r);
  const Y = (y) => height - pad.b - ((y - y0) / (y1 - y0)) * (height - pad.t - pad.b);
  svg.append(el("svg:line", { class: "axis", x1: pad.l, y1: height - pad.b, x2: width - pad.r, y2: height - pad.b }));
  svg.append(el("svg:line", { class: "axis", x1: pad.l, y1: pad.t, x2: pad.l, y2: height - pad.b }));
  const digits = Math.min(8, Math.max(0, Math.ceil(-Math.log10(y1 - y0)) + 2));  // enough to tell the ticks apart
  const tick = (v) => (Math.abs(v) >= 1e5 || (v !== 0 && Math.abs(v) < 1e-3) ? v.toExponential(2) : v.toFixed(digits));
  for (const v of [y1, (y0 + y1) / 2, y0]) svg.append(el("svg:text", { x: 2, y: Y(v) + 3 }, tick(v)));
  svg.append(el("svg:text", { x: pad.l, y: height - 8 }, `step ${x0}`));
  svg.append(el("svg:text", { x: width - pad.r - 60, y: height - 8 }, `step ${x1}`));
  lines.forEach((line, i) => {
    const color = line.color || COLORS[i % COLORS.length];
    const g = el("svg:g", { class: "series", "data-series": line.label });
    g.append(el("svg:polyline", { stroke: color, points: line.points.map((p) => `${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`).join(" ") }));
    for (const [s, v] of line.points) {
      const dot = el("svg:circle", { class: "point", cx: X(s).toFixed(1), cy: Y(v).toFixed(1), r: 2, fill: color, "data-step": s, "data-value": String(v), "data-series": line.label });
      dot.append(el("svg:title", {}, `${line.label} step ${s}: ${v}`));
      g.append(dot);
    }
    svg.append(g);
    if (lines.length > 1) svg.append(el("svg:text", { x: width - pad.r - 150, y: pad.t + 12 * (i + 1), style: `fill: ${color}` }, line.label));
  });
  return svg;
}

// the same rule as studio/runs.py: training-time rows (not the end-of-run eval row) with a finite number
const seriesOf = (rows, key) => rows.filter((r) => !r.final && "step" in r && typeof r[key] === "number" && isFinite(r[key])).map((r) => [r.step, r[key]]);

// ---------------------------------------------------------------- runs list

async function refreshRuns() {
  const data = await api("runs");
  state.runs = data.runs;
  $("#root").textContent = data.root;
  const body = $("#runs-table tbody");
  body.replaceChildren(...data.runs.map((r) => {
    const box = el("input", { type: "checkbox", class: "pick", "data-id": r.id });
    box.checked = state.selected.has(r.id);
    box.addEventListener("click", (e) => { e.stopPropagation(); box.checked ? state.selected.add(r.id) : state.selected.delete(r.id); updateCompareButton(); });
    const m = r.metrics || {};
    const tr = el("tr", { "data-id": r.id, "data-status": r.status },
      el("td", {}, box), el("td", { class: "name" }, r.id), el("td", {}, r.stage || ""), el("td", {}, r.model || ""), el("td", {}, r.dataset || ""),
      el("td", {}, el("span", { class: `status ${r.status}` }, r.status)), el("td", { class: "num" }, r.step ?? ""), el("td", { class: "num" }, wall(r.seconds)),
      el("td", { class: "num" }, fmt(m.train_loss ?? m.loss)), el("td", { class: "num" }, fmt(m.eval_loss)));
    if (!r.pending) tr.addEventListener("click", () => openRun(r.id));
    return tr;
  }));
  $("#runs-empty").hidden = data.runs.length > 0;
  for (const id of [...state.selected]) if (!data.runs.some((r) => r.id === id)) state.selected.delete(id);
  updateCompareButton();
}

function updateCompareButton() { $("#compare-btn").disabled = state.selected.size < 2; }
$("#compare-btn").addEventListener("click", () => openCompare([...state.selected]));

// ---------------------------------------------------------------- one run

async function openRun(id) {
  state.run = { id }; state.rows = []; state.next = 0; state.token = null; state.chat = [];
  $("#chat-log").replaceChildren();
  $("#charts").replaceChildren();
  $("#inspect-table").hidden = true;
  $("#rollouts-box").hidden = true;
  $("#plan").textContent = "(loading)";
  show("run");
  await refreshRun(true);
  loadPlan(id);
  loadRollouts(id);
}

// ---------------------------------------------------------------- plan, rollouts, inspector

async function loadPlan(id) {
  try {
    const plan = await api(`plan?id=${encodeURIComponent(id)}`);
    const lines = Object.entries(plan).filter(([, v]) => v !== null && typeof v !== "object").map(([k, v]) => `${k}: ${fmt(v)}`);
    if (plan.memory_bytes) lines.push("memory: " + Object.entries(plan.memory_bytes).map(([k, v]) => `${k} ${(v / 2 ** 20).toFixed(0)} MiB`).join(", "));
    if (plan.notes && plan.notes.length) lines.push(...plan.notes.map((n) => "note: " + n));
    if (state.run && state.run.id === id) $("#plan").textContent = lines.join("\n");
  } catch (err) { if (state.run && state.run.id === id) $("#plan").textContent = err.message; }
}

async function loadRollouts(id, step) {
  let data;
  try { data = await api(`rollouts?id=${encodeURIComponent(id)}` + (step != null ? `&step=${step}` : "")); } catch { return; }
  if (!state.run || state.run.id !== id) return;
  $("#rollouts-box").hidden = false;
  const select = $("#rollout-step");
  select.replaceChildren(...data.steps.map((s) => el("option", { value: s }, `step ${s}`)));
  select.value = data.record.step;
  const rows = [];
  for (const group of data.record.groups || []) {
    for (const [i, c] of group.completions.entries()) rows.push(el("tr", {}, el("td", {}, i ? "" : `${group.prompt}  (mean ${fmt(group.mean)}, std ${fmt(group.std)})`), el("td", {}, c.completion), el("td", { class: "num" }, fmt(c.reward)), el("td", { class: "num" }, fmt(c.advantage))));
  }
  for (const r of data.record.samples || []) rows.push(el("tr", {}, el("td", {}, r.prompt), el("td", {}, r.completion), el("td", { class: "num" }, `${fmt(r.score)} (with KL ${fmt(r.reward_with_kl)})`), el("td", { class: "num" }, `${fmt(r.advantage_first)} (first token)`)));  // PPO
  $("#rollouts tbody").replaceChildren(...rows);
}
$("#rollout-step").addEventListener("change", () => state.run && loadRollouts(state.run.id, Number($("#rollout-step").value)));

$("#inspect-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const prompt = $("#inspect-prompt").value;
  if (!prompt || !state.run) return;
  $("#inspect-note").textContent = "computing ...";
  try {
    const data = await api("inspect", { id: state.run.id, prompt, temperature: Number($("#temperature").value), top_k: Number($("#top-k").value), top_p: Number($("#top-p").value) });
    const step = data.steps[0];
    $("#inspect-table tbody").replaceChildren(...step.tokens.map((t) => el("tr", { "data-token-id": t.token_id },
      el("td", { class: "num" }, t.rank), el("td", {}, JSON.stringify(t.token)), el("td", { class: "num" }, t.logit.toFixed(3)), el("td", { class: "num" }, t.p_softmax.toFixed(4)),
      el("td", { class: "num" }, t.p_temperature.toFixed(4)), el("td", { class: "num" }, t.cumulative.toFixed(4)), el("td", {}, t.top_k && t.top_p && t.min_p ? "yes" : "no"), el("td", { class: "num" }, t.p_final.toFixed(4)))));
    $("#inspect-table").hidden = false;
    $("#inspect-note").textContent = `drawn: ${JSON.stringify(step.chosen)} (p ${step.chosen_p.toFixed(4)}); entropy ${step.entropy_bits_softmax.toFixed(2)} bits before the filters, ${step.entropy_bits_final.toFixed(2)} after; kept ${step.kept.final} of ${step.vocab_size}`;
  } catch (err) { $("#inspect-note").textContent = err.message; }
});

async function refreshRun(full) {
  const id = state.run && state.run.id;
  if (!id) return;
  const m = await api(`metrics?id=${encodeURIComponent(id)}&since=${state.next}` + (state.token ? `&token=${encodeURIComponent(state.token)}` : ""));
  if (m.reset) state.rows = [];
  state.rows.push(...m.rows); state.next = m.next; state.token = m.token;
  if (full || m.rows.length || m.reset) drawCharts(m.keys);
  const info = await api(`run?id=${encodeURIComponent(id)}`);
  if (!state.run || state.run.id !== id) return;
  const statusChanged = state.run.status !== info.status;
  state.run = info;
  $("#run-title").textContent = info.id;
  $("#run-status").textContent = info.status;
  $("#run-status").className = `status ${info.status}`;
  $("#stop-btn").hidden = !(info.status === "running" && info.job && info.job.alive);
  $("#resume-btn").hidden = info.status !== "resumable";
  $("#run-facts").textContent = [info.stage && `stage ${info.stage}`, info.method, info.model && `model ${info.model}`, info.dataset && `data ${info.dataset}`,
    `step ${info.step ?? "?"}${info.max_steps > 0 ? " of " + info.max_steps : ""}`, info.seconds != null && `wall ${wall(info.seconds)}`,
    info.checkpoints && info.checkpoints.length && `checkpoints ${info.checkpoints.join(", ")}`].filter(Boolean).join(" · ");
  $("#run-log").textContent = (info.job && info.job.log) || "";
  $("#run-log").hidden = $("#run-log-title").hidden = !(info.job && info.job.log);
  if (!(full || statusChanged)) return;
  $("#recipe").textContent = info.recipe;
  $("#answers tbody").replaceChildren(...info.answers.map((a) => el("tr", {}, el("td", {}, a.prompt), el("td", {}, a.before), el("td", {}, a.after))));
  $("#answers").hidden = !info.answers.length;
  $("#changes tbody").replaceChildren(...info.changes.map((c) => el("tr", {}, el("td", {}, c.metric), el("td", { class: "num" }, fmt(c.before)), el("td", { class: "num" }, fmt(c.after)))));
  $("#changes").hidden = !info.changes.length;
  $("#diagnostics tbody").replaceChildren(...info.diagnostics.map((d) => el("tr", { "data-name": d.name },
    el("td", {}, d.name), el("td", { class: "num" }, fmt(d.value)), el("td", { class: `verdict-${d.verdict}` }, d.verdict), el("td", {}, d.hint || ""))));
  $("#lineage").replaceChildren(...(info.lineage || []).map((n) => el("li", {},
    `${n.kind}${n.stage ? " " + n.stage : ""}: ${n.id}` + (n.inputs.length ? `  ← ${n.inputs.join(", ")}` : ""))));
}

function drawCharts(keys) {
  $("#charts").replaceChildren(...keys.map((k) => chart(k, [{ label: k, points: seriesOf(state.rows, k) }])));
}

$("#stop-btn").addEventListener("click", async () => { try { $("#run-facts").textContent = (await api("stop", { id: state.run.id })).message; } catch (e) { alert(e.message); } });
$("#resume-btn").addEventListener("click", async () => { try { await api("resume", { id: state.run.id }); await refreshRun(true); } catch (e) { alert(e.message); } });

// ---------------------------------------------------------------- chat with the run's model (streamed)

function addMessage(role, text) {
  const span = el("span", { class: "text" }, text);
  const div = el("div", { class: `msg ${role}` }, el("b", {}, role + "> "), span);
  $("#chat-log").append(div);
  return span;
}

$("#chat-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const text = $("#chat-input").value.trim();
  if (!text || !state.run) return;
  $("#chat-input").value = "";
  $("#chat-send").disabled = true;
  addMessage("user", text);
  const messages = [...state.chat, { role: "user", content: text }];
  const reply = addMessage("assistant", "");
  reply.parentNode.classList.add("pending");
  try {
    const resp = await api("chat", { id: state.run.id, messages, temperature: +$("#temperature").value, top_k: +$("#top-k").value,
      top_p: +$("#top-p").value, max_tokens: +$("#max-tokens").value, seed: $("#seed").value === "" ? null : +$("#seed").value });
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "", done = false;
    while (!done) {
      const chunk = await reader.read();
      if (chunk.done) break;
      buffer += decoder.decode(chunk.value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const event = JSON.parse(buffer.slice(0, cut).replace(/^data: /, ""));
        buffer = buffer.slice(cut + 2);
        if (event.delta !== undefined) reply.textContent += event.delta;
        if (event.error) { reply.parentNode.classList.add("error"); reply.textContent = event.error; done = true; }
        if (event.done) { reply.textContent = event.text; state.chat = [...messages, { role: "assistant", content: event.text }]; done = true; }
      }
    }
  } catch (err) {
    reply.parentNode.classList.add("error"); reply.textContent = err.message;
  } finally {
    reply.parentNode.classList.remove("pending");
    reply.parentNode.classList.add("done");
    $("#chat-send").disabled = false;
  }
});
$("#chat-reset").addEventListener("click", () => { state.chat = []; $("#chat-log").replaceChildren(); });

// ---------------------------------------------------------------- compare

async function openCompare(ids) {
  state.compare = await api("compare?" + ids.map((i) => "id=" + encodeURIComponent(i)).join("&"));
  const select = $("#compare-key");
  select.replaceChildren(...state.compare.keys.map((k) => el("option", { value: k }, k)));
  show("compare");
  drawCompare();
}

function drawCompare() {
  const data = state.compare;
  const key = $("#compare-key").value || data.keys[0];
  const lines = data.runs.filter((r) => r.series[key]).map((r) => ({ label: r.id, points: r.series[key] }));
  $("#compare-chart").replaceChildren(chart(key || "(no curves)", lines, 720, 320));
  const names = [...new Set(data.runs.flatMap((r) => Object.keys(r.metrics)))];
  $("#compare-table thead").replaceChildren(el("tr", {}, el("th", {}, "metric"), ...data.runs.map((r) => el("th", {}, r.id))));
  const cell = (v) => (v && typeof v === "object" ? ("before" in v ? `${fmt(v.before)} → ${fmt(v.after)}` : `${fmt(v.value)} (${v.verdict})`) : fmt(v));
  const rows = [["stage", (r) => r.stage], ["status", (r) => r.status], ...names.map((n) => [n, (r) => cell(r.metrics[n])])];
  $("#compare-table tbody").replaceChildren(...rows.map(([n, get]) =>
    el("tr", { "data-metric": n }, el("td", {}, n), ...data.runs.map((r) => el("td", { class: "num" }, get(r) ?? "")))));
}
$("#compare-key").addEventListener("change", drawCompare);

// ---------------------------------------------------------------- launch

async function sendRecipe(path) {
  const out = $("#launch-message");
  out.className = "";
  out.textContent = path === "validate" ? "checking..." : "starting...";
  try {
    const name = $("#run-name").value.trim();
    const data = await api(path, { recipe: $("#recipe-text").value, ...(path === "launch" && name ? { name } : {}) });
    out.textContent = path === "validate" ? data.message : `launched ${data.run} (pid ${data.pid}); it appears in the runs list once its data and model have loaded`;
    if (path === "launch") { await refreshRuns(); }
  } catch (e) {
    out.className = "error";
    out.textContent = e.message;
  }
}
$("#validate-btn").addEventListener("click", () => sendRecipe("validate"));
$("#launch-btn").addEventListener("click", () => sendRecipe("launch"));

// ---------------------------------------------------------------- polling

async function tick() {
  try {
    if (state.view === "runs") await refreshRuns();
    else if (state.view === "run") await refreshRun(false);
  } catch (e) {
    console.warn(e);
  }
  setTimeout(tick, POLL_MS);
}
show("runs");
tick();
