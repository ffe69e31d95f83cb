// rerankd console: plain JS over the HTTP API, the key kept in localStorage (see routers/ui.py).
"use strict";

const KEY = "rerankd.apiKey";
const state = { page: null, timer: null, jobsCursor: null, selectedJob: null, samples: [], openapi: null, models: null };

// ---------------------------------------------------------------- helpers

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

const $ = (sel) => document.querySelector(sel);
const fmtTime = (t) => (t ? new Date(t * 1000).toLocaleString() : "");
// History lines start with the event's epoch seconds ("1733400000.12 queued ..."): show a local time.
const fmtHistory = (line) => {
  const m = /^(\d+(?:\.\d+)?)\s+(.*)$/.exec(String(line));
  return m ? `${new Date(Number(m[1]) * 1000).toLocaleTimeString([], { hour12: false })}  ${m[2]}` : String(line);
};
const fmtSecs = (s) => (s === null || s === undefined ? "" : s < 1 ? `${Math.round(s * 1000)} ms` : `${s.toFixed(2)} s`);
const badge = (status) => el("span", { class: `status ${status}`, text: status });

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(path, options = {}) {
  const key = localStorage.getItem(KEY);
  const headers = Object.assign({}, options.headers || {});
  if (key) headers.Authorization = `Bearer ${key}`;
  const resp = await fetch(path, Object.assign({}, options, { headers }));
  if (!resp.ok) {
    let message = `${resp.status} ${resp.statusText}`;
    try { message = (await resp.json()).message || message; } catch (e) { /* not JSON */ }
    if (resp.status === 401) { showKeyPage("The API key was refused: enter a valid one."); }
    throw new ApiError(resp.status, message);
  }
  const type = resp.headers.get("content-type") || "";
  return type.includes("application/json") ? resp.json() : resp.blob();
}

function showError(node, err) {
  node.hidden = !err;
  node.textContent = err ? String(err.message || err) : "";
}

// ---------------------------------------------------------------- pages and key

const PAGES = { jobs: showJobs, queues: showQueues, playground: showPlayground, batches: showBatches };

function route() {
  clearInterval(state.timer);
  state.timer = null;
  if (!localStorage.getItem(KEY)) { showKeyPage(""); return; }
  const page = (location.hash || "#jobs").slice(1);
  state.page = PAGES[page] ? page : "jobs";
  for (const s of document.querySelectorAll(".page")) s.hidden = s.id !== `${state.page}-page`;
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.page === state.page);
  PAGES[state.page]().catch(reportFatal);
}

function reportFatal(err) {
  if (err instanceof ApiError && err.status === 401) return;
  const page = $(`#${state.page}-page`);
  let box = page.querySelector(".page-error");
  if (!box) { box = el("p", { class: "error page-error" }); page.prepend(box); }
  box.textContent = String(err.message || err);
}

function showKeyPage(message) {
  clearInterval(state.timer);
  for (const s of document.querySelectorAll(".page")) s.hidden = s.id !== "key-page";
  showError($("#key-error"), message);
  $("#api-key").value = "";
  $("#api-key").focus();
}

async function saveKey(ev) {
  ev.preventDefault();
  const key = $("#api-key").value.trim();
  if (!key) { showError($("#key-error"), "Enter a key."); return; }
  localStorage.setItem(KEY, key);
  try {
    state.models = null;
    await loadModels();
  } catch (err) {
    localStorage.removeItem(KEY);
    showError($("#key-error"), err.status === 401 ? "This key was refused." : err);
    return;
  }
  showError($("#key-error"), "");
  $("#whoami").textContent = "key set";
  if (!location.hash || location.hash === "#key") location.hash = "#jobs"; else route();
}

async function loadModels() {
  if (!state.models) state.models = (await api("/v1/models")).data;
  return state.models;
}

async function loadOpenapi() {
  if (!state.openapi) state.openapi = await api("/openapi.json");
  return state.openapi;
}

function fillSelect(select, values, keepFirst) {
  const current = select.value;
  while (select.options.length > (keepFirst ? 1 : 0)) select.remove(keepFirst ? 1 : 0);
  for (const v of values) select.append(el("option", { value: v, text: v }));
  if ([...select.options].some((o) => o.value === current)) select.value = current;
}

async function strategies() {
  const doc = await loadOpenapi();
  const mapping = doc.components.schemas.JobCreate.properties.strategy.discriminator.mapping;
  return Object.fromEntries(Object.entries(mapping).map(([name, ref]) => [name, doc.components.schemas[ref.split("/").pop()]]));
}

// ---------------------------------------------------------------- jobs

async function showJobs() {
  const [models, strats] = await Promise.all([loadModels(), strategies()]);
  const form = $("#job-filters");
  fillSelect(form.model, [...new Set(models.map((m) => m.model))], true);
  fillSelect(form.strategy, Object.keys(strats), true);
  await refreshJobs(false);
  state.timer = setInterval(() => {
    if (form.live.checked) refreshJobs(false).catch(reportFatal);
  }, 2000);
}

function jobQuery(cursor) {
  const form = $("#job-filters");
  const q = new URLSearchParams({ limit: "25" });
  for (const name of ["status", "strategy", "model"]) if (form[name].value) q.set(name, form[name].value);
  if (form.since.value) q.set("created_after", String(Date.now() / 1000 - Number(form.since.value)));
  if (cursor) q.set("cursor", cursor);
  return q;
}

async function refreshJobs(append) {
  const page = await api(`/v1/jobs?${jobQuery(append ? state.jobsCursor : null)}`);
  const body = $("#jobs-table tbody");
  if (!append) body.replaceChildren();
  for (const job of page.data) {
    const took = job.finished_at && job.started_at ? job.finished_at - job.started_at : null;
    const row = el("tr", { class: "clickable", "data-job": job.id, onclick: () => openJob(job.id) },
      el("td", { class: "mono", text: job.id }), el("td", {}, badge(job.status)), el("td", { text: job.model }),
      el("td", { text: job.strategy }), el("td", { text: job.documents ?? "" }), el("td", { text: fmtTime(job.created_at) }),
      el("td", { text: fmtSecs(took) }), el("td", { text: job.attempts }), el("td", { text: job.warnings || "" }));
    if (job.id === state.selectedJob) row.classList.add("selected");
    body.append(row);
  }
  state.jobsCursor = page.next_cursor;
  $("#jobs-more").hidden = !page.has_more;
  $("#jobs-empty").hidden = body.children.length > 0;
  if (state.selectedJob && !append) await openJob(state.selectedJob, true);
}

async function openJob(id, quiet) {
  state.selectedJob = id;
  for (const r of document.querySelectorAll("#jobs-table tbody tr")) r.classList.toggle("selected", r.dataset.job === id);
  const job = await api(`/v1/jobs/${encodeURIComponent(id)}?include=history,request`);
  const box = $("#job-detail");
  if (quiet && box.dataset.job === id && box.dataset.status === job.status) return;
  box.dataset.job = id;
  box.dataset.status = job.status;
  box.replaceChildren(renderJob(job));
  box.hidden = false;
}

function renderJob(job) {
  const texts = {};
  for (const c of (job.request && job.request.candidates) || []) texts[c.docid] = c.text;
  const result = job.result;
  const parts = [el("h2", {}, "Job ", el("span", { class: "mono", text: job.id }), " ", badge(job.status))];
  parts.push(el("dl", { class: "kv" },
    el("dt", { text: "Model" }), el("dd", { text: job.model }),
    el("dt", { text: "Strategy" }), el("dd", { text: job.strategy }),
    el("dt", { text: "Query" }), el("dd", { text: (job.request && job.request.query.text) || "" }),
    el("dt", { text: "Attempts" }), el("dd", { text: String(job.attempts) }),
    el("dt", { text: "Worker" }), el("dd", { class: "mono", text: job.worker || "" }),
    el("dt", { text: "Created" }), el("dd", { text: fmtTime(job.created_at) }),
    el("dt", { text: "Started" }), el("dd", { text: fmtTime(job.started_at) }),
    el("dt", { text: "Finished" }), el("dd", { text: fmtTime(job.finished_at) })));
  if (job.error) parts.push(el("p", { class: "error" }, `${job.error.code}: ${job.error.message}`));
  if (result) {
    parts.push(el("h2", { text: "Ranking" }), renderRanking(result, texts));
    parts.push(el("h2", { text: "Warnings" }),
      result.warnings.length ? el("ul", { class: "plain warnings" }, result.warnings.map((w) => el("li", { text: w })))
        : el("p", { class: "muted", text: "none" }));
    parts.push(el("h2", { text: "Timings" }), renderTimings(result.timings, result.usage));
  }
  parts.push(el("h2", { text: "History" }),
    el("ul", { class: "plain history mono" }, (job.history || []).map((h) => el("li", { text: fmtHistory(h), title: String(h) }))));
  return el("div", {}, parts);
}

// score: the strategy's own (its scale depends on model and strategy); relevance: P(relevant) from the
// calibration the worker loaded, or a dash when none applies (answers then use the rank-derived map)
function renderRanking(result, texts) {
  const ranking = result.ranking;
  const scores = ranking.map((d) => d.score);
  const lo = Math.min(...scores), hi = Math.max(...scores);
  const note = result.calibration
    ? el("p", { class: "muted relevance-note" }, "relevance = calibrated P(relevant), calibration ", el("span", { class: "mono", text: result.calibration }))
    : el("p", { class: "muted relevance-note", text: "relevance: no calibration for this model, strategy and settings (answers use the rank map 1 - (rank-1)/n)" });
  const list = el("ol", { class: "ranking" }, ranking.map((d) => {
    const frac = hi > lo ? (d.score - lo) / (hi - lo) : 1;
    const bar = el("span");
    bar.style.width = `${Math.max(2, Math.round(frac * 100))}%`;
    const calibrated = d.relevance !== null && d.relevance !== undefined;
    return el("li", {},
      el("span", { class: "mono", text: `#${d.rank}` }),
      el("span", { class: "mono", title: `first stage #${d.first_stage_rank}`, text: `${d.docid} (was #${d.first_stage_rank})` }),
      el("span", { class: "mono score", title: "the strategy's score", text: Number(d.score).toFixed(3) }),
      el("span", { class: "mono relevance", title: calibrated ? "calibrated P(relevant)" : "no calibration", text: calibrated ? `P ${Number(d.relevance).toFixed(3)}` : "P –" }),
      el("div", { class: "bar" }, bar),
      texts[d.docid] !== undefined ? el("span", { class: "text", text: texts[d.docid] }) : null);
  }));
  return el("div", {}, note, list);
}

function renderTimings(timings, usage) {
  const dl = el("dl", { class: "kv timings" });
  for (const [k, v] of Object.entries(timings || {})) dl.append(el("dt", { text: k }), el("dd", { text: fmtSecs(v) }));
  if (usage) {
    dl.append(el("dt", { text: "LLM calls" }), el("dd", { text: String(usage.llm_calls) }));
    dl.append(el("dt", { text: "Tokens" }), el("dd", { text: `${usage.prompt_tokens} in, ${usage.completion_tokens} out` }));
  }
  return dl;
}

// ---------------------------------------------------------------- queues and workers

async function showQueues() {
  state.samples = [];
  await refreshQueues();
  state.timer = setInterval(() => refreshQueues().catch(reportFatal), 2000);
}

async function refreshQueues() {
  const data = await api("/v1/queues");
  $("#queues-table tbody").replaceChildren(...data.queues.map((q) => el("tr", {},
    el("td", { class: "mono", text: q.model }), el("td", { text: q.depth.interactive }), el("td", { text: q.depth.low }),
    el("td", { text: q.depth.batch }), el("td", { text: q.queued }), el("td", { text: q.running }),
    el("td", { text: q.workers }))));
  $("#workers-table tbody").replaceChildren(...data.workers.map((w) => el("tr", {},
    el("td", { class: "mono", text: w.id }), el("td", { class: "mono", text: w.model }), el("td", { text: w.engine }),
    el("td", { text: w.strategies.join(", ") }),
    el("td", { text: `${w.running} / ${w.concurrency}` }), el("td", { text: w.done }),
    el("td", { text: w.heartbeat_age_s === null ? "" : `${w.heartbeat_age_s.toFixed(1)} s ago` }),
    el("td", { text: w.up_s === null ? "" : fmtSecs(w.up_s) }))));
  $("#workers-empty").hidden = data.workers.length > 0;
  let total = 0;
  for (const byStatus of Object.values(data.finished)) for (const n of Object.values(byStatus)) total += n;
  state.samples.push([data.time, total]);
  const horizon = data.time - 600;
  while (state.samples.length > 2 && state.samples[0][0] < horizon) state.samples.shift();
  drawThroughput(data.throughput);
}

function drawThroughput(minutes) {
  // bars: jobs finished in each of the last minutes (server counts); the number: the rate between
  // the first and last samples taken while this page is open (every 2 s, up to 10 minutes)
  const canvas = $("#throughput");
  const ctx = canvas.getContext("2d");
  const s = state.samples;
  const windowed = s.length > 1 ? (s[s.length - 1][1] - s[0][1]) * 60 / Math.max(1e-9, s[s.length - 1][0] - s[0][0]) : 0;
  $("#throughput-now").textContent = `${windowed.toFixed(1)} jobs/min`;
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const top = Math.max(1, ...minutes.map((m) => m.finished));
  const w = canvas.width / minutes.length, base = canvas.height - 16;
  ctx.font = "11px sans-serif";
  minutes.forEach((m, i) => {
    const h = (m.finished / top) * (base - 16);
    ctx.fillStyle = i === minutes.length - 1 ? "#93c5fd" : "#2563eb";  // the current minute is partial
    ctx.fillRect(i * w + 4, base - h, w - 8, h);
    ctx.fillStyle = "#374151";
    ctx.fillText(String(m.finished), i * w + 6, base - h - 3);
    ctx.fillStyle = "#6b7280";
    ctx.fillText(new Date(m.minute * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }), i * w + 6, canvas.height - 3);
  });
}

// ---------------------------------------------------------------- playground

async function showPlayground() {
  const [models, strats] = await Promise.all([loadModels(), strategies()]);
  const modelSel = $("#play-model"), stratSel = $("#play-strategy");
  if (!modelSel.options.length) {
    fillSelect(modelSel, models.map((m) => m.id), false);
    fillSelect(stratSel, Object.keys(strats), false);
    stratSel.addEventListener("change", () => renderSettings(strats[stratSel.value]));
    modelSel.addEventListener("change", () => {
      const m = models.find((x) => x.id === modelSel.value);
      if (m && strats[m.strategy.name]) { stratSel.value = m.strategy.name; renderSettings(strats[stratSel.value], m.strategy); }
    });
    modelSel.dispatchEvent(new Event("change"));
  }
}

function renderSettings(schema, values) {
  const box = $("#play-settings");
  box.replaceChildren(el("legend", { text: `Strategy settings (${schema.title})` }));
  for (const [name, prop] of Object.entries(schema.properties)) {
    if (name === "name") continue;
    const value = values && values[name] !== undefined ? values[name] : prop.default;
    const type = prop.type || (prop.anyOf || []).map((p) => p.type).find((t) => t !== "null");
    let input;
    if (prop.enum) {
      input = el("select", { name }, prop.enum.map((v) => el("option", { value: v, text: v })));
      input.value = value;
    } else if (type === "boolean") {
      input = el("input", { type: "checkbox", name, checked: !!value });
    } else {
      input = el("input", { name, type: type === "integer" || type === "number" ? "number" : "text",
        step: type === "number" ? "any" : null, value: value === null || value === undefined ? "" : value,
        placeholder: value === null || value === undefined ? "unset" : null, size: 8 });
    }
    input.dataset.kind = type || "string";
    box.append(el("label", { title: prop.description || "" }, name, input));
  }
}

function settingsOf() {
  const out = { name: $("#play-strategy").value };
  for (const input of $("#play-settings").querySelectorAll("input, select")) {
    const kind = input.dataset.kind;
    if (input.type === "checkbox") out[input.name] = input.checked;
    else if (input.value === "") continue;
    else if (kind === "integer" || kind === "number") out[input.name] = Number(input.value);
    else out[input.name] = input.value;
  }
  return out;
}

async function runPlayground(ev) {
  ev.preventDefault();
  const passages = $("#play-passages").value.split("\n").map((p) => p.trim()).filter(Boolean);
  const body = {
    model: $("#play-model").value,
    strategy: settingsOf(),
    query: { text: $("#play-query").value },
    candidates: passages.map((text, i) => ({ docid: `p${i + 1}`, text })),
  };
  const button = $("#play-run");
  button.disabled = true;
  showError($("#play-error"), "");
  const t0 = performance.now();
  try {
    let job = await api("/v1/jobs", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    while (["queued", "running"].includes(job.status)) {
      await new Promise((r) => setTimeout(r, 200));
      job = await api(`/v1/jobs/${job.id}?include=request`);
    }
    const wall = (performance.now() - t0) / 1000;
    const box = $("#play-result");
    const texts = Object.fromEntries(body.candidates.map((c) => [c.docid, c.text]));
    const parts = [el("h2", {}, "Result ", badge(job.status), " ", el("span", { class: "muted", id: "play-time", text: `${wall.toFixed(2)} s end to end` }))];
    if (job.error) parts.push(el("p", { class: "error", text: `${job.error.code}: ${job.error.message}` }));
    if (job.result) {
      parts.push(renderRanking(job.result, texts));
      parts.push(el("h2", { text: "Timings" }), renderTimings(job.result.timings, job.result.usage));
      if (job.result.warnings.length) parts.push(el("ul", { class: "plain warnings" }, job.result.warnings.map((w) => el("li", { text: w }))));
    }
    parts.push(el("p", { class: "muted" }, "Job ", el("span", { class: "mono", text: job.id })));
    box.replaceChildren(...parts);
    box.hidden = false;
  } catch (err) {
    showError($("#play-error"), err);
  } finally {
    button.disabled = false;
  }
}

// ---------------------------------------------------------------- batches

async function showBatches() {
  const models = await loadModels();
  const sel = $("#batch-model");
  if (!sel.options.length) fillSelect(sel, models.map((m) => m.id), false);
  await refreshBatches();
  state.timer = setInterval(() => refreshBatches().catch(reportFatal), 2000);
}

async function refreshBatches() {
  const page = await api("/v1/batches?limit=50");
  const body = $("#batches-table tbody");
  body.replaceChildren(...page.data.map((b) => {
    const bar = el("span");
    bar.style.width = `${b.total ? Math.round((100 * b.finished) / b.total) : 100}%`;
    const counts = Object.entries(b.counts).filter(([, n]) => n).map(([s, n]) => `${s} ${n}`).join(", ");
    const actions = el("td", {});
    if (b.status === "completed") actions.append(el("button", { type: "button", class: "download", onclick: () => download(b.id) }, "Download results"));
    else actions.append(el("button", { type: "button", class: "link", onclick: () => cancelBatch(b.id) }, "Cancel"));
    return el("tr", { "data-batch": b.id },
      el("td", { class: "mono", text: b.id }), el("td", {}, badge(b.status)),
      el("td", {}, el("span", { class: "progress" }, bar), ` ${b.finished} / ${b.total}`),
      el("td", { text: counts }), el("td", { class: "mono", text: (b.models || []).join(", ") }),
      el("td", { text: fmtTime(b.created_at) }), actions);
  }));
  $("#batches-empty").hidden = page.data.length > 0;
}

async function download(id) {
  const blob = await api(`/v1/batches/${encodeURIComponent(id)}/results`);
  const url = URL.createObjectURL(blob);
  const a = el("a", { href: url, download: `${id}.results.jsonl` });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

async function cancelBatch(id) {
  await api(`/v1/batches/${encodeURIComponent(id)}/cancel`, { method: "POST" });
  await refreshBatches();
}

async function submitBatch(ev) {
  ev.preventDefault();
  const file = $("#batch-file").files[0];
  showError($("#batch-error"), file ? "" : "Choose a JSONL file.");
  if (!file) return;
  const form = new FormData();
  form.append("file", file);
  try {
    await api(`/v1/batches?model=${encodeURIComponent($("#batch-model").value)}`, { method: "POST", body: form });
    await refreshBatches();
  } catch (err) {
    showError($("#batch-error"), err);
  }
}

// ---------------------------------------------------------------- start

document.addEventListener("DOMContentLoaded", () => {
  $("#key-form").addEventListener("submit", saveKey);
  $("#forget-key").addEventListener("click", () => { localStorage.removeItem(KEY); $("#whoami").textContent = ""; showKeyPage(""); });
  $("#change-key").addEventListener("click", () => showKeyPage(""));
  $("#job-filters").addEventListener("change", () => { state.selectedJob = null; $("#job-detail").hidden = true; refreshJobs(false).catch(reportFatal); });
  $("#jobs-more").addEventListener("click", () => refreshJobs(true).catch(reportFatal));
  $("#play-form").addEventListener("submit", runPlayground);
  $("#batch-form").addEventListener("submit", submitBatch);
  $("#whoami").textContent = localStorage.getItem(KEY) ? "key set" : "";
  window.addEventListener("hashchange", route);
  route();
});
