// logd's web page: live tail, search, histogram, event detail and status, on the read API
// (docs/http-api.md). Plain JavaScript, no library. Event text is only ever set through
// textContent; the read secret lives in sessionStorage and the Authorization header only.
"use strict";

const KEEP_ROWS = 2000; // events kept in the list (and held while paused), newest first
const ROW_PX = 20; // every row's height (app.css .row): the list draws only the rows in view
// The list changes at most 10 times a second (each time at an animation frame): no one reads
// faster, and the page keeps its frames for scrolling and clicks at 1,000 events/s.
const DRAW_EVERY_MS = 100;
const BACKLOG = 200; // events a live view starts with (/tail n=) and a page of older ones
const MAX_LINE = 4 << 20; // a stream line longer than this is not logd's: reconnect
const HITS_EVERY_MS = 2000; // the histogram follows the live tail at most this often
const STATUS_EVERY_MS = 5000;
const LEVELS = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"];
const STACK = [...LEVELS, "-"]; // bottom to top in a bar
const FORM_FIELDS = ["env", "svc", "fn", "host", "lvl", "txt", "since", "until"];
const SECRET_KEY = "logd.readSecret";
const SVG = "http://www.w3.org/2000/svg";

const $ = (id) => document.getElementById(id);
const state = {
  secret: sessionStorage.getItem(SECRET_KEY),
  utc: localStorage.getItem("logd.utc") !== "0",
  params: new URLSearchParams(), // the view's filters, as the API takes them
  view: 0, // bumped on every new view: stale streams and answers are ignored
  tail: null, // AbortController of the live stream
  lastId: null, // the newest event id the stream gave
  oldestId: null, // the oldest event shown, for before=
  pending: [], // events to draw at the next animation frame, oldest first (at most KEEP_ROWS:
  // a tab in the background gets no animation frames while the stream goes on)
  skipped: 0, // events that came after KEEP_ROWS were already pending
  frame: 0,
  drawn: 0, // when the list last changed (the animation frames' clock)
  counted: 0, // an animation frame is asked for to show the waiting count
  items: [], // what the list holds, newest first: events and markers, at most KEEP_ROWS
  scrolled: 0, // an animation frame is asked for to draw the rows in view
  paused: false,
  waiting: [], // events that arrived while paused (the newest KEEP_ROWS)
  waitingCount: 0,
  trimmedTop: false, // newer rows were dropped to keep the list bounded (paging back)
  hitsDue: false,
  hitsTimer: 0,
  statusTimer: 0,
};

// --- the API -------------------------------------------------------------------------

class Refused extends Error {}

async function api(path, params) {
  const url = [...params].length ? `${path}?${params}` : path;
  const response = await fetch(url, {
    headers: { Authorization: state.secret, Accept: "application/json" },
    cache: "no-store",
  });
  if (response.ok) return response;
  throw await refusal(response);
}

// An error answer as one sentence for the person; 401 also signs out.
async function refusal(response) {
  let text = `HTTP ${response.status}`;
  try {
    text = (await response.json()).error || text;
  } catch {
    // not JSON: keep the status
  }
  if (response.status === 401) {
    signOut(`The server refused the read secret: ${text}.`);
    return new Refused(text);
  }
  if (response.status === 429) {
    const wait = response.headers.get("Retry-After");
    return new Error(`Throttled by the server: ${text}` + (wait ? ` (retry in ${wait} s)` : ""));
  }
  return new Error(text);
}

function say(text) {
  $("msg").textContent = text;
}

// --- sign-in ---------------------------------------------------------------------------

async function signIn(event) {
  event.preventDefault();
  const secret = $("secret").value;
  const note = $("signin-msg");
  note.textContent = "Checking…";
  let response;
  try {
    response = await fetch("/?limit=1", { headers: { Authorization: secret }, cache: "no-store" });
  } catch (err) {
    note.textContent = `Could not reach logd: ${err.message}`;
    return;
  }
  if (response.ok) {
    state.secret = secret;
    sessionStorage.setItem(SECRET_KEY, secret);
    $("secret").value = "";
    note.textContent = "";
    showApp();
    return;
  }
  if (response.status === 429) {
    const wait = response.headers.get("Retry-After") || "a few";
    note.textContent = `Too many failed sign-ins from this address: the server refuses more for ${wait} s.`;
  } else if (response.status === 401) {
    note.textContent = "The server refused this secret: it is not a read secret logd accepts.";
  } else {
    note.textContent = `The server answered ${response.status}; try again.`;
  }
}

function signOut(reason) {
  stopLive();
  state.secret = null;
  sessionStorage.removeItem(SECRET_KEY);
  $("app").hidden = true;
  $("signout").hidden = true;
  $("signin").hidden = false;
  $("signin-msg").textContent = reason || "";
  $("conn").textContent = "";
  $("secret").focus();
}

function showApp() {
  $("signin").hidden = true;
  $("app").hidden = false;
  $("signout").hidden = false;
  loadView();
}

// --- the view's filters and the page's URL -------------------------------------------------

// The URL holds the API's own filter parameters (never the secret): a view can be shared.
function readUrl() {
  const params = new URLSearchParams(location.search);
  const form = $("filters");
  for (const name of FORM_FIELDS) form.elements[name].value = params.get(name) || "";
  const attrs = [];
  for (const [name, value] of params) {
    if (name.startsWith("attr.") && !name.endsWith("!")) attrs.push(`${name.slice(5)}=${value}`);
  }
  form.elements.attr.value = attrs.join(" ");
  state.params = params;
}

// The form's fields as API parameters; parameters the form has no field for (url=, status=,
// svc!=, ...) are kept as the URL gave them.
function formParams() {
  const form = $("filters");
  const params = new URLSearchParams();
  for (const [name, value] of state.params) {
    const ours = FORM_FIELDS.includes(name) || (name.startsWith("attr.") && !name.endsWith("!"));
    if (!ours) params.append(name, value);
  }
  for (const name of FORM_FIELDS) {
    const value = form.elements[name].value.trim();
    if (value) params.set(name, value);
  }
  for (const pair of form.elements.attr.value.trim().split(/\s+/)) {
    const eq = pair.indexOf("=");
    if (eq > 0) params.append(`attr.${pair.slice(0, eq)}`, pair.slice(eq + 1));
    else if (pair) params.append(`attr.${pair}`, "*");
  }
  return params;
}

function search(event) {
  if (event) event.preventDefault();
  state.params = formParams();
  const query = state.params.toString();
  history.pushState(null, "", query ? `?${query}` : location.pathname);
  loadView();
}

function narrow(name, value) {
  const form = $("filters");
  if (name.startsWith("attr.")) {
    const pair = `${name.slice(5)}=${value}`;
    const now = form.elements.attr.value.trim();
    form.elements.attr.value = now ? `${now} ${pair}` : pair;
  } else {
    form.elements[name].value = value;
  }
  search();
}

function withOut(params, ...names) {
  const copy = new URLSearchParams(params);
  for (const name of names) copy.delete(name);
  return copy;
}

// --- the list ------------------------------------------------------------------------------

function loadView() {
  stopLive();
  state.view += 1;
  state.lastId = null;
  state.oldestId = null;
  state.pending = [];
  state.skipped = 0;
  state.waiting = [];
  state.waitingCount = 0;
  state.paused = false;
  state.trimmedTop = false;
  state.items = [];
  $("list").scrollTop = 0;
  showRows();
  $("detail").hidden = true;
  say("");
  showPause();
  loadHits();
  if (state.params.get("until")) {
    $("conn").textContent = "search";
    loadPage(state.view, state.params);
  } else {
    live(state.view);
  }
}

// A page of stored events, newest first (GET /), appended below what is shown.
async function loadPage(view, params) {
  const query = withOut(params, "n", "after");
  query.set("limit", String(BACKLOG));
  if (state.oldestId) query.set("before", state.oldestId);
  let events;
  try {
    events = await (await api("/", query)).json();
  } catch (err) {
    if (view === state.view && !(err instanceof Refused)) say(err.message);
    return;
  }
  if (view !== state.view) return;
  for (const item of events) {
    if (item.truncated) {
      state.items.push({ marker: `more matched than one answer holds (${item.max_bytes} bytes)` });
    } else {
      state.items.push(item);
      state.oldestId = item.id;
    }
  }
  $("older").disabled = events.length < BACKLOG;
  const over = state.items.length - KEEP_ROWS;
  if (over > 0) {
    state.items.splice(0, over); // paging back: the newest go
    state.trimmedTop = true;
    $("list").scrollTop -= over * ROW_PX;
  }
  showRows();
  if (!state.items.length) say("No event matches.");
}

async function live(view) {
  let ask = new URLSearchParams({ n: String(BACKLOG) });
  let wait = 500;
  while (view === state.view) {
    const control = new AbortController();
    state.tail = control;
    const params = withOut(state.params, "until", "before");
    for (const [name, value] of ask) params.set(name, value);
    try {
      $("conn").textContent = "connecting…";
      const response = await fetch(`/tail?${params}`, {
        headers: { Authorization: state.secret, Accept: "application/x-ndjson" },
        signal: control.signal,
        cache: "no-store",
      });
      if (!response.ok) {
        const err = await refusal(response);
        if (err instanceof Refused) return;
        say(err.message);
        if (response.status === 400) return; // a bad filter: retrying cannot help
      } else {
        $("conn").textContent = "live";
        $("conn").className = "conn on";
        say(""); // a refusal or a break told before is over
        wait = 500;
        await readLines(response.body.getReader(), view);
      }
    } catch (err) {
      if (view !== state.view) return;
      say(`The live stream broke (${err.message}); reconnecting.`);
    }
    if (view !== state.view) return;
    $("conn").textContent = "reconnecting…";
    $("conn").className = "conn off";
    // Resume after the last event shown: the server sends what came since, and a gap
    // notice when some of it is gone.
    ask = state.lastId
      ? new URLSearchParams({ after: state.lastId })
      : new URLSearchParams({ n: String(BACKLOG) });
    await new Promise((resolve) => setTimeout(resolve, wait));
    wait = Math.min(wait * 2, 5000);
  }
}

async function readLines(reader, view) {
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done || view !== state.view) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, end);
      buffer = buffer.slice(end + 1);
      if (line) arrived(JSON.parse(line));
    }
    if (buffer.length > MAX_LINE) throw new Error("a line too long");
  }
}

function arrived(item) {
  if (item.gap) {
    item = { marker: "events were lost here: some were evicted before this page read them" };
  } else if (item.dropped !== undefined) {
    item = { marker: `${item.dropped} events lost here: this page read too slowly` };
  } else {
    state.lastId = item.id;
    if (state.oldestId === null) state.oldestId = item.id;
    state.hitsDue = true;
  }
  if (state.paused) {
    state.waitingCount += 1;
    state.waiting.push(item);
    if (state.waiting.length > KEEP_ROWS) state.waiting.shift();
    if (!state.counted) state.counted = requestAnimationFrame(showPause);
    return;
  }
  state.pending.push(item);
  if (state.pending.length > KEEP_ROWS) {
    state.pending.shift();
    state.skipped += 1;
  }
  if (!state.frame) state.frame = requestAnimationFrame(draw);
}

// One update per animation frame at most, whatever the rate: the new events go on top of the
// held ones and only the rows in view are drawn (~20 elements whatever the list holds), so
// 1,000 events/s costs what the visible rows cost.
function draw(now) {
  if (now - state.drawn < DRAW_EVERY_MS) {
    state.frame = requestAnimationFrame(draw);
    return;
  }
  state.drawn = now;
  state.frame = 0;
  const fresh = state.pending.reverse();
  const skipped = state.skipped;
  state.pending = [];
  state.skipped = 0;
  if (skipped) fresh.push({ marker: `${skipped} events not drawn (more than ${KEEP_ROWS} at once)` });
  state.items = fresh.concat(state.items);
  if (state.items.length > KEEP_ROWS) {
    state.items.length = KEEP_ROWS;
    const last = state.items.findLast((item) => item.id);
    if (last) state.oldestId = last.id;
  }
  const list = $("list");
  showRows();
  // Someone reading further down keeps the same rows in view while new ones come on top.
  if (list.scrollTop > 0) list.scrollTop += fresh.length * ROW_PX;
}

// The rows in view, in a window moved to where they are in the list's full height.
function showRows() {
  state.scrolled = 0;
  const list = $("list");
  const win = $("rows");
  $("rows-height").style.height = `${state.items.length * ROW_PX}px`;
  const first = Math.max(0, Math.floor(list.scrollTop / ROW_PX));
  const count = Math.ceil(list.clientHeight / ROW_PX) + 1;
  const rows = state.items.slice(first, first + count).map((item) => (item.marker ? marker(item.marker) : row(item)));
  win.style.transform = `translateY(${first * ROW_PX}px)`;
  win.replaceChildren(...rows);
  const n = state.items.filter((item) => item.id).length;
  $("shown").textContent = `${n} event${n === 1 ? "" : "s"}` + (state.items.length >= KEEP_ROWS ? ` (the list keeps ${KEEP_ROWS})` : "");
}

function listScroll() {
  if (!state.scrolled) state.scrolled = requestAnimationFrame(showRows);
}

function row(event) {
  const line = document.createElement("div");
  line.className = `row lvl-${event.lvl || "NONE"}`;
  line.tabIndex = 0;
  line.logdEvent = event;
  line.dataset.id = event.id;
  line.append(
    span("t", showTime(event.t)),
    span("lvl", event.lvl || "-"),
    span("where", [event.env, event.svc, event.fn].filter(Boolean).join(" / ")),
    span("txt", event.txt || ""),
  );
  return line;
}

function marker(text) {
  const line = document.createElement("div");
  line.className = "row marker";
  line.textContent = text;
  return line;
}

function span(cls, text) {
  const part = document.createElement("span");
  part.className = cls;
  part.textContent = text;
  return part;
}

function stopLive() {
  if (state.tail) state.tail.abort();
  state.tail = null;
  if (state.frame) cancelAnimationFrame(state.frame);
  state.frame = 0;
}

// --- pause ---------------------------------------------------------------------------------

function togglePause() {
  if (state.paused) {
    state.paused = false;
    const missed = state.waitingCount - state.waiting.length;
    if (missed > 0) state.pending.push({ marker: `${missed} events that arrived while paused are not shown` });
    state.pending.push(...state.waiting);
    state.waiting = [];
    state.waitingCount = 0;
    if (state.trimmedTop) {
      loadView(); // newer rows were dropped while paging back: start the live view anew
      return;
    }
    if (!state.frame) state.frame = requestAnimationFrame(draw);
  } else {
    state.paused = true;
  }
  showPause();
}

function showPause() {
  state.counted = 0;
  $("pause").textContent = state.paused ? "Resume" : "Pause";
  $("pause").setAttribute("aria-pressed", String(state.paused));
  $("waiting").textContent = state.paused ? `${state.waitingCount} waiting` : "";
}

function older() {
  if (!state.paused && !state.params.get("until")) togglePause(); // hold the list still
  loadPage(state.view, state.params);
}

// --- times ---------------------------------------------------------------------------------

const pad = (n, w = 2) => String(n).padStart(w, "0");

// `t` is RFC 3339 UTC with nine fraction digits; local time shows milliseconds.
function showTime(t) {
  if (state.utc) return t.replace("T", " ").replace(/(\.\d{3})\d*Z$/, "$1Z");
  const d = new Date(t);
  return (
    `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`
  );
}

function toggleZone() {
  state.utc = !state.utc;
  localStorage.setItem("logd.utc", state.utc ? "1" : "0");
  showZone();
  showRows();
  if (!$("detail").hidden && $("detail").logdEvent) showDetail($("detail").logdEvent);
  drawAxis();
}

function showZone() {
  $("tz").textContent = state.utc ? "UTC" : "local time";
}

// --- event detail --------------------------------------------------------------------------

const FIELDS = [
  ["t", "time"],
  ["id", "id"],
  ["lvl", "level"],
  ["env", "env", "env"],
  ["svc", "svc", "svc"],
  ["fn", "fn", "fn"],
  ["host", "host", "host"],
  ["pid", "pid"],
  ["http_method", "method"],
  ["url", "url"],
  ["response_status", "status"],
];

function showDetail(event) {
  const pane = $("detail");
  pane.logdEvent = event;
  const table = document.createElement("dl");
  const add = (label, value, filter) => {
    const dt = document.createElement("dt");
    dt.textContent = label;
    const dd = document.createElement("dd");
    dd.textContent = value;
    if (filter) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "narrow";
      button.textContent = "filter";
      button.title = `Show only events with ${filter} = this value`;
      button.addEventListener("click", () => narrow(filter, value));
      dd.append(" ", button);
    }
    table.append(dt, dd);
  };
  for (const [key, label, filter] of FIELDS) {
    if (event[key] === undefined) continue;
    add(label, key === "t" ? `${showTime(event.t)} (${event.t})` : String(event[key]), filter);
  }
  for (const [key, value] of Object.entries(event.attrs || {})) add(key, value, `attr.${key}`);
  const title = document.createElement("h2");
  title.textContent = "Event";
  const close = document.createElement("button");
  close.type = "button";
  close.className = "close";
  close.textContent = "Close";
  close.addEventListener("click", () => {
    pane.hidden = true;
  });
  const text = document.createElement("pre");
  text.className = `txt lvl-${event.lvl || "NONE"}`;
  text.textContent = event.txt || "";
  pane.replaceChildren(close, title, text, table);
  if (event.stack_trace) {
    const stack = document.createElement("pre");
    stack.className = "stack";
    stack.textContent = event.stack_trace;
    const heading = document.createElement("h3");
    heading.textContent = "Stack trace";
    pane.append(heading, stack);
  }
  pane.hidden = false;
}

function listClick(event) {
  const line = event.target.closest(".row");
  if (line && line.logdEvent) showDetail(line.logdEvent);
}

function listKey(event) {
  if (event.key === "Enter") listClick(event);
}

// --- histogram -----------------------------------------------------------------------------

const hist = { buckets: [], step: 1, drag: null };

async function loadHits() {
  clearTimeout(state.hitsTimer);
  state.hitsDue = false;
  const view = state.view;
  const params = withOut(state.params, "before", "n", "after", "format");
  params.set("by", "lvl");
  try {
    const answer = await (await api("/hits", params)).json();
    if (view !== state.view) return;
    hist.buckets = answer.buckets;
    hist.step = answer.step_s;
    drawHits();
  } catch (err) {
    if (view === state.view && !(err instanceof Refused)) say(err.message);
  }
  if (view === state.view && !state.params.get("until")) {
    state.hitsTimer = setTimeout(followHits, HITS_EVERY_MS);
  }
}

function followHits() {
  if (state.hitsDue && !state.paused) loadHits();
  else state.hitsTimer = setTimeout(followHits, HITS_EVERY_MS);
}

// One <g> per bucket, its counts in data-* attributes (what was drawn, readable by a test
// or a tool), a <title> for the tooltip, a rect per level stacked with errors on top.
function drawHits() {
  const svg = $("hist");
  const width = Math.max(hist.buckets.length, 1) * 10;
  svg.setAttribute("viewBox", `0 0 ${width} 100`);
  svg.setAttribute("preserveAspectRatio", "none");
  const most = Math.max(1, ...hist.buckets.map((b) => b.total));
  const bars = [];
  hist.buckets.forEach((bucket, i) => {
    const g = document.createElementNS(SVG, "g");
    g.setAttribute("class", "bucket");
    g.dataset.i = String(i);
    g.dataset.t = bucket.t;
    g.dataset.total = String(bucket.total);
    g.dataset.by = JSON.stringify(bucket.by || {});
    const hit = document.createElementNS(SVG, "rect"); // the whole column takes clicks
    hit.setAttribute("class", "hit");
    setBox(hit, i * 10, 0, 10, 100);
    g.append(hit);
    let y = 100;
    for (const level of STACK) {
      const n = (bucket.by || {})[level];
      if (!n) continue;
      const h = (n / most) * 96;
      y -= h;
      const bar = document.createElementNS(SVG, "rect");
      bar.setAttribute("class", `b-${level === "-" ? "NONE" : level}`);
      setBox(bar, i * 10 + 1, y, 8, h);
      g.append(bar);
    }
    const title = document.createElementNS(SVG, "title");
    const parts = STACK.filter((l) => (bucket.by || {})[l]).map((l) => `${l} ${bucket.by[l]}`);
    title.textContent = `${showTime(bucket.t)}: ${bucket.total} events` + (parts.length ? ` (${parts.join(", ")})` : "");
    g.append(title);
    bars.push(g);
  });
  const band = document.createElementNS(SVG, "rect");
  band.setAttribute("class", "band");
  band.id = "band";
  setBox(band, 0, 0, 0, 100);
  svg.replaceChildren(...bars, band);
  drawAxis();
}

function setBox(rect, x, y, w, h) {
  rect.setAttribute("x", String(x));
  rect.setAttribute("y", String(y));
  rect.setAttribute("width", String(w));
  rect.setAttribute("height", String(h));
}

function drawAxis() {
  const axis = $("hist-axis");
  const b = hist.buckets;
  if (!b.length) {
    axis.replaceChildren(span("", "no events in this range"));
    return;
  }
  const total = b.reduce((sum, x) => sum + x.total, 0);
  axis.replaceChildren(
    span("from", showTime(b[0].t)),
    span("sum", `${total} events, ${hist.step} s per bar; drag or click to narrow the time`),
    span("to", showTime(isoSecond(Date.parse(b[b.length - 1].t) + hist.step * 1000))),
  );
}

// Like the buckets' own `t`: whole seconds need no fraction.
function isoSecond(ms) {
  return new Date(ms).toISOString().replace(".000Z", "Z");
}

function bucketAt(event) {
  const g = event.target.closest && event.target.closest("g.bucket");
  return g ? Number(g.dataset.i) : null;
}

function dragStart(event) {
  const i = bucketAt(event);
  if (i === null) return;
  hist.drag = { from: i, to: i };
  showBand();
  event.preventDefault();
}

function dragMove(event) {
  if (!hist.drag) return;
  const i = bucketAt(event);
  if (i !== null) hist.drag.to = i;
  showBand();
}

function dragEnd() {
  if (!hist.drag) return;
  const lo = Math.min(hist.drag.from, hist.drag.to);
  const hi = Math.max(hist.drag.from, hist.drag.to);
  hist.drag = null;
  const start = Date.parse(hist.buckets[lo].t);
  const end = Date.parse(hist.buckets[hi].t) + hist.step * 1000 - 1;
  const form = $("filters");
  form.elements.since.value = new Date(start).toISOString();
  form.elements.until.value = new Date(end).toISOString();
  search();
}

function showBand() {
  const band = $("band");
  if (!band || !hist.drag) return;
  const lo = Math.min(hist.drag.from, hist.drag.to);
  const hi = Math.max(hist.drag.from, hist.drag.to);
  setBox(band, lo * 10, 0, (hi - lo + 1) * 10, 100);
}

// --- status --------------------------------------------------------------------------------

function toggleStatus() {
  const pane = $("status");
  pane.hidden = !pane.hidden;
  $("status-toggle").setAttribute("aria-pressed", String(!pane.hidden));
  clearTimeout(state.statusTimer);
  if (!pane.hidden) loadStatus();
}

async function loadStatus() {
  const pane = $("status");
  try {
    const response = await fetch("/info", { cache: "no-store" });
    if (!response.ok) throw await refusal(response);
    drawStatus(await response.json());
  } catch (err) {
    pane.replaceChildren(span("msg", `Status unavailable: ${err.message}`));
  }
  if (!pane.hidden) state.statusTimer = setTimeout(loadStatus, STATUS_EVERY_MS);
}

function bytes(n) {
  if (n === null || n === undefined) return "-";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

function table(caption, head, rows) {
  const t = document.createElement("table");
  const cap = document.createElement("caption");
  cap.textContent = caption;
  const tr = document.createElement("tr");
  for (const h of head) {
    const th = document.createElement("th");
    th.textContent = h;
    tr.append(th);
  }
  t.append(cap, tr);
  for (const cells of rows) {
    const line = document.createElement("tr");
    for (const cell of cells) {
      const td = document.createElement("td");
      if (cell instanceof Node) td.append(cell);
      else td.textContent = String(cell);
      line.append(td);
    }
    t.append(line);
  }
  return t;
}

function fill(used, capacity) {
  const box = document.createElement("span");
  box.className = "fill";
  if (capacity) {
    const meter = document.createElement("meter");
    meter.max = capacity;
    meter.value = Math.min(used, capacity);
    meter.high = capacity * 0.9;
    box.append(meter, " ");
  }
  box.append(`${bytes(used)} of ${bytes(capacity)}`);
  return box;
}

function drawStatus(info) {
  const s = info.store;
  const rings = s.rings.map((r) => [r.key, r.events, fill(r.bytes, r.capacity_bytes), r.evicted]);
  if (s.rings_other && s.rings_other.rings) {
    const o = s.rings_other;
    rings.push([`${o.rings} more rings`, o.events, fill(o.bytes, o.capacity_bytes), o.evicted]);
  }
  const m = info.memory;
  const parts = Object.keys(m.reserved).map((p) => [p, fill(m.used[p] ?? 0, m.reserved[p])]);
  const u = info.udp;
  const rejects = Object.entries(u.rejected).map(([why, n]) => [why, n]);
  const keys = info.secrets.keys.map((k) => [k.role, k.stage, k.key_id, k.frames_recent]);
  const head = document.createElement("p");
  head.textContent =
    `logd ${info.version}, up ${Math.round(info.uptime_s)} s, ${s.writes} events stored, ` +
    `${u.received} datagrams received, ${u.accepted} accepted, kernel drops ${u.kernel_drops ?? "n/a"}, ` +
    `tails ${info.tail.subscribers} (lost ${info.tail.dropped}), queries refused ${info.queries.refused}, ` +
    `failed sign-ins throttled ${info.http.auth_throttled}. Memory limit ${bytes(m.limit_bytes)} ` +
    `(${m.source}), RSS ${bytes(m.rss_bytes)}.`;
  const tables = [
    table(`Rings (${s.ring_count})`, ["ring", "events", "bytes", "evicted"], rings),
    table("Memory", ["part", "used of reserved"], parts),
    table("Refused datagrams", ["reason", "count"], rejects),
    table(`Keys (${info.secrets.source})`, ["role", "stage", "key id", "frames recently"], keys),
  ];
  for (const [i, [, n]] of rejects.entries()) {
    if (n) tables[2].rows[i + 1].className = "bad";
  }
  $("status").replaceChildren(head, ...tables);
}

// --- start -----------------------------------------------------------------------------------

function start() {
  $("signin-form").addEventListener("submit", signIn);
  $("signout").addEventListener("click", () => signOut("Signed out."));
  $("filters").addEventListener("submit", search);
  $("clear").addEventListener("click", () => {
    $("filters").reset();
    search();
  });
  $("pause").addEventListener("click", togglePause);
  $("older").addEventListener("click", older);
  $("tz").addEventListener("click", toggleZone);
  $("status-toggle").addEventListener("click", toggleStatus);
  $("list").addEventListener("click", listClick);
  $("list").addEventListener("keydown", listKey);
  $("list").addEventListener("scroll", listScroll);
  const svg = $("hist");
  svg.addEventListener("pointerdown", dragStart);
  svg.addEventListener("pointermove", dragMove);
  window.addEventListener("pointerup", dragEnd);
  window.addEventListener("popstate", () => {
    readUrl();
    if (state.secret) loadView();
  });
  showZone();
  readUrl();
  if (state.secret) showApp();
  else signOut("");
}

start();
