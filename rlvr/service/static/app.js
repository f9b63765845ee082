// rlvr dashboard: polls the JSON API (relative URLs, so it also works behind a path
// prefix) and renders the run list, the status card, charts, samples and control.
// Everything from the API is put in the page with textContent, never as HTML:
// completions are model output.
"use strict";

const POLL_MS = 3000;
const ACTIVE = ["pending", "running", "paused"];
const CHART_DEFS = [
  { title: "reward/mean", keys: ["reward/mean"] },
  { title: "eval/accuracy", keys: ["eval/accuracy"] },
  { title: "loss", keys: ["loss", "eval/loss"] },  // eval/loss: `rlvr sft` runs
  { title: "kl", keys: ["kl"], optional: true },
  { title: "response_length/mean", keys: ["response_length/mean"] },
  { title: "multi_turn/valid_tool_call", keys: ["multi_turn/valid_tool_call", "eval/multi_turn/valid_tool_call"],
    optional: true },
  { title: "multi_turn/turns", keys: ["multi_turn/turns"], optional: true },
  { title: "phase timings (s)", prefix: "timing/" },
];

const ui = {
  run: null,        // selected run name
  detail: null,     // its last status
  rows: [],         // its metrics rows so far
  lastStep: null,   // highest step in rows
  charts: new Map(),
  sampleStep: "latest",
  controlOn: false, // the server has a token (else control answers 403, no need to ask for one)
  askedReadToken: false, // asked once for the token after a read answered 401
  tick: 0,
  busy: false,
};

const $ = (id) => document.getElementById(id);

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

// The token (control, and reads on a server that is not on loopback) is kept for this tab only.
// It can come in the URL fragment, `#token=...` (a fragment never reaches the server or its
// logs): it is stored and removed from the address bar.
const TOKEN_KEY = "rlvr-token";

function takeTokenFromHash() {
  const m = location.hash.match(/(?:^#|&)token=([^&]*)/);
  if (!m) return;
  if (m[1]) sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(m[1]).trim());
  const rest = location.hash.replace(/(^#|&)token=[^&]*/, "$1").replace(/^#&/, "#").replace(/&$/, "");
  history.replaceState(null, "", rest === "#" || rest === "" ? location.pathname + location.search : rest);
}

function askToken(why) {
  const token = prompt(why);
  if (token && token.trim()) sessionStorage.setItem(TOKEN_KEY, token.trim());
  return sessionStorage.getItem(TOKEN_KEY);
}

// A read answered 401: this server wants the token for reads too. A stored one was wrong.
function readsNeedToken(sentToken) {
  if (sentToken) sessionStorage.removeItem(TOKEN_KEY);
  $("enter-token").hidden = false;
  $("control-mode").textContent = "this server needs the token for reads";
  if (!ui.askedReadToken) {
    ui.askedReadToken = true;
    askToken("This server needs its token to show runs (RLVR_TOKEN or service.token_file of the server):");
  }
}

async function api(path, options = {}) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const headers = Object.assign({}, options.headers || {}, token ? { Authorization: `Bearer ${token}` } : {});
  const response = await fetch(path, Object.assign({}, options, { headers }));
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (response.status === 401 && (options.method || "GET") === "GET") readsNeedToken(token);
  return { status: response.status, ok: response.ok, body };
}

function runPath(suffix = "") {
  return `api/v1/runs/${encodeURIComponent(ui.run)}${suffix}`;
}

function age(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 90) return `${seconds.toFixed(0)} s ago`;
  if (seconds < 5400) return `${(seconds / 60).toFixed(0)} min ago`;
  return `${(seconds / 3600).toFixed(1)} h ago`;
}

function when(unix) {
  return unix ? new Date(unix * 1000).toLocaleString() : "–";
}

function badge(state) {
  return el("span", state || "unknown", `badge ${state || "unknown"}`);
}

// ---- run list ----

async function refreshRuns() {
  const { ok, body } = await api("api/v1/runs");
  if (!ok) return;
  $("runs-dir").textContent = body.runs_dir;
  $("enter-token").hidden = !body.reads_need_token;
  ui.controlOn = body.control;
  $("control-mode").textContent = body.control ? "control: on" : "control: off (no token configured)";
  const list = $("run-list");
  list.replaceChildren();
  for (const run of body.runs) {
    const item = el("li");
    item.classList.toggle("selected", run.run === ui.run);
    const left = el("div");
    left.append(el("div", run.run, "name"),
                el("div", `step ${run.step ?? "–"}/${run.total_steps ?? "?"}${run.phase ? " · " + run.phase : ""}`, "sub"));
    item.append(left, badge(run.state));
    item.addEventListener("click", () => selectRun(run.run));
    list.append(item);
  }
  $("no-runs").hidden = body.runs.length > 0;
  if (!ui.run && body.runs.length) {
    const fromHash = decodeURIComponent((location.hash.match(/run=([^&]+)/) || [])[1] || "");
    const pick = body.runs.find((r) => r.run === fromHash) || body.runs.find((r) => ACTIVE.includes(r.state)) || body.runs[0];
    selectRun(pick.run);
  }
}

function selectRun(name) {
  if (ui.run === name) return;
  ui.run = name;
  ui.detail = null;
  ui.rows = [];
  ui.lastStep = null;
  ui.sampleStep = "latest";
  ui.charts.clear();
  $("charts").replaceChildren();
  history.replaceState(null, "", `#run=${encodeURIComponent(name)}`);
  $("pick-run").hidden = true;
  $("run-view").hidden = false;
  for (const item of $("run-list").children) item.classList.toggle("selected", item.querySelector(".name").textContent === name);
  refreshRun().then(() => refreshSamples());
}

// ---- status card ----

function field(list, label, value) {
  const box = el("div");
  box.append(el("dt", label), el("dd", value));
  list.append(box);
}

function fillTable(table, entries, empty) {
  const body = table.tBodies[0];
  body.replaceChildren();
  if (!entries.length) {
    const row = el("tr");
    row.append(el("td", empty, "muted"));
    body.append(row);
  }
  for (const [key, value] of entries) {
    const row = el("tr");
    row.append(el("td", key), el("td", typeof value === "number" ? formatNumber(value) : value, "num"));
    body.append(row);
  }
}

function renderStatus(d) {
  $("run-name").textContent = d.run;
  $("run-state").replaceWith(Object.assign(badge(d.state), { id: "run-state" }));
  const total = d.total_steps || 0;
  $("progress-bar").style.width = total ? `${Math.min(100, 100 * (d.step || 0) / total)}%` : "0";
  const list = $("status-fields");
  list.replaceChildren();
  field(list, "state", d.state === d.reported_state || !d.reported_state ? d.state : `${d.state} (file says ${d.reported_state})`);
  field(list, "phase", d.phase || "–");
  field(list, "step", `${d.step ?? "–"} / ${d.total_steps ?? "?"}`);
  field(list, "heartbeat", age(d.heartbeat_age));
  field(list, "weight version", d.weight_version ?? "–");
  field(list, "started", when(d.started_at));
  if (d.finished_at) field(list, "finished", when(d.finished_at));
  if (d.ray_job_id) field(list, "ray job", d.ray_job_id);
  if (d.pid) field(list, "process", `${d.pid} on ${d.hostname}`);
  if (d.control) field(list, "last control", typeof d.control === "string" ? d.control : JSON.stringify(d.control));
  $("run-error").hidden = !d.error;
  $("run-error").textContent = d.error || "";
  const failures = Object.entries(d.reward_failures || {}).sort();
  fillTable($("failures"), failures, "none");
  fillTable($("timings"), Object.entries(d.last_step_timings || {}).sort(), "no step yet");
  const checkpoints = $("checkpoints");
  checkpoints.replaceChildren(...(d.checkpoints || []).map((c) => el("li", c)));
  if (!(d.checkpoints || []).length) checkpoints.append(el("li", "none yet", "muted"));
  const active = ACTIVE.includes(d.state);
  for (const button of document.querySelectorAll("#control-card button[data-action]")) {
    button.disabled = !active;
    button.title = active ? "" : `the run is ${d.state}`;
  }
}

// ---- metrics and charts ----

async function refreshRun() {
  const run = ui.run;
  const status = await api(runPath());
  if (run !== ui.run) return;
  if (!status.ok) { $("run-error").hidden = false; $("run-error").textContent = `run: HTTP ${status.status}`; return; }
  ui.detail = status.body;
  renderStatus(ui.detail);
  const since = ui.lastStep === null ? "" : `?since=${ui.lastStep}`;
  const metrics = await api(runPath(`/metrics${since}`));
  if (run !== ui.run || !metrics.ok) return;
  // two polls can overlap (selecting a run starts one): keep only rows newer than what we have
  const fresh = metrics.body.metrics.filter((r) => typeof r.step === "number" && (ui.lastStep === null || r.step > ui.lastStep));
  if (fresh.length) {
    ui.rows = ui.rows.concat(fresh);
    ui.lastStep = Math.max(...ui.rows.map((r) => r.step));
  }
  renderCharts();
}

function chartSeries(def) {
  let keys = def.keys;
  if (def.prefix) {
    const found = new Set();
    for (const r of ui.rows) for (const k of Object.keys(r)) if (k.startsWith(def.prefix) && typeof r[k] === "number") found.add(k);
    keys = [...found].sort((a, b) => (a === "timing/step") - (b === "timing/step") || a.localeCompare(b));
  }
  // only steps where this chart has a value (eval/accuracy is logged every few steps)
  const rows = ui.rows.filter((r) => keys.some((k) => typeof r[k] === "number"));
  return {
    steps: rows.map((r) => r.step),
    series: keys.map((k) => ({ name: def.prefix ? k.slice(def.prefix.length) : k, values: rows.map((r) => (typeof r[k] === "number" ? r[k] : null)) })),
  };
}

function renderCharts() {
  for (const def of CHART_DEFS) {
    const { steps, series } = chartSeries(def);
    if (def.optional && !steps.length && !ui.charts.has(def.title)) continue;
    if (!ui.charts.has(def.title)) ui.charts.set(def.title, new LineChart($("charts"), def.title));
    ui.charts.get(def.title).setData(steps, series);
  }
}

// ---- samples ----

function pre(text) {
  const cell = el("td");
  cell.append(el("pre", text ?? ""));
  return cell;
}

// A multi-turn or agent episode's turns after the prompt (assistant turns with their tool calls,
// tool results), one block each with its role; a single-turn sample's completion as it is.
function completionCell(s) {
  if (!Array.isArray(s.messages)) return pre(s.completion);
  const cell = el("td", null, "episode");
  const start = s.messages.findIndex((m) => m && m.role === "assistant");
  for (const m of s.messages.slice(start < 0 ? s.messages.length : start)) {
    const role = String((m && m.role) || "?");
    const turn = el("div", null, `turn turn-${role.replace(/[^a-z]/g, "")}`);
    const calls = Array.isArray(m && m.tool_calls) ? m.tool_calls.map((c) => {
      const f = (c && c.function) || {};
      return `-> ${f.name}(${typeof f.arguments === "string" ? f.arguments : JSON.stringify(f.arguments)})`;
    }) : [];
    const text = [(m && m.content) ?? ""].concat(calls).filter((t) => t !== "").join("\n");
    turn.append(el("span", role + (m.name ? ` (${m.name})` : ""), "role"), el("pre", text));
    cell.append(turn);
  }
  const agent = s.agent && typeof s.agent === "object" ? s.agent : null;  // an agent episode: its calls
  const notes = agent ? [`${agent.calls} calls`, `${agent.segments} sequences`, `${agent.latency_s} s`]
    : [`${s.turns} turns`, `${s.tool_calls} tool calls`].concat(s.truncated ? ["truncated"] : []);
  cell.append(el("div", notes.join(" · "), "muted"));
  return cell;
}

function mapping(obj) {
  const entries = Object.entries(obj || {});
  return entries.length ? entries.map(([k, v]) => `${k}: ${typeof v === "number" ? formatNumber(v) : v}`).join("\n") : "";
}

async function refreshSamples() {
  const run = ui.run;
  const step = ui.sampleStep === "latest" ? "" : `&step=${ui.sampleStep}`;
  const { ok, status, body } = await api(runPath(`/samples?limit=50${step}`));
  if (run !== ui.run) return;
  const select = $("sample-step");
  const tbody = $("samples").tBodies[0];
  tbody.replaceChildren();
  if (!ok) { $("samples-note").textContent = `HTTP ${status}`; return; }
  const options = [["latest", `latest${body.step !== null ? " (" + body.step + ")" : ""}`]]
    .concat([...body.steps].reverse().map((s) => [String(s), String(s)]));
  select.replaceChildren(...options.map(([value, label]) => Object.assign(el("option", label), { value })));
  select.value = ui.sampleStep;
  $("samples-note").textContent = body.steps.length ? `${body.samples.length} shown` : "no samples written yet";
  for (const s of body.samples) {
    const row = el("tr");
    const failures = mapping(s.failures);
    const fail = pre(failures);
    if (failures) fail.className = "fail";
    row.append(pre(s.prompt), completionCell(s), pre(s.answer), el("td", formatNumber(s.reward), "num"),
               pre(mapping(s.scores)), fail, el("td", formatNumber(s.advantage), "num"),
               el("td", s.length ?? "–", "num"), el("td", s.finish_reason ?? "–"));
    tbody.append(row);
  }
}

// ---- control ----

async function control(action) {
  const result = $("control-result");
  if (action === "stop" && !confirm(`Ask run ${ui.run} to stop?`)) return;
  if (!sessionStorage.getItem(TOKEN_KEY) && ui.controlOn
      && !askToken("Control token (RLVR_TOKEN or service.token_file of the server):")) return;
  const { status, body } = await api(runPath(`/${action}`), { method: "POST" });  // api() sends the token
  if (status === 401) sessionStorage.removeItem(TOKEN_KEY);
  const detail = body && (body.detail || (body.accepted ? `accepted ${body.accepted} (${body.id})` : JSON.stringify(body)));
  result.textContent = `${action}: HTTP ${status}${detail ? " – " + detail : ""}`;
  result.className = status === 202 ? "ok" : "bad";
  refreshRun();
}

// ---- wiring ----

async function poll() {
  if (ui.busy) return;
  ui.busy = true;
  try {
    await refreshRuns();
    if (ui.run) {
      await refreshRun();
      if (ui.sampleStep === "latest" && ui.tick % 3 === 0) await refreshSamples();
    }
  } catch (e) {
    $("control-mode").textContent = `cannot reach the server (${e.message}); retrying`;
  } finally {
    ui.busy = false;
    ui.tick += 1;
  }
}

for (const button of document.querySelectorAll("#control-card button[data-action]")) {
  button.addEventListener("click", () => control(button.dataset.action));
}
$("enter-token").addEventListener("click", () => {
  askToken("Token (RLVR_TOKEN or service.token_file of the server):");
  poll();
});
$("forget-token").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  $("control-result").textContent = "token forgotten";
  $("control-result").className = "muted";
});
$("sample-step").addEventListener("change", (e) => { ui.sampleStep = e.target.value; refreshSamples(); });
window.addEventListener("resize", () => ui.charts.forEach((c) => c.draw()));
takeTokenFromHash();
poll();
setInterval(poll, POLL_MS);
