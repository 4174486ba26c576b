/**
 * The member's live status page (`GET /` with `--http-port`, DESIGN §6): one self-contained HTML
 * document (inline CSS and script, no framework, no external resource) that polls `/status.json` once a
 * second and redraws.
 *
 * Guarantees:
 * - Everything shown comes from `/status.json` and is put in the page as text (`textContent`), never
 *   as HTML: lock names and client names are untrusted and cannot inject markup or script.
 * - Its size does not grow with the cluster: the JSON it polls is bounded (runtime/http.ts).
 * - A member that does not serve shows what it knows (quorum, leader) and links to the leader's page
 *   when the leader told it where that is.
 * - Elements carry `data-testid` names that the browser test (test/integration/status-page.test.ts) reads.
 */

export const STATUS_POLL_MS = 1000;

export function statusPageHtml(): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>keylock status</title>
<style>
  :root { --fg:#1d2430; --muted:#6b7280; --line:#e5e7eb; --ok:#15803d; --warn:#b45309; --bad:#b91c1c; --accent:#1d4ed8; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); background: #f8fafc; }
  header { padding: 14px 20px; background: #0f172a; color: #fff; display: flex; gap: 16px; align-items: baseline; flex-wrap: wrap; }
  header h1 { margin: 0; font-size: 18px; }
  header .sub { color: #cbd5e1; }
  .pill { display: inline-block; padding: 1px 9px; border-radius: 999px; font-weight: 600; font-size: 12px; background: #e2e8f0; color: #0f172a; }
  .pill.ok { background: #dcfce7; color: var(--ok); } .pill.warn { background: #fef3c7; color: var(--warn); } .pill.bad { background: #fee2e2; color: var(--bad); }
  main { padding: 16px 20px; display: grid; grid-template-columns: repeat(auto-fit, minmax(420px, 1fr)); gap: 16px; }
  section { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 12px 14px; min-width: 0; }
  section h2 { margin: 0 0 8px; font-size: 15px; }
  table { width: 100%; border-collapse: collapse; font-variant-numeric: tabular-nums; }
  th, td { text-align: left; padding: 3px 8px 3px 0; border-bottom: 1px solid var(--line); white-space: nowrap; overflow: hidden; text-overflow: ellipsis; max-width: 260px; }
  th { color: var(--muted); font-weight: 600; font-size: 12px; }
  td.num, th.num { text-align: right; }
  .muted { color: var(--muted); }
  .banner { grid-column: 1 / -1; background: #eff6ff; border-color: #bfdbfe; }
  .banner.bad { background: #fef2f2; border-color: #fecaca; }
  .kv { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px; }
  .bar { height: 10px; background: #e5e7eb; border-radius: 5px; overflow: hidden; }
  .bar > div { height: 100%; background: var(--accent); }
  .hist { display: flex; align-items: flex-end; gap: 3px; height: 70px; margin-top: 6px; }
  .hist div { flex: 1; background: #93c5fd; min-height: 1px; position: relative; }
  .histlabels { display: flex; gap: 3px; font-size: 10px; color: var(--muted); }
  .histlabels span { flex: 1; text-align: center; }
  a { color: var(--accent); }
  code { font-size: 12px; }
</style>
</head>
<body>
<header>
  <h1>keylock</h1>
  <span data-testid="self">…</span>
  <span class="pill" data-testid="role">…</span>
  <span class="sub" data-testid="updated"></span>
</header>
<main>
  <section class="banner" data-testid="banner" hidden></section>
  <section>
    <h2>Leader</h2>
    <div class="kv">
      <span class="muted">leader</span><span data-testid="leader">…</span>
      <span class="muted">term</span><span data-testid="term">…</span>
      <span class="muted">recovery</span><span data-testid="recovery">…</span>
      <span class="muted">this member</span><span data-testid="uptime">…</span>
    </div>
    <div class="bar" style="margin-top:8px"><div data-testid="recovery-bar" style="width:0%"></div></div>
  </section>
  <section>
    <h2>Quorum</h2>
    <table><thead><tr><th>slot</th><th>address</th><th>role</th><th class="num">term</th><th>page</th></tr></thead>
    <tbody data-testid="members"></tbody></table>
    <div class="muted" style="margin-top:8px">heartbeat gaps (seconds) seen by this member: <span data-testid="gap-summary"></span></div>
    <div class="hist" data-testid="gaps"></div><div class="histlabels" data-testid="gap-labels"></div>
  </section>
  <section>
    <h2>Lock table</h2>
    <div class="kv" data-testid="table"></div>
  </section>
  <section>
    <h2>Clients <span class="muted" data-testid="clients-total"></span></h2>
    <table><thead><tr><th>name</th><th>rid</th><th>address</th><th class="num">locks</th><th class="num">waiting</th><th>state</th></tr></thead>
    <tbody data-testid="clients"></tbody></table>
  </section>
  <section>
    <h2>Hottest locks <span class="muted">(by messages, bounded summary)</span></h2>
    <table><thead><tr><th>key</th><th class="num">messages</th><th class="num">requests</th><th class="num">invalidations</th><th class="num">grants</th></tr></thead>
    <tbody data-testid="hottest"></tbody></table>
  </section>
  <section>
    <h2>Fence requests <span class="muted" data-testid="fences-total"></span></h2>
    <table><thead><tr><th>rid</th><th>address</th><th>reason</th><th>state</th></tr></thead>
    <tbody data-testid="fences"></tbody></table>
  </section>
</main>
<script>
"use strict";
const $ = (id) => document.querySelector('[data-testid="' + id + '"]');
const text = (id, value) => { $(id).textContent = value; };
function rows(id, items, cells, empty) {
  const body = $(id);
  body.replaceChildren();
  if (items.length === 0) {
    const tr = body.insertRow(); const td = tr.insertCell(); td.colSpan = 8; td.className = "muted"; td.textContent = empty;
    return;
  }
  for (const item of items) {
    const tr = body.insertRow();
    for (const cell of cells(item)) {
      const td = tr.insertCell();
      if (cell !== null && typeof cell === "object" && cell.href) {
        const a = document.createElement("a"); a.href = cell.href; a.textContent = cell.text; td.append(a);
      } else if (typeof cell === "number") { td.className = "num"; td.textContent = cell.toLocaleString(); }
      else td.textContent = cell === null || cell === undefined ? "" : String(cell);
      td.title = td.textContent;
    }
  }
}
function safeLink(url) { return typeof url === "string" && /^https?:\\/\\//.test(url) ? url : null; }
let previous = null;
function render(s) {
  const role = s.serving ? "leader, serving" : s.self.role === "leader" ? "leader, starting" : s.self.role;
  text("self", "member " + s.self.slot + " at " + s.self.address);
  const pill = $("role"); pill.textContent = role;
  pill.className = "pill " + (s.ready ? "ok" : "warn");
  text("updated", "updated " + new Date(s.time).toLocaleTimeString());
  const banner = $("banner");
  const leaderLink = s.leader && safeLink(s.leader.httpUrl);
  if (!s.serving) {
    banner.hidden = false; banner.className = "banner" + (s.leader ? "" : " bad");
    banner.replaceChildren();
    if (s.leader) {
      banner.append("This member does not serve locks: it follows the leader, slot " + s.leader.slot + " at " + s.leader.address + ". ");
      if (leaderLink) { const a = document.createElement("a"); a.href = leaderLink; a.textContent = "Open the leader's status page"; a.dataset.testid = "leader-link"; banner.append(a); }
      else banner.append("(the leader's status page is not known: run it with --http-port)");
      if (s.leaderView && s.leaderView.error) banner.append(" — the leader could not be asked: " + s.leaderView.error);
    } else banner.append("No leader is known to this member yet (an election may be under way).");
  } else banner.hidden = true;
  const view = s.server || (s.leaderView && !s.leaderView.error ? s.leaderView : null);
  text("leader", s.leader ? "slot " + s.leader.slot + " at " + s.leader.address : "none known");
  text("term", view ? view.term : String(s.self.term));
  if (s.server) {
    const r = s.server.recovery;
    const done = r.clients - r.pending;
    text("recovery", s.server.recovering ? "recovering: " + done + " of " + r.clients + " client(s) (timeout " + r.timeoutMs + " ms)" : r.clients === 0 ? "nothing to recover" : "done: " + r.clients + " client(s) recovered");
    $("recovery-bar").style.width = (r.clients === 0 ? 100 : Math.round(100 * done / r.clients)) + "%";
  } else {
    text("recovery", view ? (view.recovering ? "the leader is recovering locks" : "the leader is not recovering") : "unknown");
    $("recovery-bar").style.width = "0%";
  }
  text("uptime", (s.server ? "serving for " + Math.round(s.server.upForMs / 1000) + " s; " : "") +
    "elections stood " + s.elections.stood + ", won " + s.elections.won);
  rows("members", s.members, (m) => [m.slot, m.address, m.role, m.term === null ? "" : m.term,
    safeLink(m.httpUrl) ? { href: m.httpUrl, text: "status" } : ""], "no members");
  const gaps = s.heartbeatGaps;
  text("gap-summary", gaps.count + " heartbeats, longest gap " + (gaps.maxSeconds > 0 ? gaps.maxSeconds.toFixed(1) + " s" : "under 1 s"));
  const hist = $("gaps"); const labels = $("gap-labels"); hist.replaceChildren(); labels.replaceChildren();
  const top = Math.max(1, ...gaps.buckets.map((b) => b.count));
  for (const b of gaps.buckets) {
    const bar = document.createElement("div"); bar.style.height = Math.round(100 * b.count / top) + "%"; bar.title = "≤ " + b.le + " s: " + b.count; hist.append(bar);
    const label = document.createElement("span"); label.textContent = b.le; labels.append(label);
  }
  const table = $("table"); table.replaceChildren();
  const kv = (k, v) => { const a = document.createElement("span"); a.className = "muted"; a.textContent = k; const b = document.createElement("span"); b.textContent = v; table.append(a, b); };
  if (s.server) {
    const t = s.server.table;
    kv("keys", t.keys.toLocaleString()); kv("entries", t.entries.toLocaleString()); kv("queued requests", t.queuedRequests.toLocaleString());
    kv("last fencing token", t.writeSeq);
    if (previous && previous.server) {
      const seconds = Math.max(0.001, (s.time - previous.time) / 1000);
      kv("grants / s", Math.round((s.counts.grants - previous.counts.grants) / seconds).toLocaleString());
      kv("invalidations / s", Math.round((s.counts.invalidations - previous.counts.invalidations) / seconds).toLocaleString());
    }
    kv("grant latency p50 / p99", s.grantLatency);
  } else kv("", "served by the leader only");
  const clients = view ? view.clients : [];
  text("clients-total", view ? "(" + view.clientsTotal + (view.clients.length < view.clientsTotal ? ", lowest rids shown" : "") + ")" : "");
  rows("clients", clients, (c) => [c.name, c.rid, c.address, c.locks === undefined ? "" : c.locks, c.waiting === undefined ? "" : c.waiting,
    c.connected === false ? "disconnected" : "connected"], view ? "no clients" : "unknown: see the leader's page");
  rows("hottest", s.server ? s.server.hottest : [], (h) => [h.key, h.total, h.requests, h.invalidations, h.grants],
    s.server ? "no lock traffic yet" : "kept by the leader: see its page");
  const fences = view ? view.fences || [] : [];
  text("fences-total", view ? "(" + (view.fencesTotal ?? fences.length) + ")" : "");
  rows("fences", fences, (f) => [f.rid, f.address, f.reason, f.state], "none");
  previous = s;
}
async function poll() {
  try {
    const response = await fetch("status.json", { cache: "no-store" });
    if (!response.ok) throw new Error("HTTP " + response.status);
    render(await response.json());
  } catch (error) {
    const pill = $("role"); pill.textContent = "unreachable"; pill.className = "pill bad";
    text("updated", "cannot reach this member: " + error.message);
  }
  setTimeout(poll, ${STATUS_POLL_MS});
}
poll();
</script>
</body>
</html>
`;
}
