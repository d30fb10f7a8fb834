// docutray-watch status page: polls /api/status (the `status --json` document) and /api/live
// (the daemon's in-memory figures) and draws everything with plain DOM and inline SVG.
// Text from the server is only ever set with textContent (file names and reasons are data).
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const TOKEN_KEY = "docutray-watch-token";
const body = document.body;
const refreshMs = Math.max(1000, Number(body.dataset.refreshMs) || 5000);
const actions = body.dataset.actions === "on";

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function age(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  if (seconds < 172800) return `${(seconds / 3600).toFixed(1)} h`;
  return `${(seconds / 86400).toFixed(1)} d`;
}

function duration(seconds) {
  if (seconds >= 10) return `${Math.round(seconds)} s`;
  if (seconds >= 1) return `${seconds.toFixed(1)} s`;
  const ms = seconds * 1000;
  return ms >= 10 || ms === 0 ? `${Math.round(ms)} ms` : `${ms.toFixed(1)} ms`;
}

function clock(unixSeconds) {
  return new Date(unixSeconds * 1000).toISOString().slice(11, 16);
}

function baseName(path) {
  return String(path || "").split("/").pop();
}

// -- plots ----------------------------------------------------------------------------------

const PLOT = { left: 46, right: 6, top: 8, bottom: 22 };
const [WIDTH, HEIGHT] = [400, 160];

function niceMax(value) {
  if (value <= 0) return 1;
  const step = Math.pow(10, Math.floor(Math.log10(value)));
  for (const m of [1, 2, 5, 10]) if (value <= m * step) return m * step;
  return 10 * step;
}

function frame(plot, width, height, max, format) {
  plot.replaceChildren();
  const innerH = height - PLOT.top - PLOT.bottom;
  for (const share of [0, 0.5, 1]) {
    const y = PLOT.top + innerH * (1 - share);
    plot.append(svg("line", { class: "axis", x1: PLOT.left, x2: width - PLOT.right, y1: y, y2: y }));
    plot.append(svg("text", { x: PLOT.left - 4, y: y + 4, "text-anchor": "end" }, format(max * share)));
  }
}

function timeAxis(plot, minutes, width, height) {
  const innerW = width - PLOT.left - PLOT.right;
  const step = innerW / minutes.length;
  minutes.forEach((minute, i) => {
    if ((i % 15 === 0 && i < minutes.length - 8) || i === minutes.length - 1) {
      const last = i === minutes.length - 1;
      const x = last ? width - PLOT.right : PLOT.left + i * step + step / 2;
      plot.append(svg("text", { x, y: height - 6, "text-anchor": last ? "end" : "middle" }, clock(minute.start)));
    }
  });
}

function drawThroughput(minutes) {
  const plot = document.getElementById("throughput-plot");
  const [width, height] = [WIDTH, HEIGHT];
  const max = niceMax(Math.max(...minutes.map((m) => m.done + m.failed), 0));
  frame(plot, width, height, max, (v) => String(Math.round(v)));
  const innerW = width - PLOT.left - PLOT.right;
  const innerH = height - PLOT.top - PLOT.bottom;
  const step = innerW / minutes.length;
  minutes.forEach((minute, i) => {
    const x = PLOT.left + i * step + 1;
    const doneH = (innerH * minute.done) / max;
    const failedH = (innerH * minute.failed) / max;
    const base = PLOT.top + innerH;
    const title = `${clock(minute.start)}: ${minute.done} done, ${minute.failed} failed`;
    if (minute.done) {
      const bar = svg("rect", { class: "bar-done", x, y: base - doneH, width: Math.max(1, step - 2), height: doneH });
      bar.append(svg("title", {}, title));
      plot.append(bar);
    }
    if (minute.failed) {
      const bar = svg("rect", { class: "bar-failed", x, y: base - doneH - failedH, width: Math.max(1, step - 2), height: failedH });
      bar.append(svg("title", {}, title));
      plot.append(bar);
    }
  });
  timeAxis(plot, minutes, width, height);
}

function drawLatency(minutes) {
  const plot = document.getElementById("latency-plot");
  const [width, height] = [WIDTH, HEIGHT];
  const values = minutes.map((m) => m.api_mean_s);
  const max = niceMax(Math.max(...values.filter((v) => v !== null), 0));
  frame(plot, width, height, max, duration);
  const innerW = width - PLOT.left - PLOT.right;
  const innerH = height - PLOT.top - PLOT.bottom;
  const step = innerW / minutes.length;
  let path = "";
  let pen = "M";
  minutes.forEach((minute, i) => {
    if (minute.api_mean_s === null) {
      pen = "M";
      return;
    }
    const x = PLOT.left + i * step + step / 2;
    const y = PLOT.top + innerH * (1 - minute.api_mean_s / max);
    path += `${pen}${x.toFixed(1)},${y.toFixed(1)} `;
    pen = "L";
    const dot = svg("circle", { cx: x, cy: y, r: 2.5, class: "bar-done" });
    dot.append(svg("title", {}, `${clock(minute.start)}: ${minute.api_requests} requests, mean ${duration(minute.api_mean_s)}${minute.rate_limited ? `, ${minute.rate_limited}× 429` : ""}`));
    plot.append(dot);
  });
  if (path) plot.append(svg("path", { class: "line", d: path.trim() }));
  timeAxis(plot, minutes, width, height);
}

function drawLearned(rows) {
  const plot = document.getElementById("learned-plot");
  const sizes = ["< 1 MiB", "< 10 MiB", "larger"];
  const rowH = 22;
  const height = Math.max(40, rows.length * rowH + 10);
  plot.setAttribute("viewBox", `0 0 ${WIDTH} ${height}`);
  plot.replaceChildren();
  if (!rows.length) {
    plot.append(svg("text", { x: 10, y: 24 }, "nothing learned yet"));
    return;
  }
  const max = niceMax(Math.max(...rows.map((r) => r.mean_s + r.stdev_s)));
  const left = 140;
  rows.forEach((row, i) => {
    const y = 5 + i * rowH;
    const w = ((WIDTH - left - 80) * row.mean_s) / max;
    plot.append(svg("text", { x: left - 6, y: y + 14, "text-anchor": "end" }, `${row.step_id} (${sizes[row.size_class] || row.size_class})`));
    const bar = svg("rect", { class: "bar-learned", x: left, y: y + 3, width: Math.max(1, w), height: rowH - 8 });
    bar.append(svg("title", {}, `${row.samples} samples`));
    plot.append(bar);
    plot.append(svg("text", { x: left + w + 6, y: y + 14 }, `${duration(row.mean_s)} ± ${duration(row.stdev_s)}`));
  });
}

// -- tables and cards -----------------------------------------------------------------------

function drawPipelines(status) {
  const box = document.getElementById("pipelines");
  box.replaceChildren();
  const names = Object.keys(status.queue);
  if (!names.length) box.append(el("p", { class: "muted" }, "No pipeline yet."));
  for (const name of names) {
    const queue = status.queue[name];
    const today = status.today[name];
    const types = (status.identified_outcomes || {})[name];
    const figure = (label, value, cls) =>
      el("div", { class: `figure ${cls || ""}`, "data-figure": cls || label }, el("b", {}, value), el("span", { class: "muted" }, label));
    box.append(
      el("div", { class: types ? "card wide" : "card", "data-pipeline": name },
        el("h3", {}, name),
        el("div", { class: "figures" },
          figure("waiting", queue.waiting, "waiting"),
          figure("in flight", queue.in_flight, "in-flight"),
          figure("done today", today.done, "done"),
          figure("failed today", today.failed, "failed"),
          figure("oldest waiting", age(status.oldest_pending_age_s[name]), "oldest")),
        typeTable(types)));
  }
  document.getElementById("today-date").textContent = names.length ? `(today = ${status.today[names[0]].date} UTC)` : "";
}

const TYPE_WORDS = ["success", "duplicate", "failed", "rejected", "unrouted"];

function typeTable(types) {
  // Pipelines with `identify` only: documents per identified type and outcome (others: state).
  if (!types) return "";
  const codes = Object.keys(types).sort();
  const head = el("tr", {}, el("th", {}, "Type"), ...TYPE_WORDS.map((w) => el("th", {}, w)),
    el("th", {}, "unfinished"));
  const rows = codes.map((code) => {
    const words = types[code];
    const unfinished = Object.entries(words)
      .filter(([word]) => !TYPE_WORDS.includes(word)).reduce((sum, [, n]) => sum + n, 0);
    return el("tr", { "data-type": code }, el("td", {}, code),
      ...TYPE_WORDS.map((w) => el("td", { "data-word": w }, words[w] || 0)),
      el("td", { "data-word": "unfinished" }, unfinished));
  });
  if (!codes.length) {
    rows.push(el("tr", {}, el("td", { class: "muted", colspan: TYPE_WORDS.length + 2 }, "No document identified yet.")));
  }
  return el("div", { class: "scroll types" },
    el("table", { class: "by-type" }, el("thead", {}, head), el("tbody", {}, ...rows)));
}

function drawCluster(cluster) {
  // Cluster mode only: the nodes as the cluster database knows them (`status --json`'s cluster).
  const box = document.getElementById("cluster");
  box.hidden = !cluster;
  if (!cluster) return;
  document.getElementById("this-node").textContent =
    `(this page: node ${cluster.this_node}; ${cluster.shared_unfinished} unfinished in shared folders)`;
  const rows = cluster.nodes.map((node) =>
    el("tr", { "data-node": node.name, class: node.name === cluster.this_node ? "this-node" : "" },
      el("td", {}, node.name),
      el("td", { class: `node-${node.state}`, "data-state": node.state }, node.state),
      el("td", { title: node.last_heartbeat }, `${age(node.heartbeat_age_s)} ago`),
      el("td", {}, node.unfinished_documents),
      el("td", {}, `${node.host} (pid ${node.pid})`),
      el("td", {}, node.version)));
  if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: 6, class: "muted" }, "No node.")));
  document.querySelector("#nodes tbody").replaceChildren(...rows);
}

function drawSinks(sinks) {
  const rows = sinks.map((sink) =>
    el("tr", {},
      el("td", {}, sink.pipeline), el("td", {}, `${sink.sink} (${sink.type})`),
      el("td", { class: `state-${sink.state}` }, sink.state),
      el("td", {}, sink.delivered), el("td", {}, sink.failed_attempts),
      el("td", {}, sink.last_success ? new Date(sink.last_success * 1000).toISOString().replace("T", " ").slice(0, 19) : "—")));
  document.querySelector("#sinks tbody").replaceChildren(...rows);
}

function drawFailures(failures) {
  const rows = failures.map((failure) => {
    const cell = el("td", {}, el("a", { href: `/api/documents/${failure.id}/sidecar`, target: "_blank", rel: "noopener" }, "sidecar"));
    if (actions) {
      const button = el("button", { type: "button", "data-retry": failure.id }, "retry");
      button.addEventListener("click", () => retry(failure.id, button));
      cell.append(" ", button);
    }
    return el("tr", { "data-id": failure.id },
      el("td", {}, failure.when.replace("T", " ").replace("Z", "")),
      el("td", {}, failure.pipeline),
      el("td", { class: "file", title: failure.path }, baseName(failure.path)),
      el("td", {}, failure.stage || ""),
      el("td", { class: "reason" }, failure.reason || ""),
      cell);
  });
  if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: 6, class: "muted" }, "No failure.")));
  document.querySelector("#failures tbody").replaceChildren(...rows);
}

function drawApi(api) {
  const badge = document.getElementById("api-state");
  const words = { ok: "API ok", paused: `API paused (429), ${api.paused_for_s} s left`, key_refused: "API key refused" };
  badge.textContent = words[api.state] || `API ${api.state}`;
  badge.className = `badge ${words[api.state] ? api.state : "bad"}`;
  badge.dataset.state = api.state;
}

// -- the retry action -------------------------------------------------------------------------

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

function showTokenState() {
  document.getElementById("token-state").textContent = token() ? "token kept for this tab" : "no token: actions are refused";
}

async function retry(id, button) {
  const result = document.getElementById("action-result");
  button.disabled = true;
  try {
    const response = await fetch(`/api/documents/${id}/retry`, {
      method: "POST",
      headers: { Authorization: `Bearer ${token()}` },
      credentials: "omit",
    });
    const answer = await response.json();
    result.textContent = response.ok
      ? `document ${id} requeued: the daemon takes it up within a second or two`
      : `retry of document ${id} refused (${response.status}): ${answer.error || (answer.problems || []).join("; ")}`;
    result.dataset.status = String(response.status);
  } catch (error) {
    result.textContent = `retry failed: ${error}`;
  } finally {
    button.disabled = false;
  }
}

function setUpToken() {
  if (!actions) return;
  document.getElementById("token-box").hidden = false;
  const input = document.getElementById("token");
  document.getElementById("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    if (input.value.trim()) sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    input.value = "";
    showTokenState();
  });
  document.getElementById("token-forget").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    showTokenState();
  });
  showTokenState();
}

// -- polling ----------------------------------------------------------------------------------

async function getJson(url) {
  const response = await fetch(url, { cache: "no-store", credentials: "omit" });
  if (!response.ok) throw new Error(`${url}: ${response.status}`);
  return response.json();
}

async function refresh() {
  const problem = document.getElementById("error");
  try {
    const [status, live] = await Promise.all([getJson("/api/status?failures=50"), getJson("/api/live")]);
    drawPipelines(status);
    drawCluster(status.cluster);
    drawFailures(status.failures);
    drawLearned(status.learned_latency);
    drawThroughput(live.minutes);
    drawLatency(live.minutes);
    drawSinks(live.sinks);
    drawApi(live.api);
    document.getElementById("updated").textContent = `updated ${status.generated_at.replace("T", " ").replace("Z", " UTC")}`;
    body.dataset.loaded = "yes";
    problem.hidden = true;
  } catch (error) {
    problem.textContent = `cannot reach the daemon: ${error.message}`;
    problem.hidden = false;
  } finally {
    setTimeout(refresh, refreshMs);
  }
}

setUpToken();
refresh();
