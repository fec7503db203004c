"""The admin page's HTML, script and style: what ``sandbox-kernel top`` shows,
in a browser.  The script builds every cell with ``textContent`` (labels such
as a session's name come from students: never markup), and the page's
Content-Security-Policy lets only these files run."""

HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>sandbox-kernel: the classroom</title>
<link rel="stylesheet" href="{prefix}page.css">
<script src="{prefix}page.js" defer></script>
</head>
<body data-snapshot="{prefix}api/snapshot" data-xsrf="{xsrf}">
<header>
  <h1>sandbox-kernel: the classroom</h1>
  <p id="status">loading&hellip;</p>
</header>
<h2>Ceilings (one per student)</h2>
<table id="ceilings">
  <thead><tr><th>user</th><th>memory</th><th>cpu</th><th>pids</th><th>out of memory</th></tr></thead>
  <tbody></tbody>
</table>
<h2>Containers</h2>
<table id="containers">
  <thead><tr><th>user</th><th>kind</th><th>session</th><th>kernel</th><th>image</th>
  <th>memory</th><th>cpu</th><th>pids</th><th>uptime</th></tr></thead>
  <tbody></tbody>
</table>
</body>
</html>
"""

CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; margin: 0; }
h2 { font-size: 1.1em; margin-top: 1.5em; }
#status { color: #555; margin: .3em 0 0; }
table { border-collapse: collapse; min-width: 60%; }
th, td { border-bottom: 1px solid #ddd; padding: .3em .8em; text-align: left; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.hot { color: #b00020; font-weight: bold; }
td.empty { color: #777; font-style: italic; }
"""

SCRIPT = r"""
"use strict";
const UNITS = ["B", "KiB", "MiB", "GiB", "TiB"];

function bytes(n) {
  if (n === null || n === undefined) return "–";
  let i = 0;
  while (n >= 1024 && i < UNITS.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : String(n)) + " " + UNITS[i];
}

function against(now, limit, format) {
  const shown = format(now);
  return limit === null || limit === undefined ? shown + " / no limit" : shown + " / " + format(limit);
}

function duration(s) {
  if (s === null || s === undefined) return "–";
  s = Math.floor(s);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
  return (h ? h + " h " : "") + (h || m ? m + " min " : "") + (s % 60) + " s";
}

function cpu(usage, limit) {
  const percent = usage.cpu_percent === null || usage.cpu_percent === undefined
    ? "–" : usage.cpu_percent.toFixed(0) + " %";
  if (limit === null || limit === undefined) return percent;
  return percent + " of " + limit + (limit === 1 ? " cpu" : " cpus");
}

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "–" : String(text);
  if (className) td.className = className;
  row.appendChild(td);
}

function fill(tableId, rows, columns, emptyText) {
  const body = document.querySelector("#" + tableId + " tbody");
  body.replaceChildren();
  if (rows.length === 0) {
    const row = body.insertRow();
    cell(row, emptyText, "empty");
    row.firstChild.colSpan = columns;
  }
  return body;
}

function showCeilings(ceilings) {
  const body = fill("ceilings", ceilings, 5, "no student has a ceiling (no server runs)");
  for (const c of ceilings) {
    const u = c.usage || {};
    const row = body.insertRow();
    row.dataset.user = c.user;
    cell(row, c.user);
    cell(row, against(u.memory, c.memory, bytes), "num");
    cell(row, cpu(u, c.cpus), "num");
    cell(row, against(u.pids, c.pids, String), "num");
    cell(row, u.oom_kills, u.oom_kills ? "num hot" : "num");
  }
}

function showContainers(containers) {
  const body = fill("containers", containers, 9, "no container runs");
  for (const c of containers) {
    const u = c.usage || {}, limits = c.limits || {};
    const row = body.insertRow();
    row.dataset.user = c.user;
    for (const text of [c.user, c.kind, c.session, c.kernel_id, c.image]) cell(row, text);
    cell(row, against(u.memory, limits.memory, bytes), "num");
    cell(row, cpu(u, limits.cpus), "num");
    cell(row, against(u.pids, limits.pids, String), "num");
    cell(row, duration(c.uptime), "num");
  }
}

async function refresh() {
  const status = document.getElementById("status");
  try {
    // JupyterHub checks the xsrf token of a script's request made with the login cookie
    const reply = await fetch(document.body.dataset.snapshot, {
      credentials: "same-origin", headers: {"X-XSRFToken": document.body.dataset.xsrf}});
    if (!reply.ok) throw new Error("the service answered " + reply.status);
    const snap = await reply.json();
    showCeilings(snap.ceilings || []);
    showContainers(snap.containers || []);
    status.textContent = "host " + snap.host + ", cgroup " + snap.cgroup + ", " +
      (snap.containers || []).length + " containers, updated " +
      new Date(snap.time * 1000).toLocaleTimeString();
    document.body.dataset.loaded = "yes";
  } catch (error) {
    status.textContent = "could not read the snapshot: " + error.message;
  }
}

refresh();
setInterval(refresh, 2000);
"""
