// moldau dashboard: a single page over the JobManager's REST API (Flink's paths).
// Hash routes: #/overview, #/jobs/running, #/jobs/completed, #/job/<jid>[/exceptions],
// #/taskmanagers, #/taskmanager/<id>[/log], #/jobmanager, #/submit.
// Every page re-reads its data every REFRESH_MS; text from the server is only ever put in
// the page as text nodes (job names and exceptions are user input).
"use strict";

const REFRESH_MS = 2000;
const TERMINAL = new Set(["FINISHED", "CANCELED", "FAILED"]);
const STATE_ORDER = ["CREATED", "SCHEDULED", "DEPLOYING", "INITIALIZING", "RUNNING",
  "RECONCILING", "FINISHED", "CANCELING", "CANCELED", "FAILED"];
const COLORS = {
  CREATED: "#2f54eb", SCHEDULED: "#722ed1", DEPLOYING: "#13c2c2", INITIALIZING: "#738df8",
  RUNNING: "#52c41a", RECONCILING: "#eb2f96", FINISHED: "#1890ff", CANCELING: "#faad14",
  CANCELED: "#fa8c16", FAILED: "#f5222d", RESTARTING: "#13c2c2", FAILING: "#f5222d",
  SUSPENDED: "#8c8c8c", PENDING: "#8c8c8c",
};

// ------------------------------------------------------------------------------ helpers

function el(tag, props, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "style") e.style.cssText = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  append(e, children);
  return e;
}

function append(parent, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    parent.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

function svg(tag, attrs, ...children) {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, String(v));
  }
  append(e, children);
  return e;
}

function fill(region, ...children) {
  region.replaceChildren();
  append(region, children);
}

class ApiError extends Error {
  constructor(status, errors) {
    super(errors[0] || `HTTP ${status}`);
    this.status = status;
    this.errors = errors;
  }
}

async function api(path, opts) {
  let resp;
  try {
    resp = await fetch(path, Object.assign({ cache: "no-store" }, opts || {}));
  } catch (e) {
    throw new ApiError(0, ["Cannot reach the JobManager (" + e.message + ")"]);
  }
  const type = resp.headers.get("content-type") || "";
  const body = type.includes("json") ? await resp.json() : await resp.text();
  if (!resp.ok) {
    const errors = (body && body.errors) || [typeof body === "string" ? body : `HTTP ${resp.status}`];
    throw new ApiError(resp.status, errors);
  }
  return body;
}

function pad(n) { return String(n).padStart(2, "0"); }

function fmtTime(ms) {
  if (ms === undefined || ms === null || ms <= 0) return "-";
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function fmtDuration(ms) {
  if (ms === undefined || ms === null || ms < 0) return "-";
  if (ms < 1000) return `${Math.round(ms)}ms`;
  let s = Math.floor(ms / 1000);
  const d = Math.floor(s / 86400); s %= 86400;
  const h = Math.floor(s / 3600); s %= 3600;
  const m = Math.floor(s / 60); s %= 60;
  const parts = [];
  if (d) parts.push(`${d}d`);
  if (h) parts.push(`${h}h`);
  if (m) parts.push(`${m}m`);
  if (s || !parts.length) parts.push(`${s}s`);
  return parts.slice(0, 3).join(" ");
}

function fmtCount(n) {
  if (n === undefined || n === null || n < 0) return "-";
  return Number(n).toLocaleString("en-US");
}

function fmtBytes(n) {
  if (n === undefined || n === null || n < 0) return "-";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  let v = Number(n);
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return (i ? v.toFixed(1) : String(v)) + " " + units[i];
}

function statusTag(state) {
  const s = state || "UNKNOWN";
  return el("span", { class: "tag", style: `background:${COLORS[s] || "#8c8c8c"}` }, s);
}

function taskBadges(tasks) {
  const t = tasks || {};
  const out = el("span", { class: "badges" });
  for (const state of STATE_ORDER) {
    const n = t[state] !== undefined ? t[state] : t[state.toLowerCase()];
    if (!n) continue;
    out.appendChild(el("span", {
      class: "badge", title: `${state}: ${n}`, style: `background:${COLORS[state]}`,
    }, String(n)));
  }
  if (!out.childNodes.length) out.appendChild(el("span", { class: "muted" }, "-"));
  return out;
}

function table(columns, rows, opts) {
  const o = opts || {};
  const head = el("tr", {}, columns.map((c) => el("th", { class: c.cls === "num" ? "num" : undefined }, c.title)));
  const body = el("tbody");
  if (!rows.length) {
    body.appendChild(el("tr", {}, el("td", { colspan: columns.length, class: "empty" },
      o.empty || "No data")));
  }
  for (const r of rows) {
    const tr = el("tr", {
      class: (o.rowClass ? o.rowClass(r) : "") + (o.onRow ? " clickable" : ""),
      onclick: o.onRow ? () => o.onRow(r) : undefined,
    }, columns.map((c) => el("td", { class: c.cls }, c.render(r))));
    body.appendChild(tr);
  }
  return el("table", { class: "table" }, el("thead", {}, head), body);
}

function card(title, ...children) {
  return el("section", { class: "card" },
    title ? el("div", { class: "card-title" }, title) : null, el("div", { class: "card-body" }, children));
}

function setBanner(msg) {
  const b = document.getElementById("banner");
  if (msg) { b.textContent = msg; b.classList.remove("hidden"); }
  else b.classList.add("hidden");
}

function setTitle(t) {
  document.getElementById("title").textContent = t;
  document.title = `${t} - moldau Dashboard`;
}

function link(href, text) { return el("a", { href }, text); }

// ------------------------------------------------------------------------------ job tables

function jobColumns() {
  return [
    { title: "Job Name", render: (j) => el("span", { class: "strong" }, j.name) },
    { title: "Job ID", cls: "mono", render: (j) => j.jid },
    { title: "Start Time", cls: "nowrap", render: (j) => fmtTime(j["start-time"]) },
    { title: "End Time", cls: "nowrap", render: (j) => fmtTime(j["end-time"]) },
    { title: "Duration", cls: "nowrap", render: (j) => fmtDuration(j.duration) },
    { title: "Tasks", render: (j) => taskBadges(upperKeys(j.tasks)) },
    { title: "Status", render: (j) => statusTag(j.state) },
  ];
}

function upperKeys(obj) {
  const out = {};
  for (const [k, v] of Object.entries(obj || {})) out[k.toUpperCase()] = v;
  return out;
}

function jobsTable(jobs, empty) {
  const sorted = jobs.slice().sort((a, b) => (b["start-time"] || 0) - (a["start-time"] || 0));
  return table(jobColumns(), sorted, { empty, onRow: (j) => { location.hash = `#/job/${encodeURIComponent(j.jid)}`; } });
}

// ------------------------------------------------------------------------------ pages

const pages = {};

pages.overview = {
  nav: "overview",
  title: () => "Overview",
  async refresh(root) {
    const [ov, jobs] = await Promise.all([api("overview"), api("jobs/overview")]);
    const list = jobs.jobs || [];
    const stat = (label, value, sub) => el("div", { class: "stat" },
      el("div", { class: "stat-label" }, label), el("div", { class: "stat-value" }, String(value)),
      sub ? el("div", { class: "stat-sub" }, sub) : null);
    fill(root,
      el("div", { class: "stats" },
        stat("Available Task Slots", ov["slots-available"] ?? "-",
          `Total Task Slots ${ov["slots-total"] ?? "-"}`),
        stat("Task Managers", ov.taskmanagers ?? "-"),
        stat("Running Jobs", ov["jobs-running"] ?? "-"),
        el("div", { class: "stat" }, el("div", { class: "stat-label" }, "Completed Jobs"),
          el("div", { class: "stat-row" },
            el("span", { class: "stat-small", style: `color:${COLORS.FINISHED}` }, `Finished ${ov["jobs-finished"] ?? 0}`),
            el("span", { class: "stat-small", style: `color:${COLORS.CANCELED}` }, `Canceled ${ov["jobs-cancelled"] ?? 0}`),
            el("span", { class: "stat-small", style: `color:${COLORS.FAILED}` }, `Failed ${ov["jobs-failed"] ?? 0}`)))),
      card("Running Job List", jobsTable(list.filter((j) => !TERMINAL.has(j.state)), "No running jobs")),
      card("Completed Job List", jobsTable(list.filter((j) => TERMINAL.has(j.state)), "No completed jobs")));
  },
};

pages.running = {
  nav: "running",
  title: () => "Running Jobs",
  async refresh(root) {
    const jobs = (await api("jobs/overview")).jobs || [];
    fill(root, card("Running Job List", jobsTable(jobs.filter((j) => !TERMINAL.has(j.state)), "No running jobs")));
  },
};

pages.completed = {
  nav: "completed",
  title: () => "Completed Jobs",
  async refresh(root) {
    const jobs = (await api("jobs/overview")).jobs || [];
    fill(root, card("Completed Job List", jobsTable(jobs.filter((j) => TERMINAL.has(j.state)), "No completed jobs")));
  },
};

// -------------------------------------------------------------------- the dataflow graph

function stripHtml(s) {
  const d = document.createElement("div");
  d.innerHTML = String(s || "").replace(/<br\s*\/?>/gi, " -> ").replace(/<[^>]*>/g, "");
  return d.textContent;  // entities decoded; nothing of it is ever inserted as HTML
}

function wrapText(text, max) {
  const lines = [];
  String(text).split(" -> ").forEach((part, i) => {
    let rest = (i ? "\u2192 " : "") + part;
    while (rest.length > max) {
      let cut = rest.lastIndexOf(" ", max);
      if (cut < max / 2) cut = max;
      lines.push(rest.slice(0, cut));
      rest = rest.slice(cut).trimStart();
    }
    if (rest) lines.push(rest);
  });
  if (lines.length > 6) return lines.slice(0, 5).concat(["\u2026"]);
  return lines;
}

// Layered left-to-right layout: a node's layer is the longest path from a source; within a
// layer nodes are ordered by the mean position of their inputs (one barycenter pass).
function layoutGraph(nodes) {
  const byId = new Map(nodes.map((n) => [n.id, n]));
  const layer = new Map();
  const layerOf = (n, seen) => {
    if (layer.has(n.id)) return layer.get(n.id);
    if (seen.has(n.id)) return 0;
    seen.add(n.id);
    let l = 0;
    for (const i of n.inputs || []) {
      const up = byId.get(i.id);
      if (up) l = Math.max(l, layerOf(up, seen) + 1);
    }
    layer.set(n.id, l);
    return l;
  };
  nodes.forEach((n) => layerOf(n, new Set()));
  const layers = [];
  for (const n of nodes) (layers[layer.get(n.id)] = layers[layer.get(n.id)] || []).push(n);
  const pos = new Map();
  layers.forEach((ns, li) => {
    if (li > 0) {
      const key = (n) => {
        const ps = (n.inputs || []).map((i) => pos.get(i.id)).filter((p) => p !== undefined);
        return ps.length ? ps.reduce((a, b) => a + b, 0) / ps.length : 0;
      };
      ns.sort((a, b) => key(a) - key(b));
    }
    ns.forEach((n, i) => pos.set(n.id, i));
  });
  return { layers, layer };
}

function drawGraph(plan, vertices, selected, onSelect) {
  const nodes = (plan && plan.nodes) || [];
  if (!nodes.length) return el("p", { class: "muted" }, "No plan.");
  const vById = new Map((vertices || []).map((v) => [v.id, v]));
  const W = 200, GAP_X = 100, GAP_Y = 30, LINE = 16, PAD = 12;
  const { layers } = layoutGraph(nodes);
  const boxes = new Map();
  const heights = layers.map((ns) => ns.reduce((s, n) => {
    const v = vById.get(n.id);
    const lines = wrapText(v ? v.name : stripHtml(n.description), 26);
    const h = PAD * 2 + LINE * (lines.length + 1) + 4;
    boxes.set(n.id, { lines, h });
    return s + h;
  }, 0) + GAP_Y * (ns.length - 1));
  const totalH = Math.max(...heights);
  layers.forEach((ns, li) => {
    let y = 20 + (totalH - heights[li]) / 2;
    for (const n of ns) {
      const b = boxes.get(n.id);
      b.x = 20 + li * (W + GAP_X);
      b.y = y;
      y += b.h + GAP_Y;
    }
  });
  const width = 40 + layers.length * W + (layers.length - 1) * GAP_X;
  const height = totalH + 40;
  // wide graphs shrink to the card's width, down to 60 %; beyond that the card scrolls
  const root = svg("svg", {
    viewBox: `0 0 ${width} ${height}`, class: "graph",
    style: `width:100%;max-width:${width}px;min-width:${Math.round(width * 0.6)}px`,
  });
  root.appendChild(svg("defs", {}, svg("marker", {
    id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto",
  }, svg("path", { d: "M0,0 L10,5 L0,10 z", fill: "#8c8c8c" }))));
  for (const n of nodes) {
    const to = boxes.get(n.id);
    for (const inp of n.inputs || []) {
      const from = boxes.get(inp.id);
      if (!from) continue;
      const x1 = from.x + W, y1 = from.y + from.h / 2, x2 = to.x, y2 = to.y + to.h / 2;
      const mx = (x1 + x2) / 2;
      root.appendChild(svg("path", {
        d: `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2 - 2},${y2}`,
        class: "edge", "marker-end": "url(#arrow)",
      }));
      const label = inp.ship_strategy + (inp.side_output ? ` [${inp.side_output}]` : "");
      const lw = label.length * 6.6 + 12;
      const ly = (y1 + y2) / 2;
      root.appendChild(svg("g", { class: "edge-label" },
        svg("rect", { x: mx - lw / 2, y: ly - 10, width: lw, height: 20, rx: 10 }),
        svg("text", { x: mx, y: ly + 4, "text-anchor": "middle" }, label)));
    }
  }
  for (const n of nodes) {
    const b = boxes.get(n.id);
    const v = vById.get(n.id);
    const status = v ? v.status : "";
    const color = COLORS[status] || "#bfbfbf";
    const g = svg("g", {
      class: "node" + (selected === n.id ? " selected" : ""), transform: `translate(${b.x},${b.y})`,
      onclick: () => onSelect(n.id),
    });
    g.appendChild(svg("title", {}, (v ? v.name : stripHtml(n.description)) + (status ? ` (${status})` : "")));
    g.appendChild(svg("rect", { width: W, height: b.h, rx: 6, class: "node-box" }));
    g.appendChild(svg("rect", { width: 6, height: b.h, rx: 3, fill: color }));
    b.lines.forEach((line, i) => {
      g.appendChild(svg("text", { x: PAD + 4, y: PAD + 12 + i * LINE, class: "node-name" }, line));
    });
    const py = PAD + 12 + b.lines.length * LINE + 4;
    g.appendChild(svg("text", { x: PAD + 4, y: py, class: "node-meta" }, `Parallelism: ${n.parallelism}`));
    if (status) {
      g.appendChild(svg("text", { x: W - PAD, y: py, "text-anchor": "end", class: "node-meta", fill: color }, status));
    }
    root.appendChild(g);
  }
  return root;
}

// ------------------------------------------------------------------------------ job page

const jobView = { jid: null, openExceptions: new Set() };

function vertexColumns() {
  return [
    { title: "Name", cls: "name", render: (v) => el("span", { class: "strong" }, v.name) },
    { title: "Status", render: (v) => statusTag(v.status) },
    { title: "Bytes Received", cls: "num", render: (v) => fmtBytes((v.metrics || {})["read-bytes"]) },
    { title: "Records Received", cls: "num", render: (v) => fmtCount((v.metrics || {})["read-records"]) },
    { title: "Bytes Sent", cls: "num", render: (v) => fmtBytes((v.metrics || {})["write-bytes"]) },
    { title: "Records Sent", cls: "num", render: (v) => fmtCount((v.metrics || {})["write-records"]) },
    { title: "Parallelism", cls: "num", render: (v) => v.parallelism },
    { title: "Start Time", cls: "nowrap", render: (v) => fmtTime(v["start-time"]) },
    { title: "Duration", cls: "nowrap", render: (v) => fmtDuration(v.duration) },
    { title: "Tasks", render: (v) => taskBadges(upperKeys(v.tasks)) },
  ];
}

function subtaskColumns() {
  return [
    { title: "#", cls: "num", render: (s) => s.subtask },
    { title: "Status", render: (s) => statusTag(s.status) },
    { title: "Records Received", cls: "num", render: (s) => fmtCount((s.metrics || {})["read-records"]) },
    { title: "Records Sent", cls: "num", render: (s) => fmtCount((s.metrics || {})["write-records"]) },
    { title: "Attempt", cls: "num", render: (s) => s.attempt },
    { title: "Host", render: (s) => s.host || "-" },
    { title: "TaskManager", cls: "mono", render: (s) => s["taskmanager-id"]
      ? link(`#/taskmanager/${encodeURIComponent(s["taskmanager-id"])}`, s["taskmanager-id"]) : "-" },
    { title: "Start Time", cls: "nowrap", render: (s) => fmtTime(s["start-time"]) },
    { title: "Duration", cls: "nowrap", render: (s) => fmtDuration(s.duration) },
    { title: "End Time", cls: "nowrap", render: (s) => fmtTime(s["end-time"]) },
  ];
}

async function cancelJob(jid, button) {
  if (!confirm(`Cancel job ${jid}?`)) return;
  button.disabled = true;
  try {
    await api(`jobs/${encodeURIComponent(jid)}?mode=cancel`, { method: "PATCH" });
    refreshNow();
  } catch (e) {
    button.disabled = false;
    alert("Cancel failed: " + e.message);
  }
}

function jobHeader(d) {
  const canCancel = !TERMINAL.has(d.state) && d.state !== "CANCELING";
  const cancelBtn = el("button", { class: "btn danger", disabled: !canCancel }, "Cancel Job");
  cancelBtn.addEventListener("click", () => cancelJob(d.jid, cancelBtn));
  const field = (label, value) => el("div", { class: "field" },
    el("div", { class: "field-label" }, label), el("div", { class: "field-value" }, value));
  return el("section", { class: "card job-header" },
    el("div", { class: "job-title" }, el("h2", {}, d.name), statusTag(d.state), cancelBtn),
    el("div", { class: "fields" },
      field("Job ID", el("span", { class: "mono" }, d.jid)),
      field("Start Time", fmtTime(d["start-time"])),
      field("End Time", fmtTime(d["end-time"])),
      field("Duration", fmtDuration(d.duration)),
      field("Tasks", taskBadges(upperKeys(d["status-counts"])))));
}

function tabs(items, active) {
  return el("div", { class: "tabs" }, items.map(([key, label, href]) =>
    el("a", { class: "tab" + (key === active ? " active" : ""), href }, label)));
}

pages.job = {
  nav: null,
  title: () => "Job",
  async refresh(root, params, isCurrent) {
    const jid = params[0];
    const sub = params[1] || "overview";
    const selected = sub === "vertex" ? params[2] : null;
    if (jobView.jid !== jid) { jobView.jid = jid; jobView.openExceptions.clear(); }
    const base = `jobs/${encodeURIComponent(jid)}`;
    const d = await api(base);
    if (root.isConnected) setTitle(`Job: ${d.name}`);
    const href = `#/job/${encodeURIComponent(jid)}`;
    const parts = [jobHeader(d), tabs([["overview", "Overview", href],
      ["exceptions", "Exceptions", href + "/exceptions"]], sub === "exceptions" ? sub : "overview")];
    if (sub === "exceptions") {
      const ex = await api(base + "/exceptions");
      const all = ex["all-exceptions"] || [];
      parts.push(card("Root Exception",
        ex["root-exception"]
          ? [el("div", { class: "muted small" }, fmtTime(ex.timestamp)), el("pre", { class: "exception" }, ex["root-exception"])]
          : el("p", { class: "muted" }, "No exceptions.")));
      if (all.length) {
        parts.push(card("Exception History", all.map((x, i) => el("details", {
          class: "exc", open: jobView.openExceptions.has(i),
          ontoggle: (ev) => { if (ev.target.open) jobView.openExceptions.add(i); else jobView.openExceptions.delete(i); },
        },
          el("summary", {}, `${fmtTime(x.timestamp)}  ${x.task || x.taskName || ""} ${x.location ? "@ " + x.location : ""}`),
          el("pre", { class: "exception" }, x.exception || x.stacktrace || JSON.stringify(x, null, 2))))));
      }
    } else {
      const vertices = d.vertices || [];
      // the selected vertex is part of the address: #/job/<jid>/vertex/<vid>
      const select = (vid) => {
        location.hash = vid === selected ? href : `${href}/vertex/${encodeURIComponent(vid)}`;
      };
      parts.push(card("Dataflow", el("div", { class: "graph-wrap" },
        drawGraph(d.plan, vertices, selected, select))));
      parts.push(card("Vertices", table(vertexColumns(), vertices, {
        onRow: (v) => select(v.id), rowClass: (v) => (v.id === selected ? "selected" : ""),
      })));
      if (selected && vertices.some((v) => v.id === selected)) {
        const vd = await api(`${base}/vertices/${encodeURIComponent(selected)}`);
        parts.push(card(`Subtasks of ${vd.name}`, table(subtaskColumns(), vd.subtasks || [])));
      }
    }
    if (isCurrent()) fill(root, parts);
  },
};

// ------------------------------------------------------------------------------ task managers

function heartbeat(v) {
  if (v === undefined || v === null) return "-";
  // Flink names the field timeSinceLastHeartbeat but fills it with the heartbeat's time
  if (v > 1e12) return `${fmtTime(v)} (${fmtDuration(Date.now() - v)} ago)`;
  return `${fmtDuration(v)} ago`;
}

function hw(tm, key) { return (tm.hardware || {})[key]; }

pages.taskmanagers = {
  nav: "taskmanagers",
  title: () => "Task Managers",
  async refresh(root) {
    const tms = (await api("taskmanagers")).taskmanagers || [];
    fill(root, card("Task Managers", table([
      { title: "ID", cls: "mono", render: (t) => link(`#/taskmanager/${encodeURIComponent(t.id)}`, t.id) },
      { title: "Address", cls: "mono", render: (t) => t.path || "-" },
      { title: "Data Port", cls: "num", render: (t) => t.dataPort ?? "-" },
      { title: "Last Heartbeat", render: (t) => heartbeat(t.timeSinceLastHeartbeat) },
      { title: "All Slots", cls: "num", render: (t) => t.slotsNumber ?? "-" },
      { title: "Free Slots", cls: "num", render: (t) => t.freeSlots ?? "-" },
      { title: "CPU Cores", cls: "num", render: (t) => hw(t, "cpuCores") ?? "-" },
      { title: "Physical MEM", cls: "num", render: (t) => fmtBytes(hw(t, "physicalMemory")) },
    ], tms, { empty: "No TaskManager has registered", onRow: (t) => { location.hash = `#/taskmanager/${encodeURIComponent(t.id)}`; } })));
  },
};

const tmView = { key: null, pre: null, region: null };

pages.taskmanager = {
  nav: "taskmanagers",
  title: () => "Task Manager",
  async refresh(root, params, isCurrent) {
    const tmid = params[0];
    const which = params[1] === "log" ? "log" : "stdout";
    const base = `taskmanagers/${encodeURIComponent(tmid)}`;
    const key = `${tmid}/${which}`;
    if (tmView.key !== key || !root.contains(tmView.pre)) {
      // the <pre> survives refreshes so the reader's scroll position is kept
      tmView.key = key;
      tmView.region = el("div");
      tmView.pre = el("pre", { class: "log" }, "Loading\u2026");
      const href = `#/taskmanager/${encodeURIComponent(tmid)}`;
      fill(root, tmView.region, tabs([["stdout", "Stdout", href], ["log", "Log", href + "/log"]], which),
        el("section", { class: "card" }, tmView.pre));
    }
    const [tm, text] = await Promise.all([api(base), api(`${base}/${which}`)]);
    if (!isCurrent()) return;
    if (root.isConnected) setTitle(`Task Manager ${tm.id}`);
    const field = (label, value) => el("div", { class: "field" },
      el("div", { class: "field-label" }, label), el("div", { class: "field-value" }, value));
    fill(tmView.region, el("section", { class: "card padded" }, el("div", { class: "fields" },
      field("ID", el("span", { class: "mono" }, tm.id)),
      field("Address", tm.path || "-"),
      field("Data Port", tm.dataPort ?? "-"),
      field("Last Heartbeat", heartbeat(tm.timeSinceLastHeartbeat)),
      field("Slots", `${tm.freeSlots ?? "-"} free of ${tm.slotsNumber ?? "-"}`),
      field("CPU Cores", hw(tm, "cpuCores") ?? "-"),
      field("Physical Memory", fmtBytes(hw(tm, "physicalMemory"))))));
    const pre = tmView.pre;
    const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 8;
    const content = String(text) || `(nothing in ${which} yet)`;
    if (pre.textContent !== content) {
      pre.textContent = content;
      if (atBottom) pre.scrollTop = pre.scrollHeight;
    }
  },
};

// ------------------------------------------------------------------------------ job manager

function flatten(obj, prefix, out) {
  for (const [k, v] of Object.entries(obj || {})) {
    const key = prefix ? `${prefix}.${k}` : k;
    if (v && typeof v === "object" && !Array.isArray(v)) flatten(v, key, out);
    else out.push([key, Array.isArray(v) ? JSON.stringify(v) : String(v)]);
  }
  return out;
}

pages.jobmanager = {
  nav: "jobmanager",
  title: () => "Job Manager",
  async refresh(root) {
    const cfg = await api("config");
    const rows = Array.isArray(cfg) ? cfg.map((e) => [e.key, String(e.value)]) : flatten(cfg, "", []);
    rows.sort((a, b) => a[0].localeCompare(b[0]));
    fill(root, card("Configuration", table([
      { title: "Key", cls: "mono", render: (r) => r[0] },
      { title: "Value", cls: "mono", render: (r) => r[1] },
    ], rows)));
  },
};

// ------------------------------------------------------------------------------ submit

// the form's values live here, so a re-render (after an error) keeps what was typed
const submitView = { open: null, error: null, root: null, values: {} };

function submitForm(jar) {
  const entries = (jar.entry || []).map((e) => e.name);
  const v = submitView.values[jar.id] = submitView.values[jar.id] || {
    entryClass: entries.length === 1 ? entries[0] : "", parallelism: "", programArgs: "",
    savepointPath: "", allowNonRestoredState: false };
  const keep = (input, key) => {
    input.addEventListener("input", () => { v[key] = input.type === "checkbox" ? input.checked : input.value; });
    input.addEventListener("change", () => { v[key] = input.type === "checkbox" ? input.checked : input.value; });
    return input;
  };
  const entry = keep(el("input", { name: "entryClass", value: v.entryClass, placeholder: "job.py", list: "entries-" + jar.id }), "entryClass");
  const datalist = el("datalist", { id: "entries-" + jar.id }, entries.map((e) => el("option", { value: e })));
  const par = keep(el("input", { name: "parallelism", type: "number", min: 1, placeholder: "default", value: v.parallelism }), "parallelism");
  const args = keep(el("input", { name: "programArgs", placeholder: "--input rides.gz --speed 300", value: v.programArgs }), "programArgs");
  const sp = keep(el("input", { name: "savepointPath", placeholder: "/path/to/savepoint", value: v.savepointPath }), "savepointPath");
  const allow = keep(el("input", { name: "allowNonRestoredState", type: "checkbox", checked: v.allowNonRestoredState }), "allowNonRestoredState");
  const submit = el("button", { class: "btn primary", type: "submit" }, "Submit");
  const row = (label, input) => el("label", { class: "form-row" }, el("span", {}, label), input);
  const form = el("form", { class: "submit-form" },
    row("Entry Script", [entry, datalist]), row("Parallelism", par), row("Program Arguments", args),
    row("Savepoint Path", sp), row("Allow Non Restored State", el("span", { class: "check" }, allow)),
    el("div", { class: "form-actions" }, submit,
      el("button", { class: "btn", type: "button", onclick: () => { submitView.open = null; renderSubmit(); } }, "Close")));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    submit.disabled = true;
    submit.textContent = "Submitting\u2026";
    const body = { entryClass: entry.value.trim() || null, programArgs: args.value,
      parallelism: par.value ? Number(par.value) : null, savepointPath: sp.value.trim() || null,
      allowNonRestoredState: allow.checked };
    try {
      const r = await api(`jars/${encodeURIComponent(jar.id)}/run`, {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
      submitView.error = null;
      location.hash = `#/job/${encodeURIComponent(r.jobid)}`;
    } catch (e) {
      submitView.error = e.errors ? e.errors.join("\n\n") : e.message;
      renderSubmit();
    }
  });
  return form;
}

async function renderSubmit() {
  const root = submitView.root;
  if (!root || !root.isConnected) return;
  let jars;
  try {
    jars = (await api("jars")).files || [];
  } catch (e) {
    fill(root, card("Uploaded Jobs", el("p", { class: "error" }, e.message)));
    return;
  }
  const file = el("input", { type: "file", accept: ".zip,.py,.jar", class: "hidden" });
  const upload = el("button", { class: "btn primary" }, "+ Add New");
  upload.addEventListener("click", () => file.click());
  file.addEventListener("change", async () => {
    if (!file.files.length) return;
    const fd = new FormData();
    fd.append("jarfile", file.files[0]);
    upload.disabled = true;
    upload.textContent = "Uploading\u2026";
    try {
      const r = await api("jars/upload", { method: "POST", body: fd });
      submitView.open = r.filename;
      submitView.error = null;
    } catch (e) {
      submitView.error = e.message;
    }
    renderSubmit();
  });
  const rows = [];
  for (const jar of jars) {
    const del = el("button", { class: "btn small", onclick: async (ev) => {
      ev.stopPropagation();
      if (!confirm(`Delete ${jar.name}?`)) return;
      try { await api(`jars/${encodeURIComponent(jar.id)}`, { method: "DELETE" }); } catch (e) { alert(e.message); }
      renderSubmit();
    } }, "Delete");
    rows.push(el("tr", { class: "clickable" + (submitView.open === jar.id ? " selected" : ""),
      onclick: () => { submitView.open = submitView.open === jar.id ? null : jar.id; submitView.error = null; renderSubmit(); } },
    el("td", { class: "strong" }, jar.name), el("td", {}, fmtTime(jar.uploaded)),
    el("td", { class: "mono" }, (jar.entry || []).map((e) => e.name).join(", ") || "-"), el("td", {}, del)));
    if (submitView.open === jar.id) {
      rows.push(el("tr", { class: "form-tr" }, el("td", { colspan: 4 }, submitForm(jar))));
    }
  }
  if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: 4, class: "empty" }, "No job uploaded yet")));
  fill(root,
    card("Uploaded Jobs",
      el("p", { class: "muted" }, "Upload a zip of a job script and the files beside it (or a single .py), then pick it to submit."),
      el("div", { class: "toolbar" }, upload, file),
      submitView.error ? el("pre", { class: "exception error-box" }, submitView.error) : null,
      el("table", { class: "table" }, el("thead", {}, el("tr", {},
        el("th", {}, "Name"), el("th", {}, "Upload Time"), el("th", {}, "Entry Scripts"), el("th", {}, ""))),
      el("tbody", {}, rows))));
}

pages.submit = {
  nav: "submit",
  title: () => "Submit New Job",
  manual: true, // forms: no auto-refresh
  async refresh(root) { submitView.root = root; await renderSubmit(); },
};

// ------------------------------------------------------------------------------ router

const ROUTES = [
  [/^\/?$/, "overview"], [/^\/overview$/, "overview"], [/^\/jobs\/running$/, "running"],
  [/^\/jobs\/completed$/, "completed"], [/^\/job\/([^/]+)(?:\/(exceptions|vertex)(?:\/([^/]+))?)?$/, "job"],
  [/^\/taskmanagers$/, "taskmanagers"], [/^\/taskmanager\/([^/]+)(?:\/(log|stdout))?$/, "taskmanager"],
  [/^\/jobmanager$/, "jobmanager"], [/^\/submit$/, "submit"],
];

// Each navigation renders into a fresh element, so a refresh still in flight for the page
// left behind fills a detached element and never the new page.
const router = { page: null, params: [], busy: false, generation: 0, root: null };

function resolve() {
  const path = decodeURIComponent(location.hash.replace(/^#/, "")) || "/";
  for (const [re, name] of ROUTES) {
    const m = path.match(re);
    if (m) return [pages[name], m.slice(1).filter((x) => x !== undefined)];
  }
  return [null, []];
}

async function refreshNow() {
  if (!router.page || router.busy) return;
  router.busy = true;
  const gen = router.generation;
  const root = router.root;
  try {
    await router.page.refresh(root, router.params, () => gen === router.generation);
    if (gen === router.generation) {
      setBanner(null);
      document.getElementById("refresh-status").textContent = `updated ${fmtTime(Date.now()).slice(11)}`;
    }
  } catch (e) {
    if (gen !== router.generation) return;
    if (e.status === 404) {
      fill(root, card("Not found", el("p", {}, e.message)));
    } else {
      setBanner(e.message);
    }
  } finally {
    if (gen === router.generation) router.busy = false;
  }
}

function navigate() {
  const [page, params] = resolve();
  if (page && page === router.page && params[0] === router.params[0] && router.root) {
    // another view of the same job or TaskManager: keep what is shown until the new data
    router.generation++;
    router.params = params;
    router.busy = false;
    refreshNow();
    return;
  }
  router.generation++;
  router.page = page;
  router.params = params;
  router.busy = false;
  for (const a of document.querySelectorAll("[data-nav]")) {
    a.classList.toggle("active", page !== null && a.dataset.nav === page.nav);
  }
  const root = el("div", { class: "page" });
  router.root = root;
  fill(document.getElementById("content"), root);
  if (!page) {
    setTitle("Not found");
    fill(root, card("Not found", el("p", {}, "No such page. "), link("#/overview", "Go to the overview")));
    return;
  }
  setTitle(page.title());
  fill(root, el("p", { class: "muted" }, "Loading\u2026"));
  refreshNow();
}

async function loadVersion() {
  try {
    const ov = await api("overview");
    document.getElementById("version").textContent = (ov["flink-version"] || "").replace(/^moldau\s*/, "");
  } catch (e) { /* the page's own refresh reports it */ }
}

window.addEventListener("hashchange", navigate);
setInterval(() => { if (router.page && !router.page.manual) refreshNow(); }, REFRESH_MS);
navigate();
loadVersion();
