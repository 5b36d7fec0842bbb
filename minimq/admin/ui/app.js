// minimq management UI: one page over the RabbitMQ-compatible HTTP API (/api/...).
// Plain JavaScript, no build step. Everything shown is built with textContent (never
// innerHTML), so queue names and payloads cannot inject markup.
"use strict";

const REFRESH_MS = 5000;
const state = {
  auth: sessionStorage.getItem("minimq-auth"),
  tab: "overview",
  queueSort: { key: "name", reverse: false },
  selectedQueue: null,
  timer: null,
  vhosts: [],
};

const $ = (sel, root = document) => root.querySelector(sel);
const enc = encodeURIComponent;

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "class") node.className = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(c == null ? "" : String(c)));
  return node;
}

function fmtNum(n) { return (n == null ? 0 : n).toLocaleString("en-US"); }
function fmtRate(r) { return r == null ? "0.0" : (Math.round(r * 10) / 10).toFixed(1); }
function rate(obj, key) { return obj && obj.message_stats && obj.message_stats[key + "_details"] ? obj.message_stats[key + "_details"].rate : 0; }
function setStatus(text, isError) { const s = $("#status"); s.textContent = text || ""; s.className = isError ? "status error" : "status"; }

class ApiError extends Error {
  constructor(status, body) { super((body && (body.reason || body.error)) || ("HTTP " + status)); this.status = status; }
}

async function api(method, path, body) {
  const headers = { Authorization: "Basic " + state.auth, "X-Requested-With": "XMLHttpRequest" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch("api" + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await resp.text();
  const data = text ? JSON.parse(text) : null;
  // A login that stopped working (password changed, user deleted) ends the session; other 401s
  // ("Not administrator user", "Access refused.") are just this user's limits.
  if (resp.status === 401 && path !== "/whoami" && data && data.reason === "Login failed") logout();
  if (!resp.ok) throw new ApiError(resp.status, data);
  return data;
}

// ------------------------------------------------------------------ login

async function login(user, password) {
  state.auth = btoa(unescape(encodeURIComponent(user + ":" + password)));
  const me = await api("GET", "/whoami");
  sessionStorage.setItem("minimq-auth", state.auth);
  $("#who-name").textContent = me.name + (me.tags.length ? " (" + me.tags.join(", ") + ")" : "");
  $("#login").hidden = true;
  $("#tabs").hidden = false;
  $("#who").hidden = false;
  showTab(location.hash.slice(1) || "overview");
}

function logout() {
  state.auth = null;
  sessionStorage.removeItem("minimq-auth");
  clearTimeout(state.timer);
  document.querySelectorAll(".tab").forEach((t) => (t.hidden = true));
  $("#tabs").hidden = true;
  $("#who").hidden = true;
  $("#login").hidden = false;
}

$("#login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  $("#login-error").textContent = "";
  try {
    await login($("#login-user").value, $("#login-password").value);
  } catch (e) {
    state.auth = null;
    $("#login-error").textContent = e.status === 401 ? "Login failed: " + e.message : String(e.message);
  }
});
$("#logout").addEventListener("click", logout);

// ------------------------------------------------------------------ tabs

const loaders = {};

function showTab(name) {
  if (!loaders[name]) name = "overview";
  state.tab = name;
  document.querySelectorAll(".tab").forEach((t) => (t.hidden = t.id !== name));
  document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active", a.dataset.tab === name));
  refresh();
}

window.addEventListener("hashchange", () => state.auth && showTab(location.hash.slice(1)));

async function refresh() {
  clearTimeout(state.timer);
  if (!state.auth) return;
  try {
    await loadVhosts();
    await loaders[state.tab]();
    document.body.dataset.refreshed = String(Date.now());
  } catch (e) {
    if (state.auth) setStatus("Refresh failed: " + e.message, true);
  }
  if (state.auth) state.timer = setTimeout(refresh, REFRESH_MS);
}

async function loadVhosts() {
  const vhosts = await api("GET", "/vhosts?columns=name,messages");
  state.vhosts = vhosts;
  document.querySelectorAll(".vhost-select").forEach((sel) => {
    const current = sel.value;
    sel.replaceChildren(...vhosts.map((v) => el("option", { value: v.name }, v.name)));
    if (vhosts.some((v) => v.name === current)) sel.value = current;
  });
}

function fillTable(table, rows) {
  $("tbody", table).replaceChildren(...rows);
}

// --------------------------------------------------------------- overview

loaders.overview = async () => {
  const ov = await api("GET", "/overview?msg_rates_age=600&msg_rates_incr=5&lengths_age=600&lengths_incr=5");
  const qt = ov.queue_totals, ot = ov.object_totals;
  $("#t-messages").textContent = fmtNum(qt.messages);
  $("#t-ready").textContent = fmtNum(qt.messages_ready);
  $("#t-unacked").textContent = fmtNum(qt.messages_unacknowledged);
  $("#r-publish").textContent = fmtRate(rate(ov, "publish"));
  $("#r-deliver").textContent = fmtRate(rate(ov, "deliver_get"));
  $("#r-ack").textContent = fmtRate(rate(ov, "ack"));
  for (const k of ["connections", "channels", "queues", "consumers", "exchanges"]) $("#o-" + k).textContent = fmtNum(ot[k]);
  drawChart(ov.message_stats);
  const node = (await api("GET", "/nodes"))[0];
  const mb = (b) => (b / 1048576).toFixed(1) + " MB";
  const rows = [
    ["Node", node.name], ["Version", ov.product_name + " " + ov.product_version + " (RabbitMQ API " + ov.rabbitmq_version + ")"],
    ["Runtime", ov.erlang_version], ["Memory", mb(node.mem_used) + (node.mem_limit ? " of " + mb(node.mem_limit) + " limit" : "") + (node.mem_alarm ? " — ALARM" : "")],
    ["Disk free", mb(node.disk_free)], ["Uptime", Math.round(node.uptime / 1000) + " s"],
    ["Listeners", ov.listeners.map((l) => l.protocol + " " + l.ip_address + ":" + l.port).join(", ")],
  ];
  fillTable($("#node-table"), rows.map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, v))));
};

function drawChart(stats) {
  const canvas = $("#chart");
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, pad = 34;
  ctx.clearRect(0, 0, w, h);
  const series = [["publish", "#e6613a"], ["deliver_get", "#2f6fd0"], ["ack", "#2e9a5a"]].map(([key, color]) => {
    const samples = ((stats[key + "_details"] || {}).samples || []).slice().reverse(); // oldest first
    const points = [];
    for (let i = 1; i < samples.length; i++) {
      const dt = (samples[i].timestamp - samples[i - 1].timestamp) / 1000;
      if (dt > 0) points.push([samples[i].timestamp, Math.max(0, (samples[i].sample - samples[i - 1].sample) / dt)]);
    }
    return { color, points };
  });
  const all = series.flatMap((s) => s.points);
  const now = Date.now(), t0 = now - 600000;
  const max = Math.max(1, ...all.map((p) => p[1])) * 1.1;
  ctx.strokeStyle = "#dde2e8"; ctx.fillStyle = "#66717f"; ctx.font = "11px system-ui"; ctx.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const y = h - pad + ((pad * 2 - h) * i) / 4 + 0.5;
    ctx.beginPath(); ctx.moveTo(pad, y); ctx.lineTo(w - 8, y); ctx.stroke();
    ctx.fillText(fmtRate((max * i) / 4), 2, y - 2);
  }
  ctx.fillText("-10 min", pad, h - 8); ctx.fillText("now", w - 30, h - 8);
  for (const s of series) {
    if (!s.points.length) continue;
    ctx.strokeStyle = s.color; ctx.lineWidth = 2; ctx.beginPath();
    s.points.forEach(([t, v], i) => {
      const x = pad + ((t - t0) / 600000) * (w - pad - 8);
      const y = h - pad - (v / max) * (h - pad * 2);
      i ? ctx.lineTo(x, y) : ctx.moveTo(x, y);
    });
    ctx.stroke();
  }
}

// ----------------------------------------------------------------- queues

function qpath(vhost, name) { return "/queues/" + enc(vhost) + "/" + enc(name); }

loaders.queues = async () => {
  const params = new URLSearchParams({
    page: "1", page_size: "500", sort: state.queueSort.key, sort_reverse: String(state.queueSort.reverse),
    columns: "name,vhost,state,messages,messages_ready,messages_unacknowledged,consumers,durable,auto_delete,exclusive,arguments,"
      + "message_stats.publish_details.rate,message_stats.deliver_get_details.rate,message_stats.ack_details.rate",
  });
  const filter = $("#queue-filter").value.trim();
  if (filter) { params.set("name", filter); params.set("use_regex", "true"); }
  const page = await api("GET", "/queues?" + params);
  $("#queue-count").textContent = page.filtered_count + " of " + page.total_count + " queues" + (page.page_count > 1 ? " (first 500 shown)" : "");
  document.querySelectorAll("#queue-table th[data-sort]").forEach((th) => {
    th.classList.toggle("sorted-asc", th.dataset.sort === state.queueSort.key && !state.queueSort.reverse);
    th.classList.toggle("sorted-desc", th.dataset.sort === state.queueSort.key && state.queueSort.reverse);
  });
  fillTable($("#queue-table"), page.items.map((q) => {
    const features = [q.durable ? "D" : "", q.auto_delete ? "AD" : "", q.exclusive ? "Excl" : "",
      ...Object.keys(q.arguments || {}).map((k) => k.replace(/^x-/, ""))].filter(Boolean);
    return el("tr", { dataset: { queue: q.name, vhost: q.vhost } },
      el("td", {}, q.vhost),
      el("td", { class: "name", title: q.name }, el("a", { href: "#queues", onclick: () => selectQueue(q.vhost, q.name) }, q.name), " ",
        ...features.map((f) => el("span", { class: "pill" }, f))),
      el("td", {}, q.state),
      el("td", { class: "num messages" }, fmtNum(q.messages)),
      el("td", { class: "num ready" }, fmtNum(q.messages_ready)),
      el("td", { class: "num unacked" }, fmtNum(q.messages_unacknowledged)),
      el("td", { class: "num consumers" }, fmtNum(q.consumers)),
      el("td", { class: "num" }, fmtRate(rate(q, "publish"))),
      el("td", { class: "num" }, fmtRate(rate(q, "deliver_get"))),
      el("td", { class: "num" }, fmtRate(rate(q, "ack"))),
      el("td", {},
        el("button", { type: "button", class: "purge", onclick: () => purgeQueue(q.vhost, q.name) }, "Purge"), " ",
        el("button", { type: "button", class: "delete danger", onclick: () => deleteQueue(q.vhost, q.name) }, "Delete")));
  }));
};

document.querySelectorAll("#queue-table th[data-sort]").forEach((th) => th.addEventListener("click", () => {
  const key = th.dataset.sort;
  state.queueSort = { key, reverse: state.queueSort.key === key ? !state.queueSort.reverse : key !== "name" && key !== "vhost" };
  refresh();
}));
let filterTimer = null;
$("#queue-filter").addEventListener("input", () => { clearTimeout(filterTimer); filterTimer = setTimeout(refresh, 300); });

async function act(what, fn) {
  try { await fn(); setStatus(what); } catch (e) { setStatus(what + " failed: " + e.message, true); }
  refresh();
}

function purgeQueue(vhost, name) {
  if (!confirm("Purge all ready messages from queue '" + name + "'?")) return;
  act("Purged " + name, () => api("DELETE", qpath(vhost, name) + "/contents"));
}

function deleteQueue(vhost, name) {
  if (!confirm("Delete queue '" + name + "'?")) return;
  if (state.selectedQueue && state.selectedQueue.name === name) $("#queue-detail").hidden = true;
  act("Deleted " + name, () => api("DELETE", qpath(vhost, name)));
}

function selectQueue(vhost, name) {
  state.selectedQueue = { vhost, name };
  $("#qd-name").textContent = name + " (vhost " + vhost + ")";
  $("#messages-out").replaceChildren();
  $("#queue-detail").hidden = false;
}

$("#declare-queue").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const f = ev.target;
  let args = {};
  try { args = f.arguments.value.trim() ? JSON.parse(f.arguments.value) : {}; } catch (e) { setStatus("Arguments must be JSON: " + e.message, true); return; }
  act("Added queue " + f.name.value, () => api("PUT", qpath(f.vhost.value, f.name.value), { durable: f.durable.value === "true", auto_delete: false, arguments: args }));
});

$("#get-messages").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const q = state.selectedQueue, f = ev.target;
  try {
    const msgs = await api("POST", qpath(q.vhost, q.name) + "/get", { count: Number(f.count.value), ackmode: f.ackmode.value, encoding: "auto", truncate: 50000 });
    $("#messages-out").replaceChildren(...(msgs.length ? msgs.map((m, i) => el("div", { class: "msg" },
      "#" + (i + 1) + "  exchange '" + m.exchange + "'  routing key '" + m.routing_key + "'" + (m.redelivered ? "  redelivered" : "") + "\n"
      + "properties " + JSON.stringify(m.properties) + "\n" + (m.payload_encoding === "base64" ? "(base64) " : "") + m.payload))
      : [el("p", { class: "small" }, "Queue is empty.")]));
  } catch (e) { setStatus("Get failed: " + e.message, true); }
  refresh();
});

$("#publish-queue").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const q = state.selectedQueue;
  act("Published to " + q.name, () => api("POST", "/exchanges/" + enc(q.vhost) + "/amq.default/publish",
    { properties: {}, routing_key: q.name, payload: ev.target.payload.value, payload_encoding: "string" }));
});

// -------------------------------------------------------------- exchanges

loaders.exchanges = async () => {
  const exchanges = await api("GET", "/exchanges");
  fillTable($("#exchange-table"), exchanges.map((x) => el("tr", { dataset: { exchange: x.name } },
    el("td", {}, x.vhost), el("td", { class: "name" }, x.name === "" ? "(AMQP default)" : x.name), el("td", {}, x.type),
    el("td", {}, ...[x.durable ? "D" : "", x.auto_delete ? "AD" : "", x.internal ? "I" : ""].filter(Boolean).map((f) => el("span", { class: "pill" }, f))),
    el("td", { class: "num" }, fmtRate(rate(x, "publish_in"))), el("td", { class: "num" }, fmtRate(rate(x, "publish_out"))),
    el("td", {}, x.name === "" || x.name.startsWith("amq.") ? "" :
      el("button", { type: "button", class: "danger", onclick: () => { if (confirm("Delete exchange '" + x.name + "'?")) act("Deleted " + x.name, () => api("DELETE", "/exchanges/" + enc(x.vhost) + "/" + enc(x.name))); } }, "Delete")))));
  const bindings = (await api("GET", "/bindings")).filter((b) => b.source !== "");
  fillTable($("#binding-table"), bindings.map((b) => el("tr", {},
    el("td", {}, b.vhost), el("td", {}, b.source), el("td", {}, b.destination), el("td", {}, b.destination_type),
    el("td", {}, b.routing_key), el("td", {}, JSON.stringify(b.arguments)),
    el("td", {}, el("button", { type: "button", class: "danger", onclick: () => act("Unbound", () => api("DELETE",
      "/bindings/" + enc(b.vhost) + "/e/" + enc(b.source) + "/" + (b.destination_type === "queue" ? "q" : "e") + "/" + enc(b.destination) + "/" + enc(b.properties_key))) }, "Unbind")))));
};

$("#declare-exchange").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const f = ev.target;
  act("Added exchange " + f.name.value, () => api("PUT", "/exchanges/" + enc(f.vhost.value) + "/" + enc(f.name.value), { type: f.type.value, durable: f.durable.value === "true" }));
});

$("#publish-exchange").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const f = ev.target;
  try {
    const r = await api("POST", "/exchanges/" + enc(f.vhost.value) + "/" + enc(f.exchange.value || "amq.default") + "/publish",
      { properties: {}, routing_key: f.routing_key.value, payload: f.payload.value, payload_encoding: "string" });
    setStatus(r.routed ? "Message published and routed." : "Message published, but not routed to any queue.", !r.routed);
  } catch (e) { setStatus("Publish failed: " + e.message, true); }
  refresh();
});

$("#add-binding").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const f = ev.target;
  act("Bound", () => api("POST", "/bindings/" + enc(f.vhost.value) + "/e/" + enc(f.source.value) + "/" + f.kind.value + "/" + enc(f.destination.value),
    { routing_key: f.routing_key.value, arguments: {} }));
});

// ---------------------------------------------------- connections, channels

loaders.connections = async () => {
  const conns = await api("GET", "/connections");
  fillTable($("#connection-table"), conns.map((c) => el("tr", {},
    el("td", { class: "name" }, c.user_provided_name ? c.user_provided_name + " — " + c.name : c.name), el("td", {}, c.user), el("td", {}, c.vhost),
    el("td", {}, ((c.client_properties || {}).product || "") + " " + ((c.client_properties || {}).version || "")), el("td", {}, c.state),
    el("td", { class: "num" }, c.channels),
    el("td", {}, el("button", { type: "button", class: "danger", onclick: () => closeConnection(c.name) }, "Close")))));
};

function closeConnection(name) {
  const reason = prompt("Close connection " + name + "? Reason sent to the client:", "Closed via management UI");
  if (reason === null) return;
  act("Closed " + name, async () => {
    const resp = await fetch("api/connections/" + enc(name), { method: "DELETE", headers: { Authorization: "Basic " + state.auth, "X-Requested-With": "XMLHttpRequest", "X-Reason": reason } });
    if (!resp.ok) throw new ApiError(resp.status, await resp.json().catch(() => null));
  });
}

loaders.channels = async () => {
  const chans = await api("GET", "/channels");
  fillTable($("#channel-table"), chans.map((c) => el("tr", {},
    el("td", { class: "name" }, c.name), el("td", {}, c.user),
    el("td", {}, [c.confirm ? "confirm" : "", c.transactional ? "tx" : ""].filter(Boolean).join(" ")),
    el("td", { class: "num" }, c.prefetch_count || c.global_prefetch_count), el("td", { class: "num" }, c.messages_unacknowledged),
    el("td", { class: "num" }, c.consumer_count), el("td", { class: "num" }, fmtRate(rate(c, "publish"))),
    el("td", { class: "num" }, fmtRate(rate(c, "deliver_get"))), el("td", { class: "num" }, fmtRate(rate(c, "ack"))))));
};

// ------------------------------------------------------------------ admin

loaders.admin = async () => {
  fillTable($("#vhost-table"), state.vhosts.map((v) => el("tr", {}, el("td", {}, v.name), el("td", { class: "num" }, fmtNum(v.messages)))));
  try {
    const users = await api("GET", "/users");
    fillTable($("#user-table"), users.map((u) => el("tr", {}, el("td", {}, u.name), el("td", {}, u.tags.join(", ")))));
  } catch (e) {
    fillTable($("#user-table"), [el("tr", {}, el("td", { colspan: "2" }, e.message))]);
  }
  const row = (kind) => (p) => el("tr", { "data-policy": p.name }, el("td", {}, p.vhost), el("td", {}, p.name),
    el("td", {}, kind), el("td", {}, p.pattern), el("td", {}, p["apply-to"]),
    el("td", {}, JSON.stringify(p.definition)), el("td", { class: "num" }, String(p.priority)));
  try {
    const [policies, operator] = await Promise.all([api("GET", "/policies"), api("GET", "/operator-policies")]);
    fillTable($("#policy-table"), policies.map(row("policy")).concat(operator.map(row("operator policy"))));
  } catch (e) {
    fillTable($("#policy-table"), [el("tr", {}, el("td", { colspan: "7" }, e.message))]);
  }
};

$("#export-definitions").addEventListener("click", async () => {
  try {
    const defs = await api("GET", "/definitions");
    const url = URL.createObjectURL(new Blob([JSON.stringify(defs, null, 2)], { type: "application/json" }));
    const a = el("a", { href: url, download: "minimq-definitions.json" });
    document.body.append(a); a.click(); a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  } catch (e) { setStatus("Export failed: " + e.message, true); }
});

$("#import-definitions").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const file = ev.target.file.files[0];
  if (!file) { setStatus("Choose a file first.", true); return; }
  let data;
  try { data = JSON.parse(await file.text()); } catch (e) { setStatus("Not a JSON file: " + e.message, true); return; }
  act("Imported " + file.name, () => api("POST", "/definitions", data));
});

// ------------------------------------------------------------------- start

if (state.auth) {
  api("GET", "/whoami").then((me) => {
    $("#who-name").textContent = me.name;
    $("#login").hidden = true; $("#tabs").hidden = false; $("#who").hidden = false;
    showTab(location.hash.slice(1) || "overview");
  }).catch(logout);
}
