// The fleet page: reads the controller's admin endpoints with the token from the URL
// fragment and draws hosts, PCI flavors, pools, servers and events. Read-only.
//
// What it asks stays small whatever the fleet's size: every 10 s the fleet summary (a few
// numbers), the first page of hosts (their heart-beats) and the events since the newest
// one it has; the first page of pools and servers only when the summary moved, further
// pages when asked ("More"). What it polls it asks with the ETag of the answer it has
// (If-None-Match): while nothing changed the controller answers 304 with no body, and the
// page draws nothing again but the "ago" of each heart-beat.
"use strict";

const TOKEN_KEY = "passthru.token";
const REFRESH_MS = 10000;
const EVENT_LIMIT = 50;
const PAGE = 100;
const POOL_PAGE = 1000;
// Relative, so that the page also works behind a proxy that mounts the controller
// under a path prefix.
const API = "v2/";

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// --- the token ------------------------------------------------------------------------

// The fragment never reaches the server; once read, it is dropped from the address bar
// (and so from history and bookmarks) and kept for this tab only.
function takeToken() {
  const fromUrl = new URLSearchParams(location.hash.slice(1)).get("token");
  if (fromUrl) {
    sessionStorage.setItem(TOKEN_KEY, fromUrl);
    history.replaceState(null, "", location.pathname + location.search);
  }
  return sessionStorage.getItem(TOKEN_KEY);
}

// The last answer of each polled list ("summary", "hosts", ...): its path, ETag and body.
const answers = new Map();

// `path`'s answer; `slot` names a polled list, asked again with the ETag of the answer
// kept for it (`changed` is false when the controller said 304: that answer still holds).
async function ask(path, token, slot = null) {
  const kept = slot && answers.get(slot);
  const headers = { Authorization: `Bearer ${token}`, Accept: "application/json" };
  if (kept && kept.path === path) headers["If-None-Match"] = kept.etag;
  let response;
  try {
    // The browser's cache is left out: the page revalidates what it keeps itself.
    response = await fetch(API + path, { headers, cache: "no-store" });
  } catch (error) {
    throw new ApiError(0, `cannot reach the controller (${error.message})`);
  }
  if (response.status === 304 && headers["If-None-Match"]) return { body: kept.body, changed: false };
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const message = body?.error?.message ?? `${response.status} ${response.statusText}`;
    throw new ApiError(response.status, message);
  }
  const etag = response.headers.get("ETag");
  if (slot && etag) answers.set(slot, { path, etag, body });
  return { body, changed: true };
}

async function get(path, token) {
  return (await ask(path, token)).body;
}

// Asked first, so that a member's or an agent's token gets a message about this page
// rather than about the admin paths it cannot read.
async function requireAdmin(token) {
  const who = await get("whoami", token);
  if (who.role !== "admin") {
    throw new ApiError(403, `the fleet page needs an admin token; this is a ${who.role} token of `
      + (who.project ?? `host ${who.host}`));
  }
}

// The next page of a list: the same path with the marker of the body's next link (its
// address is the controller's own view of the URL, which a proxy may change).
function nextPath(path, body, key) {
  const next = (body[`${key}_links`] ?? []).find((link) => link.rel === "next");
  if (!next) return null;
  const marker = new URL(next.href, location.href).searchParams.get("marker");
  const url = new URL(path, "http://x/");
  url.searchParams.set("marker", marker);
  return url.pathname.slice(1) + url.search;
}

// A list drawn page by page: `items` so far, and the path of the page after them; null
// when its first page is still the one drawn (`slot` as for `ask`).
async function firstPage(path, key, token, slot) {
  const { body, changed } = await ask(path, token, slot);
  return changed ? { path, key, items: body[key], next: nextPath(path, body, key) } : null;
}

async function morePage(list, token) {
  const body = await get(list.next, token);
  return { ...list, items: list.items.concat(body[list.key]), next: nextPath(list.path, body, list.key) };
}

// What the page holds between rounds, and the token whose role was checked.
const state = { summary: null, hosts: null, pools: null, servers: null, events: [] };
let admin = null;
// The parts of the state that changed since they were last drawn (all, at first). A
// round that fails, or that a newer one overtakes, leaves its changes here to be drawn.
const pending = new Set(["summary", "hosts", "pools", "servers", "events"]);

const LISTS = {
  hosts: [`admin/os-hosts?limit=${PAGE}`, "hosts"],
  pools: [`admin/os-pci-stats?limit=${POOL_PAGE}`, "pci_stats"],
  servers: [`admin/servers?all_projects=true&limit=${PAGE}`, "servers"],
};

// The first page of list `name` into the state, if it changed.
async function fetchList(name, token) {
  const [path, key] = LISTS[name];
  const list = await firstPage(path, key, token, name);
  if (list) {
    state[name] = list;
    pending.add(name);
  }
}

async function fetchEvents(token, newest) {
  if (newest !== null && state.events.length && state.events[0].id >= newest) return;
  const since = state.events.length ? `&after=${state.events[0].id}` : "";
  const body = await get(`admin/os-events?limit=${EVENT_LIMIT}${since}`, token);
  state.events = body.events.concat(state.events).slice(0, EVENT_LIMIT);
  pending.add("events");
}

// One round: the summary, and whatever changed since the last round.
async function fetchFleet(token) {
  // A token's role never changes: asked once; a revoked token fails the summary (401).
  if (admin !== token) {
    answers.clear();
    await requireAdmin(token);
    admin = token;
  }
  const summary = await ask("admin/os-fleet-summary", token, "summary");
  const moved = summary.changed || state.summary === null;
  state.summary = summary.body.summary;
  if (moved) pending.add("summary");
  // Heart-beats move without the summary: the first page of hosts is asked every round.
  const lists = moved ? ["hosts", "pools", "servers"] : ["hosts"];
  await Promise.all([fetchEvents(token, state.summary.last_event),
    ...lists.map((name) => fetchList(name, token))]);
}

// --- drawing helpers ------------------------------------------------------------------

// Text always goes in as text nodes: names and messages come from agents and users.
function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null) continue;
    if (key === "class") node.className = value;
    else if (key === "data") Object.entries(value).forEach(([k, v]) => { node.dataset[k] = v; });
    else node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function utc(iso) {
  return iso ? new Date(iso).toISOString().slice(0, 19).replace("T", " ") : "–";
}

function ago(iso) {
  if (!iso) return "never";
  const seconds = Math.max(0, Math.round((Date.now() - new Date(iso).getTime()) / 1000));
  if (seconds < 90) return `${seconds} s ago`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 172800) return `${Math.round(seconds / 3600)} h ago`;
  return `${Math.round(seconds / 86400)} d ago`;
}

function pill(text, tone) {
  return el("span", { class: `pill ${tone}` }, text);
}

function shortId(uuid) {
  return uuid ? uuid.slice(0, 8) : "–";
}

// A used/free bar; what is neither (blocked by a PF/VF relative, or on a host that is
// down) stays grey.
function bar({ count, free, used }) {
  const other = count - free - used;
  const label = `${used} used, ${free} free${other ? `, ${other} other` : ""} of ${count}`;
  const track = el("div", { class: "bar", role: "img", "aria-label": label, title: label });
  for (const [part, value] of [["used", used], ["free", free]]) {
    const segment = el("span", { class: part });
    segment.style.width = count ? `${(100 * value) / count}%` : "0";
    track.append(segment);
  }
  return track;
}

function counts({ count, free, used }) {
  return el("span", { class: "counts" },
    el("b", { class: "used-text" }, used), " used · ",
    el("b", { class: "free-text" }, free), " free · ", count);
}

function chips(attrs) {
  return Object.entries(attrs).map(([key, value]) => el("span", { class: "chip" },
    el("span", { class: "k" }, key), "=", value));
}

function empty(columns, text) {
  return el("tr", { class: "empty" }, el("td", { colspan: columns }, text));
}

// "More" under a paged list: fetches its next page and draws again.
function more(list, name) {
  const button = document.getElementById(`more-${name}`);
  button.hidden = !list.next;
  button.onclick = async () => {
    const token = takeToken();
    button.disabled = true;
    try {
      state[name] = await morePage(list, token);
      pending.add(name);
      draw(state);
    } finally {
      button.disabled = false;
    }
  };
}

// --- the sections ---------------------------------------------------------------------

function drawSummary({ summary }) {
  const { up, down } = summary.hosts;
  // The controller counts free as a VM could get it now: nothing on a host that is down.
  const total = summary.devices;
  const servers = Object.values(summary.servers).reduce((a, b) => a + b, 0);
  const items = [
    ["Hosts", `${up} up`, down ? `${down} down` : null],
    ["Devices", total.count, null],
    ["Used", total.used, null],
    ["Free", total.free, null],
    ["PCI flavors", summary.pci_flavors.length, null],
    ["Servers", servers, null],
  ];
  document.getElementById("summary").replaceChildren(...items.map(([name, value, alarm]) =>
    el("div", { class: "stat" }, el("dt", {}, name),
      el("dd", {}, value, alarm ? el("span", { class: "alarm" }, alarm) : null))));
}

function drawHosts({ hosts }) {
  more(hosts, "hosts");
  const rows = hosts.items.map((host) => {
    const up = host.status === "up";
    const usage = { count: host.devices, free: host.free, used: host.used };
    return el("tr", { data: { host: host.name, status: host.status }, class: up ? "" : "is-down" },
      el("td", { class: "name" }, el("span", { class: `dot ${up ? "ok" : "bad"}` }), host.name),
      el("td", {}, pill(host.status, up ? "ok" : "bad")),
      el("td", { title: utc(host.last_heartbeat) + " UTC", data: { heartbeat: host.last_heartbeat ?? "" } },
        ago(host.last_heartbeat)),
      el("td", { class: "num" }, host.devices),
      el("td", { class: "usage" }, bar(usage), counts(usage)));
  });
  document.getElementById("hosts").replaceChildren(
    ...(rows.length ? rows : [empty(5, "No host has reported yet: start an agent with passthru agent --config FILE.")]));
}

function drawFlavors({ summary }) {
  const rows = summary.pci_flavors.map((flavor) => el("div",
    { class: "flavor row", data: { flavor: flavor.name, count: flavor.count, free: flavor.free, used: flavor.used } },
    el("div", { class: "label" },
      el("div", { class: "title" }, flavor.name,
        flavor.description ? el("span", { class: "description" }, flavor.description) : null),
      el("div", { class: "spec" }, Object.keys(flavor.spec).length ? chips(flavor.spec) : el("span", { class: "muted" }, "any device"))),
    el("div", { class: "usage" }, bar(flavor), counts(flavor))));
  document.getElementById("flavors").replaceChildren(
    ...(rows.length ? rows : [el("p", { class: "muted" }, "No PCI flavors yet: create one with passthru pci-flavor-create NAME.")]));
}

function poolLabel(pool) {
  const { vendor_id: vendor, product_id: product, ...rest } = pool.attrs;
  const ids = vendor || product ? `${vendor ?? "*"}:${product ?? "*"}` : null;
  const where = [pool.numa_node === null ? null : `NUMA ${pool.numa_node}`,
    pool.parent_addr ? `PF ${pool.parent_addr}` : null].filter(Boolean).join(" · ");
  return el("div", { class: "label" },
    el("div", { class: "title" }, ids ? el("span", { class: "ids" }, ids) : null, el("span", { class: "type" }, pool.dev_type)),
    el("div", { class: "spec" }, chips(rest), where ? el("span", { class: "where" }, where) : null));
}

function drawPools({ hosts, pools }) {
  more(pools, "pools");
  // The pools of the hosts drawn above (their status is the hosts list's).
  const status = new Map(hosts.items.map((host) => [host.name, host.status]));
  const byHost = new Map();
  for (const pool of pools.items) {
    if (!byHost.has(pool.host)) byHost.set(pool.host, []);
    byHost.get(pool.host).push(pool);
  }
  const cards = [...byHost].map(([name, own]) => {
    const host = { name, status: status.get(name) ?? "up" };
    const up = host.status === "up";
    return el("article", { class: `host-card${up ? "" : " is-down"}`, data: { host: host.name } },
      el("header", {}, el("span", { class: `dot ${up ? "ok" : "bad"}` }), el("b", {}, host.name),
        up ? null : pill("down", "bad"), el("span", { class: "muted" }, `${own.length} pools`)),
      own.map((pool) => el("div",
        { class: "pool row", data: { count: pool.count, free: pool.free, used: pool.used } },
        poolLabel(pool), el("div", { class: "usage" }, bar(pool), counts(pool)))));
  });
  document.getElementById("pools").replaceChildren(...cards);
}

function deviceChip(device) {
  const network = device.tags?.["e.physical_network"];
  return el("span", { class: "device", data: { device: device.address }, title: [device.vendor_name, device.product_name].filter(Boolean).join(" ") },
    el("span", { class: "addr" }, device.address), " ", device.dev_type, network ? ` · ${network}` : "");
}

function drawServers({ servers }) {
  more(servers, "servers");
  const tone = { ACTIVE: "ok", BUILD: "info", ERROR: "bad" };
  const rows = servers.items.map((server) => {
    const devices = server.pci_requests.flatMap((r) => r.devices);
    return el("tr", { data: { server: server.name } },
      el("td", { class: "name", title: server.id }, server.name, el("span", { class: "muted id" }, shortId(server.id))),
      el("td", {}, server.project_id),
      el("td", { title: server.fault ?? "" }, pill(server.status, tone[server.status] ?? "muted")),
      el("td", {}, server.host ?? "–"),
      el("td", {}, server.flavor ?? "–"),
      el("td", { class: "devices" }, devices.length ? devices.map(deviceChip) : null,
        server.fault ? el("span", { class: "fault" }, server.fault) : null,
        devices.length || server.fault ? null : el("span", { class: "muted" }, "none")));
  });
  document.getElementById("servers").replaceChildren(...(rows.length ? rows : [empty(6, "No servers.")]));
}

function eventTone(kind) {
  if (kind === "host-down" || kind === "device-missing" || kind === "device-identity-changed" ||
      kind === "server-error") return "bad";
  if (kind === "device-removed" || kind === "server-deleted") return "warn";
  if (kind === "device-claimed" || kind === "server-created") return "info";
  if (kind === "host-up" || kind === "device-freed" || kind === "device-returned") return "ok";
  return "muted";
}

function drawEvents({ events }) {
  const rows = events.map((event) => el("tr", { data: { kind: event.kind } },
    el("td", { class: "time" }, utc(event.time)),
    el("td", {}, pill(event.kind, eventTone(event.kind))),
    el("td", { class: "nowrap" }, event.host ?? "–"),
    el("td", { class: "addr" }, event.device ?? "–"),
    el("td", { class: "nowrap", title: event.server ?? "" }, event.server_name ?? shortId(event.server)),
    el("td", { class: "message" }, event.message)));
  document.getElementById("events").replaceChildren(...(rows.length ? rows : [empty(6, "No events yet.")]));
}

// What each part of the state draws (pools show their host's status from the hosts).
const SECTIONS = {
  summary: [drawSummary, drawFlavors],
  hosts: [drawHosts, drawPools],
  pools: [drawPools],
  servers: [drawServers],
  events: [drawEvents],
};

// The sections whose part of the state changed; every heart-beat's "ago" moves anyway.
function draw(fleet) {
  const sections = new Set([...pending].flatMap((name) => SECTIONS[name]));
  pending.clear();
  for (const section of sections) section(fleet);
  for (const cell of document.querySelectorAll("#hosts td[data-heartbeat]")) {
    cell.textContent = ago(cell.dataset.heartbeat || null);
  }
  const main = document.getElementById("fleet");
  main.hidden = false;
  main.dataset.loaded = "true";
  document.getElementById("updated").textContent = `updated ${utc(new Date().toISOString()).slice(11)} UTC`;
}

// --- the notice and the loop ----------------------------------------------------------

const HOW = "Open this page as /ui#token=TOKEN with an admin token (passthru serve writes one to "
  + "admin-token in its data dir). The token stays in this browser tab; it is never sent in a URL.";

function notify(state, title, detail) {
  const notice = document.getElementById("notice");
  notice.dataset.state = state;
  notice.className = `notice ${state === "unreachable" ? "warn" : "bad"}`;
  notice.replaceChildren(el("strong", {}, title), " ", detail ?? "", el("p", {}, state === "unreachable" ? "" : HOW));
  notice.hidden = false;
}

function refuse(state, title, detail) {
  sessionStorage.removeItem(TOKEN_KEY);
  document.getElementById("fleet").hidden = true;
  document.getElementById("forget").hidden = true;
  notify(state, title, detail);
}

let timer = null;
// A new token (hashchange) may start a round while another is still fetching: only the
// newest round draws and schedules the next one.
let round = 0;

async function refresh() {
  clearTimeout(timer);
  const mine = ++round;
  const token = takeToken();
  if (!token) {
    notify("no-token", "No token.", "This page shows the fleet to admins only.");
    return;
  }
  document.getElementById("forget").hidden = false;
  try {
    await fetchFleet(token);
    if (mine !== round) return;
    draw(state);
    document.getElementById("notice").hidden = true;
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    if (mine !== round) return;
    if (error.status === 401) return refuse("refused", "The controller refused this token:", error.message);
    if (error.status === 403) return refuse("forbidden", "This token may not read the fleet:", error.message);
    // A failed round may have left half of the detail behind: the next one asks anew.
    state.summary = null;
    answers.clear();
    notify("unreachable", "Could not refresh:", `${error.message}. Retrying every ${REFRESH_MS / 1000} s.`);
  }
  timer = setTimeout(refresh, REFRESH_MS);
}

document.getElementById("forget").addEventListener("click", () => {
  clearTimeout(timer);
  refuse("no-token", "Token forgotten.", "");
});
window.addEventListener("hashchange", refresh);
refresh();
