// meshpilot web console: polls the admin API (/graph, /proxies, /mesh) and draws what it says.
// No framework and no build step: the control plane serves this file as it is.
"use strict";

const POLL_MS = 1500;
const TOKEN_KEY = "meshpilot-admin-token";
const SVG = "http://www.w3.org/2000/svg";
const COLUMN_GAP = 430;
const NODE_WIDTH = 150;
const HEAD_HEIGHT = 28;
const ROW_HEIGHT = 26;
const NODE_GAP = 28;
const MARGIN = 20;
const TYPE_NAMES = {
  Cluster: "CDS", ClusterLoadAssignment: "EDS", Listener: "LDS",
  ScopedRouteConfiguration: "SRDS", RouteConfiguration: "RDS", Secret: "SDS",
};

class Unauthorized extends Error {}

const $ = (id) => document.getElementById(id);

// The token comes once in the URL's fragment (#token=..., never sent to the server) or from the
// login form, and is kept for this tab only.
function takeTokenFromFragment() {
  const fragment = new URLSearchParams(location.hash.slice(1));
  if (fragment.has("token")) {
    sessionStorage.setItem(TOKEN_KEY, fragment.get("token"));
    history.replaceState(null, "", location.pathname + location.search);
  }
}

async function getJSON(path) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  const reply = await fetch(path, { headers, cache: "no-store" });
  if (reply.status === 401) throw new Unauthorized();
  if (!reply.ok) throw new Error(`${path} answered ${reply.status}`);
  return reply.json();
}

function el(tag, attributes = {}, text = "") {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  node.textContent = text;
  return node;
}

function svg(tag, attributes = {}, text = "") {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  if (text) node.textContent = text;
  return node;
}

// --- service graph -----------------------------------------------------------------------------

function nodeHeight(node) {
  return HEAD_HEIGHT + ROW_HEIGHT * Math.max(node.versions.length, 1);
}

// Columns by call depth (from the server), nodes stacked in each: where every box and row is.
function layout(nodes) {
  const columns = new Map();
  const places = new Map();
  for (const node of nodes) {
    const y = columns.get(node.depth) ?? MARGIN;
    const x = MARGIN + node.depth * COLUMN_GAP;
    places.set(node.service, { x, y, node });
    columns.set(node.depth, y + nodeHeight(node) + NODE_GAP);
  }
  const width = MARGIN * 2 + NODE_WIDTH + COLUMN_GAP * Math.max(0, ...columns.keys());
  const height = Math.max(MARGIN, ...columns.values());
  return { places, width, height };
}

function versionY(place, version) {
  const row = Math.max(place.node.versions.indexOf(version), 0);
  return place.y + HEAD_HEIGHT + ROW_HEIGHT * row + (ROW_HEIGHT - 4) / 2;
}

function drawNode(place) {
  const { node, x, y } = place;
  const group = svg("g", {
    class: node.service === "unknown" ? "node external" : "node",
    "data-service": node.service,
  });
  group.append(svg("rect", { class: "box", x, y, width: NODE_WIDTH, height: nodeHeight(node) }));
  const name = node.service === "unknown" ? "unknown (no sidecar)" : node.service;
  group.append(svg("text", { class: "name", x: x + 8, y: y + 17 }, name));
  node.versions.forEach((version, row) => {
    const top = y + HEAD_HEIGHT + ROW_HEIGHT * row;
    group.append(svg("rect", {
      class: "version", x: x + 6, y: top, width: NODE_WIDTH - 12, height: ROW_HEIGHT - 4,
    }));
    group.append(svg("text", { x: x + 12, y: top + 14 }, version));
  });
  const count = node.proxies === 1 ? "1 proxy" : `${node.proxies} proxies`;
  group.append(svg("title", {}, `${node.service}: ${count}`));
  return group;
}

function percent(rate) {
  return `${(rate * 100).toFixed(rate > 0 && rate < 0.1 ? 1 : 0)}%`;
}

function edgeLabel(edge) {
  const figures = `${edge.rps.toFixed(2)} rps · ${percent(edge.error_rate)} err · ` +
    `p99 ${edge.p99_ms.toFixed(1)} ms`;
  return edge.denied > 0 ? `${figures} · ${edge.denied} denied` : figures;
}

// `stacked`: how many edges into the same version were labelled before this one (their labels
// sit above each other, next to the arrow heads).
function drawEdge(edge, places, stacked) {
  const from = places.get(edge.source);
  const to = places.get(edge.destination);
  const x1 = from.x + NODE_WIDTH;
  const y1 = from.y + HEAD_HEIGHT / 2;
  const x2 = to.x;
  const y2 = versionY(to, edge.version);
  const bend = Math.max(40, Math.abs(x2 - x1) / 2);
  const kind = edge.denied > 0 ? "edge denied" : edge.error_rate > 0 ? "edge errors" : "edge";
  const group = svg("g", {
    class: kind,
    "data-source": edge.source,
    "data-destination": edge.destination,
    "data-version": edge.version,
    "data-rps": edge.rps,
    "data-denied": edge.denied,
  });
  group.append(svg("path", {
    d: `M${x1},${y1} C${x1 + bend},${y1} ${x2 - bend},${y2} ${x2},${y2}`,
    "marker-end": edge.denied > 0 ? "url(#arrow-denied)" : "url(#arrow)",
  }));
  group.append(svg("text", { x: x2 - 10, y: y2 - 5 - 13 * stacked, "text-anchor": "end" },
    edgeLabel(edge)));
  group.append(svg("title", {},
    `${edge.source} → ${edge.destination} ${edge.version}: ${edge.requests} requests, ` +
    `4xx ${percent(edge.error_rate_4xx)}, 5xx ${percent(edge.error_rate_5xx)}`));
  return group;
}

function arrowMarker(id, color) {
  const marker = svg("marker", {
    id, viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 7, markerHeight: 7,
    orient: "auto-start-reverse",
  });
  marker.append(svg("path", { d: "M0,0 L10,5 L0,10 z", fill: color }));
  return marker;
}

function drawGraph(graph) {
  const canvas = $("graph");
  const { places, width, height } = layout(graph.nodes);
  canvas.setAttribute("width", width);
  canvas.setAttribute("height", height);
  const defs = svg("defs");
  defs.append(arrowMarker("arrow", "#7b8a99"), arrowMarker("arrow-denied", "#c62828"));
  const labelled = new Map();
  const edges = graph.edges.map((edge) => {
    const target = `${edge.destination} ${edge.version}`;
    labelled.set(target, (labelled.get(target) ?? -1) + 1);
    return drawEdge(edge, places, labelled.get(target));
  });
  canvas.replaceChildren(defs, ...graph.nodes.map((node) => drawNode(places.get(node.service))),
    ...edges);
  $("window").textContent = `(last ${graph.window_s} s)`;
  const message = $("mixer-message");
  message.hidden = !graph.mixer.error;
  message.textContent = graph.mixer.error
    ? `No traffic figures: ${graph.mixer.error}. The control plane reads them from the mixer ` +
      "(serve --mixer-metrics)."
    : "";
}

// --- mesh and proxies ----------------------------------------------------------------------------

function appliedAt(value) {
  if (value === null || value === undefined) return "-";
  return typeof value === "number" ? new Date(value * 1000).toISOString() : String(value);
}

function showMesh(mesh) {
  $("applied-version").textContent = mesh.version ?? "none yet";
  $("applied-at").textContent = appliedAt(mesh.applied_at);
  $("mesh-version").textContent = mesh.version ? `mesh ${mesh.version}` : "";
  const problems = mesh.problems ?? [];
  $("problems").replaceChildren(...problems.map((problem) => el("li", {}, problem)));
  $("no-problems").hidden = problems.length > 0;
}

function typeName(url) {
  const last = url.split(".").pop();
  return TYPE_NAMES[last] ?? last;
}

function typeColumns(proxies) {
  const urls = [];
  for (const proxy of proxies) {
    for (const url of Object.keys(proxy.types)) if (!urls.includes(url)) urls.push(url);
  }
  return urls;
}

function stateCell(state) {
  if (!state) return el("td", { class: "state" }, "-");
  const version = (state.acked_version || state.sent_version || "").slice(0, 8);
  return el("td", { class: `state ${state.status}` }, `${state.status} ${version}`);
}

function labelsCell(labels) {
  const cell = el("td");
  for (const [key, value] of Object.entries(labels)) {
    cell.append(el("span", { class: "label" }, `${key}=${value}`));
  }
  return cell;
}

function proxyRow(proxy, urls) {
  const row = el("tr", { "data-node": proxy.node_id });
  row.append(el("td", {}, proxy.node_id), el("td", {}, proxy.service), labelsCell(proxy.labels),
    el("td", {}, proxy.ip), el("td", {}, proxy.protocol));
  for (const url of urls) row.append(stateCell(proxy.types[url]));
  const errors = Object.entries(proxy.types).filter(([, state]) => state.error)
    .map(([url, state]) => `${typeName(url)}: ${state.error}`);
  row.append(el("td", { class: "nack" }, errors.join("\n")));
  return row;
}

function showProxies(proxies) {
  const sorted = [...proxies].sort((a, b) =>
    a.service.localeCompare(b.service) || a.node_id.localeCompare(b.node_id));
  const urls = typeColumns(sorted);
  const names = ["Node", "Service", "Labels", "IP", "Protocol", ...urls.map(typeName), "NACK error"];
  $("proxies").tHead.rows[0].replaceChildren(...names.map((name) => el("th", {}, name)));
  $("proxies").tBodies[0].replaceChildren(...sorted.map((proxy) => proxyRow(proxy, urls)));
  $("proxy-count").textContent = `(${proxies.length} connected)`;
}

// --- polling -----------------------------------------------------------------------------------

function showLogin(wrongToken) {
  $("login").hidden = false;
  $("login-message").textContent = wrongToken
    ? "That token was refused; enter the admin token again."
    : "This control plane's admin API needs its token (serve --admin-token-file); " +
      "it stays in this tab only.";
  $("updated").textContent = "waiting for the admin token";
}

async function refresh() {
  try {
    const [graph, proxies, mesh] = await Promise.all(
      ["/graph", "/proxies", "/mesh"].map(getJSON));
    drawGraph(graph);
    showProxies(proxies);
    showMesh(mesh);
    $("error").hidden = true;
    $("login").hidden = true;
    $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (err) {
    if (err instanceof Unauthorized) {
      showLogin(sessionStorage.getItem(TOKEN_KEY) !== null);
      return; // polling resumes when a token is entered
    }
    $("error").hidden = false;
    $("error").textContent = `Cannot reach the control plane's admin API: ${err.message}`;
  }
  setTimeout(refresh, POLL_MS);
}

function start() {
  takeTokenFromFragment();
  $("login").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
    $("token").value = "";
    $("login").hidden = true;
    refresh();
  });
  refresh();
}

start();
