"use strict";
// The settings console: plain JavaScript over the admin API (docs/console.md). Everything shown
// comes from the API; nothing is loaded from elsewhere. Text from the API is set with
// textContent, never parsed as HTML.

const MESSENGERS = ["telegram", "whatsapp", "viber", "vk", "facebook", "instagram", "avito", "ok"];
// Write-only fields: the API shows a mask; an empty input keeps the saved value.
const SECRET_INPUTS = [["comagic_token", "f-comagic-token"], ["webhook_token", "f-webhook-token"], ["verbox_secret_key", "f-secret"]];
const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem("bridge-admin-token") || "";
let current = null;      // the integration being edited, as the API last returned it (null: a new one)
let choices = null;      // the account's pick-lists
let statePoll = null;

async function api(method, path, body) {
  const response = await fetch(path, {
    method,
    headers: { "Authorization": "Bearer " + token, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await response.json().catch(() => ({}));
  if (response.status === 401) { signOut(); }
  return { status: response.status, ok: response.ok, data };
}

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function show(section) {
  for (const id of ["sign-in", "list", "detail"]) $(id).hidden = id !== section;
  $("sign-out").hidden = section === "sign-in";
  if (statePoll) { clearInterval(statePoll); statePoll = null; }
}

function signOut() {
  token = "";
  sessionStorage.removeItem("bridge-admin-token");
  show("sign-in");
  $("admin-token").focus();
}

$("sign-in-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  token = $("admin-token").value.trim();
  const { ok } = await api("GET", "/api/integrations");
  if (!ok) { $("sign-in-error").textContent = "That token was refused."; return; }
  sessionStorage.setItem("bridge-admin-token", token);
  $("admin-token").value = "";
  $("sign-in-error").textContent = "";
  showList();
});
$("sign-out").addEventListener("click", signOut);
$("back").addEventListener("click", showList);
$("new-integration").addEventListener("click", () => openIntegration(null));

// ---- the table ----

function stateText(i) {
  if (!i.active) return ["inactive", "state-off"];
  if (i.state && i.state.paused) return ["paused", "state-paused"];
  return ["active", "state-ok"];
}

async function showList() {
  show("list");
  const { ok, data } = await api("GET", "/api/integrations");
  if (!ok) return;
  const body = $("integrations").querySelector("tbody");
  body.replaceChildren();
  for (const i of data.integrations) {
    const row = el("tr");
    const name = el("td");
    const link = el("a", i.id);
    link.href = "#" + encodeURIComponent(i.id);
    link.addEventListener("click", (e) => { e.preventDefault(); openIntegration(i.id); });
    name.append(link);
    const [text, cls] = stateText(i);
    const s = i.state || {};
    row.append(name, el("td", text, cls), el("td", s.events_per_minute ?? "–"),
      el("td", s.last_delivery ? new Date(s.last_delivery).toLocaleString() : "–"),
      el("td", s.dead_letters ?? "–"), el("td", s.paused ? `${s.paused_reason}: ${s.fix || ""}` : ""));
    row.dataset.integration = i.id;
    body.append(row);
  }
  $("list-empty").hidden = data.integrations.length > 0;
}

// ---- the form ----

function options(select, items, selected, blank) {
  select.replaceChildren();
  if (blank) select.append(new Option(blank, ""));
  const seen = new Set();
  for (const item of items || []) {
    seen.add(String(item.id));
    select.append(new Option(`${item.id} · ${item.name}`, item.id));
  }
  if (selected !== undefined && selected !== null && selected !== "" && !seen.has(String(selected))) {
    select.append(new Option(`${selected} (not in the account's list)`, selected));
  }
  if (selected !== undefined && selected !== null) select.value = String(selected);
}

// A target: a campaign, or a site and a source. Messengers may also be "not mapped".
function targetRow(container, key, label, target, optional) {
  const row = el("div", null, "target-row");
  row.dataset.target = key;
  const id = `t-${key}`;
  const mode = el("select");
  mode.id = `${id}-mode`;
  mode.setAttribute("aria-label", `${label}: where chats go`);
  if (optional) mode.append(new Option("not mapped (the default)", ""));
  mode.append(new Option("a campaign", "campaign"), new Option("a site and source", "site"));
  const campaign = el("select"); campaign.id = `${id}-campaign`; campaign.setAttribute("aria-label", `${label}: campaign`);
  const site = el("select"); site.id = `${id}-site`; site.setAttribute("aria-label", `${label}: site`);
  const source = el("select"); source.id = `${id}-source`; source.setAttribute("aria-label", `${label}: source`);
  const t = target || {};
  mode.value = t.campaign_id ? "campaign" : t.site_id ? "site" : (optional ? "" : "campaign");
  options(campaign, choices && choices.campaigns, t.campaign_id, "– campaign –");
  options(site, choices && choices.sites, t.site_id, "– site –");
  options(source, choices && choices.sources, t.source_id, "– source –");
  const sync = () => {
    campaign.hidden = mode.value !== "campaign";
    site.hidden = source.hidden = mode.value !== "site";
  };
  mode.addEventListener("change", sync);
  sync();
  const name = el("label", label);
  name.htmlFor = mode.id;
  row.append(name, mode, campaign, site, source);
  container.append(row);
}

function readTarget(key) {
  const mode = $(`t-${key}-mode`).value;
  const number = (id) => { const v = $(id).value; return v === "" ? null : Number(v); };
  if (mode === "campaign") return { campaign_id: number(`t-${key}-campaign`) };
  if (mode === "site") return { site_id: number(`t-${key}-site`), source_id: number(`t-${key}-source`) };
  return null;
}

function fillForm(form) {
  const f = form || {};
  $("f-id").value = f.id || "";
  $("f-id").readOnly = !!current;
  $("f-active").checked = f.active !== false;
  $("f-offline").checked = f.offline_enabled !== false;
  $("f-api").value = f.comagic_api || "https://dataapi.comagic.ru/v2.0";
  for (const [field, input] of SECRET_INPUTS) {
    $(input).value = "";
    $(input).placeholder = f[field] ? `saved (${f[field]}); leave empty to keep` : "";
  }
  options($("f-employee"), choices && choices.employees, f.employee_id, "– employee –");
  $("f-timezone").value = f.timezone || (choices && choices.timezone) || "Europe/Moscow";
  $("f-session-key").value = f.session_key || "comagic_session_id";
  const def = $("t-default");
  def.querySelectorAll(".target-row").forEach((r) => r.remove());
  targetRow(def, "default", "Default", f.default, false);
  const messengers = $("messengers");
  messengers.querySelectorAll(".target-row").forEach((r) => r.remove());
  for (const m of MESSENGERS) targetRow(messengers, m, m, (f.messengers || {})[m], true);
}

function readForm() {
  const form = {
    id: $("f-id").value.trim(),
    active: $("f-active").checked,
    offline_enabled: $("f-offline").checked,
    comagic_api: $("f-api").value.trim(),
    employee_id: Number($("f-employee").value || 0),
    timezone: $("f-timezone").value.trim(),
    session_key: $("f-session-key").value.trim(),
    default: readTarget("default") || {},
    messengers: {},
  };
  for (const [field, input] of SECRET_INPUTS) {
    const value = $(input).value.trim();
    if (value) form[field] = value;
  }
  for (const m of MESSENGERS) { const t = readTarget(m); if (t) form.messengers[m] = t; }
  // Keys the form does not edit (event lists, secrets named by environment variable) are kept.
  if (current) {
    for (const key of ["chat_events", "offline_events", "webhook_token_env", "verbox_secret_key_env", "comagic_token_env"]) {
      if (current.integration[key] !== undefined && current.integration[key] !== null) form[key] = current.integration[key];
    }
  }
  return form;
}

function clearErrors() {
  document.querySelectorAll("[aria-invalid=true]").forEach((n) => n.removeAttribute("aria-invalid"));
  $("save-error").replaceChildren();
  $("saved").textContent = "";
}

// The input a field error names (`default.campaign_id`, `messengers.vk.site_id`, `employee_id`).
function inputFor(field) {
  const parts = field.split(".");
  const names = { comagic_token: "f-comagic-token", webhook_token: "f-webhook-token", verbox_secret_key: "f-secret",
    employee_id: "f-employee", timezone: "f-timezone", session_key: "f-session-key", comagic_api: "f-api", id: "f-id" };
  if (names[parts[0]]) return $(names[parts[0]]);
  const key = parts[0] === "default" ? "default" : parts[1];
  const which = (parts[parts.length - 1] || "").replace("_id", "");
  return $(`t-${key}-${which}`) || $(`t-${key}-mode`);
}

function showError(data, retryForced) {
  const box = $("save-error");
  box.replaceChildren(el("p", data.message || "The save failed."));
  if (data.field) {
    const input = inputFor(data.field);
    if (input) { input.setAttribute("aria-invalid", "true"); input.focus(); }
  }
  if (data.problems) {
    const list = el("ul");
    for (const p of data.problems) list.append(el("li", p));
    box.append(list);
    if (retryForced) {
      const force = el("button", "Save anyway");
      force.type = "button";
      force.addEventListener("click", () => save(true));
      box.append(force);
    }
  }
  if (data.error === "stale") {
    box.append(el("p", "Someone saved this integration after you opened it. Reload it, re-apply your change, and save."));
    const reload = el("button", "Reload");
    reload.type = "button";
    reload.addEventListener("click", () => openIntegration(current.id));
    box.append(reload);
  }
}

async function save(force) {
  clearErrors();
  const form = readForm();
  const body = { integration: form, force: !!force };
  let answer;
  if (current) {
    body.version = current.version;
    answer = await api("PUT", `/api/integrations/${encodeURIComponent(current.id)}`, body);
  } else {
    answer = await api("POST", "/api/integrations", body);
  }
  if (!answer.ok) { showError(answer.data, answer.data.error === "check_failed"); return; }
  current = answer.data;
  $("saved").textContent = `Saved (version ${current.version}).`;
  await showIntegration(current);
}

$("settings").addEventListener("submit", (e) => { e.preventDefault(); save(false); });

$("deactivate").addEventListener("click", async () => {
  if (!current) return;
  const { ok, data } = await api("POST", `/api/integrations/${encodeURIComponent(current.id)}/deactivate`, { version: current.version });
  if (!ok) { showError(data, false); return; }
  current = data;
  await showIntegration(current);
});

$("load-choices").addEventListener("click", async () => {
  $("choices-status").textContent = "";
  const request = { comagic_api: $("f-api").value.trim() };
  const typed = $("f-comagic-token").value.trim();
  if (typed) request.comagic_token = typed; else if (current) request.id = current.id;
  const { ok, data } = await api("POST", "/api/account", request);
  if (!ok) { $("choices-status").className = "error"; $("choices-status").textContent = (data.problems || [data.message]).join(" "); return; }
  $("choices-status").className = "ok";
  const kept = readForm();
  const secrets = SECRET_INPUTS.map(([, input]) => $(input).value);
  choices = data;
  fillForm({ ...(current ? current.integration : {}), ...kept, timezone: kept.timezone || data.timezone });
  SECRET_INPUTS.forEach(([, input], i) => { $(input).value = secrets[i]; });
  $("choices-status").textContent = `Loaded ${data.employees.length} employees, ${data.campaigns.length} active campaigns, ${data.sites.length} sites, ${data.sources.length} sources.`;
});

// ---- one integration ----

async function openIntegration(id) {
  clearErrors();
  choices = null;
  $("full-urls").hidden = true;
  $("test-result").replaceChildren();
  if (id === null) {
    current = null;
    show("detail");
    $("detail-title").textContent = "New integration";
    for (const s of ["setup-section", "test-section", "dead-section"]) $(s).hidden = true;
    $("deactivate").hidden = true;
    $("paused-banner").hidden = true;
    fillForm(null);
    $("f-id").focus();
    return;
  }
  const { ok, data } = await api("GET", `/api/integrations/${encodeURIComponent(id)}`);
  if (!ok) return;
  current = data;
  show("detail");
  await showIntegration(current);
  $("f-api").focus();
}

async function showIntegration(view) {
  $("detail-title").textContent = `Integration ${view.id}`;
  for (const s of ["setup-section", "test-section", "dead-section"]) $(s).hidden = false;
  $("deactivate").hidden = !view.active;
  if (!choices) {
    const lists = await api("GET", `/api/integrations/${encodeURIComponent(view.id)}/account`);
    if (lists.ok) choices = lists.data; else $("choices-status").textContent = (lists.data.problems || [lists.data.message]).join(" ");
  }
  fillForm(view.integration);
  showState(view.state);
  if (view.new_webhook_urls) {
    $("full-urls").hidden = false;
    $("full-urls").textContent = "Paste these into the Verbox handlers now; they are shown only once: " +
      [view.new_webhook_urls.chat, view.new_webhook_urls.offline].filter(Boolean).join("  ·  ");
  }
  const setup = await api("GET", `/api/integrations/${encodeURIComponent(view.id)}/setup`);
  if (setup.ok) {
    $("url-chat").value = (view.new_webhook_urls || setup.data.webhook_urls).chat;
    $("url-offline").value = (view.new_webhook_urls || setup.data.webhook_urls).offline || "offline requests are off";
    $("site-script").value = setup.data.site_script;
    $("setup-steps").textContent = setup.data.steps;
  }
  loadDeadLetters();
  statePoll = setInterval(async () => {
    const s = await api("GET", `/api/integrations/${encodeURIComponent(view.id)}/state`);
    if (s.ok) showState(s.data);
  }, 2000);
}

function showState(state) {
  const banner = $("paused-banner");
  banner.hidden = !(state && state.paused);
  if (state && state.paused) banner.textContent = `Paused: CoMagic answers ${state.paused_reason}. Fix: ${state.fix || "see the runbook"}. Delivery resumes by itself once it is fixed.`;
}

document.addEventListener("click", async (e) => {
  const target = e.target.closest("[data-copy]");
  if (!target) return;
  const source = $(target.dataset.copy);
  source.select();
  try { await navigator.clipboard.writeText(source.value); target.textContent = "Copied"; }
  catch { document.execCommand("copy"); target.textContent = "Copied"; }
  setTimeout(() => { target.textContent = "Copy"; }, 1500);
});

// ---- the test chat ----

$("send-test").addEventListener("click", async () => {
  const out = $("test-result");
  out.replaceChildren(el("p", "Sending…"));
  const { ok, data } = await api("POST", `/api/integrations/${encodeURIComponent(current.id)}/test-chat`);
  if (!ok || !data.accepted) {
    out.replaceChildren(el("p", `ingest did not accept it (${data.ingest_status ?? data.message ?? "no answer"}).`, "error"));
    return;
  }
  out.replaceChildren(el("p", `Accepted by ingest (event ${data.event_id}). Following it…`, "step"));
  const started = Date.now();
  const follow = async () => {
    const r = await api("GET", `/api/test-chats/${encodeURIComponent(data.event_id)}`);
    const steps = (r.ok && r.data.steps) || [];
    out.replaceChildren(el("p", `Accepted by ingest (event ${data.event_id}).`, "step"));
    for (const s of steps) {
      let text = `${new Date(s.at).toLocaleTimeString()} ${s.outcome.replaceAll("_", " ")}`;
      if (s.outcome === "delivered") text += ` to CoMagic with rule ${s.rule}, CoMagic id ${s.comagic_id ?? "not given"}`;
      if (s.class) text += ` (${s.class})`;
      if (s.mnemonic) text += `: ${s.mnemonic}`;
      if (s.fix) text += `. Fix: ${s.fix}`;
      else if (s.error && s.outcome !== "delivered") text += `: ${s.error}`;
      out.append(el("p", text, `step ${s.outcome}`));
    }
    const last = steps.length ? steps[steps.length - 1].outcome : null;
    if (last === "delivered" || last === "dead_lettered") return;
    if (Date.now() - started > 60000) { out.append(el("p", "Nothing more within a minute: see the state above and the dead letters.")); return; }
    setTimeout(follow, 1000);
  };
  setTimeout(follow, 500);
});

// ---- dead letters ----

async function loadDeadLetters() {
  const { ok, data } = await api("GET", `/api/integrations/${encodeURIComponent(current.id)}/dead-letters`);
  const body = $("dead-letters").querySelector("tbody");
  body.replaceChildren();
  if (!ok) { $("dead-summary").textContent = data.message || "The dead-letter queue cannot be read."; return; }
  const total = (data.stats && data.stats.total) || 0;
  $("dead-summary").textContent = total === 0 ? "None." : `${total} dead letters.`;
  $("dead-replay").hidden = total === 0;
  for (const l of data.letters) {
    const row = el("tr");
    row.append(el("td", l.dead_at || "–"), el("td", l.kind || "–"), el("td", l.class || "–"), el("td", l.error || ""));
    body.append(row);
  }
}

$("dead-refresh").addEventListener("click", loadDeadLetters);
$("dead-replay").addEventListener("click", async () => {
  const { ok, data } = await api("POST", `/api/integrations/${encodeURIComponent(current.id)}/dead-letters/replay`, {});
  $("dead-result").textContent = ok ? data.result : data.message;
  loadDeadLetters();
});

if (token) showList(); else show("sign-in");
