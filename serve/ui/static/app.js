// The edgeray dashboard: plain ES modules over the HTTP API (no build step). Data is always put in the page
// with textContent, never parsed as HTML. The key lives in sessionStorage (this tab only) and travels in the
// X-API-Key header; the server checks every role, the page only hides what the role may not do.
import {barChart, fanChart, fmt, lineChart} from "./charts.js";

const KEY = "edgeray.key";
const SPORTS = ["nba", "nfl", "ncaam", "ncaaf", "mlb"];
const MODEL_TYPES = ["neural", "statistical", "ensemble", "lstm", "mlp", "logistic_l2", "poisson", "bayes_logistic",
                     "linear_regression", "voting_soft", "voting_hard", "stacked", "lstm_weather"];
const FINISHED = new Set(["completed", "failed", "cancelled"]);
const JOB_POLL_MS = 30_000;  // the fallback when a push is missed (the stream is the live path)
const LIVE_POLL_MS = 2_000;

const $ = (sel) => document.querySelector(sel);
const state = {me: null, tab: null, timer: null, streams: new Map(), progress: new Map(), bt: null};

// ------------------------------------------------------------------ HTTP, messages, tables
class ApiError extends Error {}

async function api(path, {method = "GET", body} = {}) {
  const headers = {"X-API-Key": sessionStorage.getItem(KEY) || ""};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {method, headers, body: body === undefined ? undefined : JSON.stringify(body)});
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    const items = (data && Array.isArray(data.detail)) ? data.detail : [{loc: [], msg: response.statusText}];
    throw new ApiError(`${response.status}: ` + items.map((d) => (d.loc && d.loc.length ? d.loc.join(".") + ": " : "") + d.msg).join("; "));
  }
  return data;
}

function say(id, text, info = false) {
  const node = $(id);
  node.textContent = text instanceof Error ? text.message : text;
  node.classList.toggle("info", info);
}

const may = (permission) => Boolean(state.me && state.me.permissions.includes(permission));

function node(tag, props = {}, ...children) {
  const n = Object.assign(document.createElement(tag), props);
  n.append(...children.filter((c) => c !== null && c !== undefined));
  return n;
}

function cellText(v) {
  if (v === null || v === undefined) return "";
  if (typeof v === "number") return fmt(v);
  if (typeof v === "object") return JSON.stringify(v).slice(0, 80);
  return String(v);
}

// One table helper for every list: columns default to the first row's keys; `meets_*` flags are coloured.
function table(container, rows, {columns, sortable = false, onRow, extra} = {}) {
  const target = typeof container === "string" ? $(container) : container;
  if (!rows || !rows.length) return target.replaceChildren(node("p", {className: "hint", textContent: "none"}));
  columns = columns || Object.keys(rows[0]).filter((c) => c !== "params");
  const head = node("tr", {}, ...(extra ? [node("th")] : []), ...columns.map((c) => {
    const th = node("th", {textContent: c});
    if (sortable) {
      th.className = "sortable";
      th.addEventListener("click", () => {
        const dir = target.dataset.sort === c ? -1 : 1;
        target.dataset.sort = dir === 1 ? c : "";
        const sorted = [...rows].sort((a, b) => (a[c] ?? -Infinity) > (b[c] ?? -Infinity) ? dir : -dir);
        table(target, sorted, {columns, sortable, onRow, extra});
      });
    }
    return th;
  }));
  const body = rows.map((row) => {
    const tr = node("tr", {}, ...(extra ? [node("td", {}, ...extra(row))] : []), ...columns.map((c) => {
      const td = node("td", {textContent: cellText(row[c])});
      if (c.startsWith("meets_") && row[c] !== null) td.className = row[c] ? "ok" : "bad";
      return td;
    }));
    if (onRow) { tr.className = "clickable"; tr.addEventListener("click", () => onRow(row)); }
    return tr;
  });
  target.replaceChildren(node("table", {}, node("thead", {}, head), node("tbody", {}, ...body)));
}

function formValues(form) {
  const out = {};
  for (const [k, v] of new FormData(form).entries()) {
    if (v === "") continue;
    const input = form.elements[k];
    out[k] = input && input.type === "number" ? Number(v) : v;
  }
  return out;
}

async function load(target, path, options = {}) {
  try { table(target, await api(path), options); }
  catch (err) { $(target).replaceChildren(node("p", {className: "msg", textContent: err.message})); }
}

// ------------------------------------------------------------------ sign-in and tabs
async function signIn(key) {
  sessionStorage.setItem(KEY, key);
  try {
    state.me = await api("/api/whoami");
  } catch (err) {
    sessionStorage.removeItem(KEY);
    state.me = null;
    say("#signin-msg", err);
    return;
  }
  $("#signin").hidden = true;
  $("#tabs").hidden = $("#identity").hidden = false;
  $("#who").textContent = `${state.me.name} · ${state.me.role}`;
  document.querySelectorAll("[data-needs]").forEach((n) => { n.hidden = !may(n.dataset.needs); });
  show(location.hash.slice(1) || "training");
}

function signOut() {
  sessionStorage.removeItem(KEY);
  location.hash = "";
  location.reload();
}

function show(tab) {
  if (!LOADERS[tab]) tab = "training";
  state.tab = tab;
  history.replaceState(null, "", `#${tab}`);
  document.querySelectorAll(".page").forEach((p) => { p.hidden = p.id !== tab; });
  document.querySelectorAll("nav button").forEach((b) => b.classList.toggle("active", b.dataset.tab === tab));
  clearInterval(state.timer);
  const [loader, every] = LOADERS[tab];
  loader();
  if (every) state.timer = setInterval(loader, every);
}

// ------------------------------------------------------------------ training
function jobProgress(job) {
  const pushed = state.progress.get(job.job_id);
  const p = job.progress || {};
  const epoch = Math.max(pushed?.epoch ?? 0, p.epoch ?? 0);
  const total = pushed?.total_epochs ?? p.total_epochs ?? 0;
  const eta = pushed && pushed.epoch >= (p.epoch ?? 0) ? pushed.eta_s : job.eta_s;
  return {epoch, total, eta, state: pushed?.state ?? job.state};
}

function progressCell(job) {
  const {epoch, total, eta, state: s} = jobProgress(job);
  const done = s === "completed";
  const pct = done ? 100 : total ? Math.round((100 * epoch) / total) : 0;
  return [node("progress", {max: 100, value: pct}),
          node("span", {className: "pct", textContent: ` ${pct}%`}),
          node("span", {className: "hint", textContent: total ? ` epoch ${epoch}/${total}` : ""}),
          node("span", {className: "hint eta", textContent: eta && !FINISHED.has(s) ? ` ETA ${eta.toFixed(0)} s` : ""})];
}

function streamJob(jobId) {
  if (state.streams.has(jobId)) return;
  const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws/training`);
  state.streams.set(jobId, ws);
  ws.addEventListener("open", () => ws.send(JSON.stringify({api_key: sessionStorage.getItem(KEY), job_id: jobId})));
  ws.addEventListener("message", (event) => {
    const msg = JSON.parse(event.data);
    const current = state.progress.get(jobId) || {};
    if (msg.type === "epoch") state.progress.set(jobId, {...current, ...msg, state: "running"});
    if (msg.type === "end") state.progress.set(jobId, {...current, state: msg.state, eta_s: 0});
    const row = document.querySelector(`tr[data-job="${CSS.escape(jobId)}"]`);
    if (row && state.jobs) {
      const job = state.jobs.find((j) => j.job_id === jobId);
      row.querySelector(".progress-cell").replaceChildren(...progressCell(job));
      row.querySelector(".state-cell").textContent = jobProgress(job).state;
    }
    if (msg.type === "end") loadJobs();
  });
  ws.addEventListener("close", () => state.streams.delete(jobId));
}

async function loadJobs() {
  const user = $("#jobs-user").value.trim();
  try {
    state.jobs = await api("/api/training/user-jobs" + (user ? `?user=${encodeURIComponent(user)}` : ""));
  } catch (err) {
    return $("#jobs").replaceChildren(node("p", {className: "msg", textContent: err.message}));
  }
  const order = ["running", "queued", "completed", "failed", "cancelled"];
  const jobs = [...state.jobs].sort((a, b) => order.indexOf(a.state) - order.indexOf(b.state) || b.created_at - a.created_at);
  const rows = jobs.map((job) => {
    const params = job.params || {};
    const cancel = may("trade") && !FINISHED.has(job.state)
      ? node("button", {textContent: "Cancel", className: "cancel", onclick: async () => {
          try { await api(`/api/training/job/${job.job_id}/cancel`, {method: "POST"}); loadJobs(); }
          catch (err) { say("#train-msg", err); }
        }}) : null;
    const tr = node("tr", {}, node("td", {textContent: job.job_id}), node("td", {textContent: job.user}),
      node("td", {textContent: [job.task, params.sport, params.name].filter(Boolean).join(" / ")}),
      node("td", {className: "state-cell", textContent: jobProgress(job).state}),
      node("td", {className: "progress-cell"}, ...progressCell(job)),
      node("td", {textContent: job.error || (job.result && job.result.model_id !== undefined ? `model ${job.result.model_id}` : "")}),
      node("td", {}, cancel));
    tr.dataset.job = job.job_id;
    tr.dataset.state = job.state;
    if (!FINISHED.has(job.state)) streamJob(job.job_id);
    return tr;
  });
  if (!rows.length) return $("#jobs").replaceChildren(node("p", {className: "hint", textContent: "no jobs yet"}));
  const head = node("tr", {}, ...["job", "user", "what", "state", "progress", "result", ""].map((t) => node("th", {textContent: t})));
  $("#jobs").replaceChildren(node("table", {}, node("thead", {}, head), node("tbody", {}, ...rows)));
}

async function loadGpu() {
  try {
    const stats = await api("/api/training/gpu-stats");
    if (!stats.available) return $("#gpu").replaceChildren(node("p", {className: "hint", textContent: `No GPU statistics: ${stats.reason}`}));
    table("#gpu", stats.devices, {columns: ["index", "name", "memory_used_mib", "memory_total_mib", "gpu_util_percent", "temperature_c", "jobs"]});
  } catch (err) { say("#train-msg", err); }
}

async function submitTraining(event) {
  event.preventDefault();
  say("#train-msg", "submitting…", true);  // the first submission may wait seconds for the training queue to start
  try {
    const job = await api("/api/training/submit", {method: "POST", body: formValues(event.target)});
    say("#train-msg", `queued ${job.job_id}` + (job.ignored_params ? ` (this model ignores ${job.ignored_params.join(", ")})` : ""), true);
    await loadJobs();
  } catch (err) { say("#train-msg", err); }
}

// ------------------------------------------------------------------ models and performance
async function loadMatrix() {
  const sport = $("#matrix-sport").value;
  try {
    const body = await api("/api/performance/matrix" + (sport ? `?sport=${sport}` : ""));
    table("#matrix", body.matrix, {sortable: true, extra: (row) => [node("input", {type: "checkbox", className: "pick", value: row.model_id})]});
  } catch (err) { $("#matrix").replaceChildren(node("p", {className: "msg", textContent: err.message})); }
}

async function compareModels() {
  const ids = [...document.querySelectorAll("#matrix .pick:checked")].map((c) => Number(c.value));
  if (!ids.length) return $("#compare").replaceChildren(node("p", {className: "hint", textContent: "tick models in the matrix first"}));
  try { table("#compare", await api("/api/performance/compare", {method: "POST", body: {model_ids: ids}})); }
  catch (err) { $("#compare").replaceChildren(node("p", {className: "msg", textContent: err.message})); }
}

async function showFeatures(event) {
  event.preventDefault();
  const {sport, model_type: type} = formValues(event.target);
  try {
    const body = await api(`/api/models/sport-features/${sport}/${type}`);
    const rows = Object.entries(body.feature_groups).map(([group, cols]) => ({group, count: cols.length, columns: cols.slice(0, 6).join(", ") + (cols.length > 6 ? ", ..." : "")}));
    table("#features", rows);
  } catch (err) { $("#features").replaceChildren(node("p", {className: "msg", textContent: err.message})); }
}

function loadModels() {
  loadMatrix();
  load("#leaderboard", `/api/performance/leaderboard/${$("#board-sport").value}`, {columns: ["model_id", "name", "family", "log_loss", "accuracy", "roi"]});
  load("#model-types", "/api/performance/model-types");
  load("#parameters", `/api/performance/parameters?family=${$("#param-family").value}`);
  load("#trending", "/api/performance/trending");
}

// ------------------------------------------------------------------ backtests
function backtestBody(form) {
  const body = formValues(form);
  delete body.action;
  if (/^\d+$/.test(body.model_id)) body.model_id = Number(body.model_id);
  return body;
}

function drawEquity(target, drawdownTarget, equity) {
  lineChart($(target), equity.date, equity.bankroll);
  if (drawdownTarget) {
    let peak = -Infinity;
    lineChart($(drawdownTarget), equity.date, equity.bankroll.map((v) => { peak = Math.max(peak, v); return v / peak - 1; }), {area: true, cls: "dd"});
  }
}

function metricRows(metrics) {
  return Object.entries(metrics).filter(([, v]) => typeof v !== "object" || v === null).map(([metric, value]) => ({metric, value}));
}

async function runBacktest(offset = 0) {
  const result = await api("/api/backtest/run", {method: "POST", body: {...state.bt, bets_offset: offset, bets_limit: 20}});
  drawEquity("#equity-chart", "#drawdown-chart", result.equity);
  table("#bt-metrics", metricRows(result.metrics));
  const buckets = Object.entries(result.metrics.by_odds_range || {}).filter(([, r]) => r.bets > 0);
  barChart($("#odds-chart"), buckets.map(([label, r]) => `${label} (${r.bets})`), buckets.map(([, r]) => r.roi ?? 0));
  table("#bets", result.bets.items);
  state.betsPage = result.bets;
  $("#bets-page").textContent = `${result.bets.offset + 1}-${Math.min(result.bets.offset + result.bets.limit, result.bets.total)} of ${result.bets.total}`;
  say("#backtest-msg", `${result.metrics.total_bets} bets`, true);
}

async function submitBacktest(event) {
  event.preventDefault();
  const action = event.submitter ? event.submitter.value : "run";
  state.bt = backtestBody(event.target);
  say("#backtest-msg", "running...", true);
  try {
    if (action === "run") await runBacktest(0);
    if (action === "compare") {
      const result = await api("/api/backtest/compare-strategies", {method: "POST", body: state.bt});
      table("#strategies", Object.entries(result).map(([strategy, m]) => ({strategy, total_bets: m.total_bets, roi: m.roi,
        profit: m.profit, max_drawdown: m.max_drawdown, sharpe: m.sharpe, win_rate: m.win_rate})));
      say("#backtest-msg", "strategies compared", true);
    }
    if (action === "montecarlo") {
      const result = await api("/api/backtest/monte-carlo", {method: "POST", body: {...state.bt, n_paths: 500}});
      fanChart($("#fan-chart"), result.fan);
      table("#mc-summary", metricRows(result));
      // Past its memory bound the server draws the fan from the first paths only: say so.
      const fanNote = result.fan.paths < result.paths ? ` (fan from the first ${result.fan.paths})` : "";
      say("#backtest-msg", `${result.paths} paths${fanNote}`, true);
    }
  } catch (err) { say("#backtest-msg", err); }
}

async function pageBets(step) {
  if (!state.bt || !state.betsPage) return;
  const offset = Math.max(0, state.betsPage.offset + step * state.betsPage.limit);
  if (offset >= state.betsPage.total) return;
  try { await runBacktest(offset); } catch (err) { say("#backtest-msg", err); }
}

async function submitWalkForward(event) {
  event.preventDefault();
  const body = formValues(event.target);
  if (body.seasons) body.seasons = body.seasons.split(",").map((s) => Number(s.trim()));
  say("#wf-msg", "running...", true);
  try {
    const result = await api("/api/backtest/walk-forward", {method: "POST", body});
    table("#wf-folds", result.folds);
    lineChart($("#wf-chart"), result.equity.date, result.equity.bankroll);
    say("#wf-msg", `${result.folds.length} folds, ${result.metrics.total_bets} bets`, true);
  } catch (err) { say("#wf-msg", err); }
}

// ------------------------------------------------------------------ live loop
function shortTime(ts) { return ts ? ts.replace("T", " ").slice(0, 19) : ""; }

async function showDecision(row) {
  $("#decision-detail").hidden = false;
  $("#detail-id").textContent = row.decision_id;
  const body = await api(`/api/decisions/${row.decision_id}`);
  const top = body.decision?.explanation?.top_features || [];
  if (top.length) barChart($("#shap-chart"), top.map((f) => f.feature), top.map((f) => f.shap));
  else $("#shap-chart").replaceChildren(node("p", {className: "hint", textContent: "no SHAP explanation (no order, or the confidence model is not fitted yet)"}));
  table("#trail", body.audit.map((r) => ({stage: r.stage, recorded_at: shortTime(r.recorded_at), payload: r.payload})));
}

async function loadDecisions() {
  const body = await api("/api/decisions?limit=30");
  const rows = body.decisions.filter((d) => d.decision).map(({decision: d}) => ({
    decision_id: d.decision_id, time: shortTime(d.event_ts), symbol: d.symbol, regime: d.regime, arm: d.strategy,
    action: d.action, size: d.position_size, quantity: d.quantity, confidence: d.confidence, risk: d.risk_verdict,
    veto: d.veto_verdict, status: d.status}));
  table("#decisions", rows, {onRow: showDecision});
}

async function review(id, action) {
  try {
    await api(`/api/veto/${id}/${action}`, {method: "POST", body: {note: "from the dashboard"}});
    say("#veto-msg", `${action}d ${id}`, true);
    loadLive();
  } catch (err) { say("#veto-msg", err); }
}

async function loadVeto() {
  const pending = await api("/api/veto/pending");
  table("#veto", pending.map((p) => ({decision_id: p.decision_id, symbol: p.order.symbol, quantity: p.order.quantity,
    rule: p.rule, seconds_left: Math.max(0, (Date.parse(p.deadline) - Date.now()) / 1000).toFixed(0),
    then: p.expired ? "expired" : "default applies"})),
  {extra: (row) => may("trade") ? [node("button", {textContent: "Approve", className: "approve", onclick: () => review(row.decision_id, "approve")}),
                                   node("button", {textContent: "Reject", className: "reject", onclick: () => review(row.decision_id, "reject")})] : []});
}

async function loadRisk() {
  const risk = await api("/api/risk/status");
  $("#risk-state").textContent = risk.killed ? `HALTED: ${risk.kill_reason}` : "trading";
  $("#risk-state").classList.toggle("halted", risk.killed);
  const limits = risk.limits || {};
  const rows = Object.entries(risk.exposure_by_symbol).map(([symbol, exposure]) => ({symbol, exposure, position: risk.positions[symbol]}));
  table("#risk", [{equity: risk.equity, drawdown: risk.drawdown, daily_pnl: risk.daily_pnl, gross: risk.gross}]);
  $("#risk").append(node("h4", {textContent: "Exposure by symbol"}), node("div", {id: "exposures"}), node("h4", {textContent: "Limits"}), node("div", {id: "limits"}));
  table("#exposures", rows);
  table("#limits", Object.entries(limits).map(([limit, value]) => ({limit, value})));
}

async function loadArms() {
  const arms = await api("/api/meta/arms");
  table("#arms", arms, {extra: (row) => may("admin") ? [node("button", {textContent: row.enabled === false ? "Enable" : "Disable",
    onclick: async () => { try { await api(`/api/meta/arms/${row.arm}/${row.enabled === false ? "enable" : "disable"}`, {method: "POST"}); loadArms(); } catch (err) { say("#risk-msg", err); } }})] : []});
}

async function loadPolicy() {
  try {
    const p = await api("/api/policy");
    table("#policy", [{version: p.version, algo: p.algo, shadow: p.shadow_version, rows_served: p.rows_served, alerts: p.alerts_total}]);
    $("#policy").append(node("h4", {textContent: "Drift alerts"}), node("div", {id: "alerts"}));
    table("#alerts", p.alerts);
  } catch (err) { $("#policy").replaceChildren(node("p", {className: "hint", textContent: err.message})); }
}

async function loadPipeline() {
  const status = await api("/api/pipeline/status");
  const {ingestion, decisions} = status;
  table("#pipeline", [{received: ingestion.received, accepted: ingestion.accepted, rejected: ingestion.rejected,
                       duplicates: ingestion.duplicates, decisions: decisions?.decisions, orders: decisions?.orders}]);
  table("#shadows", (decisions?.shadows || []).map((s) => ({shadow: s.name, equity: s.equity, delta_pnl_vs_live: s.delta_pnl_vs_live})));
  const data = await api("/api/data/pipeline/status");
  $("#data-pipeline").replaceChildren(node("h4", {textContent: `Sports data pipeline: ${data.state}`}), node("div", {id: "quality"}));
  const quality = data.report?.scores;
  if (quality) table("#quality", Object.entries(quality).map(([check, score]) => ({check, score})));
  const letters = await api("/api/deadletters?limit=10");
  table("#deadletters", letters.items.map((l) => ({reason: l.reason, field: l.field, value: l.value, raw: l.raw})));
}

async function loadEquity() {
  const curve = await api("/api/equity");
  lineChart($("#live-equity"), curve.ts.map(shortTime), curve.equity);
}

async function loadLive() {
  const parts = [loadDecisions, loadVeto, loadRisk, loadEquity, loadArms, loadPolicy, loadPipeline];
  const results = await Promise.allSettled(parts.map((f) => f()));
  const failed = results.find((r) => r.status === "rejected");
  if (failed) say("#risk-msg", failed.reason);
}

async function kill(event) {
  event.preventDefault();
  try { await api("/api/risk/kill-switch", {method: "POST", body: formValues(event.target)}); say("#risk-msg", "kill switch on", true); loadLive(); }
  catch (err) { say("#risk-msg", err); }
}

async function resume() {
  try { await api("/api/risk/resume", {method: "POST"}); say("#risk-msg", "trading resumed", true); loadLive(); }
  catch (err) { say("#risk-msg", err); }
}

// ------------------------------------------------------------------ wiring
const LOADERS = {
  training: [() => { loadJobs(); loadGpu(); }, JOB_POLL_MS],
  models: [loadModels, 0],
  backtests: [() => {}, 0],
  live: [loadLive, LIVE_POLL_MS],
};

function fillSelects() {
  const options = (values, any) => [...(any ? [node("option", {value: "", textContent: "all"})] : []), ...values.map((v) => node("option", {value: v, textContent: v}))];
  document.querySelectorAll("select.sports").forEach((s) => s.replaceChildren(...options(SPORTS, s.dataset.any)));
  document.querySelectorAll("select.model-types").forEach((s) => s.replaceChildren(...options(MODEL_TYPES)));
}

fillSelects();
$("#signin-form").addEventListener("submit", (e) => { e.preventDefault(); signIn($("#api-key").value.trim()); });
$("#sign-out").addEventListener("click", signOut);
document.querySelectorAll("nav button").forEach((b) => b.addEventListener("click", () => show(b.dataset.tab)));
$("#train-form").addEventListener("submit", submitTraining);
$("#jobs-refresh").addEventListener("click", loadJobs);
$("#create-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  try { const job = await api("/api/models/create-sport-model", {method: "POST", body: formValues(event.target)}); say("#create-msg", `training job ${job.job_id} queued`, true); }
  catch (err) { say("#create-msg", err); }
});
$("#features-form").addEventListener("submit", showFeatures);
$("#matrix-refresh").addEventListener("click", loadMatrix);
$("#matrix-sport").addEventListener("change", loadMatrix);
$("#compare-btn").addEventListener("click", compareModels);
$("#board-sport").addEventListener("change", loadModels);
$("#param-family").addEventListener("change", () => load("#parameters", `/api/performance/parameters?family=${$("#param-family").value}`));
$("#backtest-form").addEventListener("submit", submitBacktest);
$("#bets-prev").addEventListener("click", () => pageBets(-1));
$("#bets-next").addEventListener("click", () => pageBets(1));
$("#wf-form").addEventListener("submit", submitWalkForward);
$("#kill-form").addEventListener("submit", kill);
$("#resume").addEventListener("click", resume);
if (sessionStorage.getItem(KEY)) signIn(sessionStorage.getItem(KEY));
