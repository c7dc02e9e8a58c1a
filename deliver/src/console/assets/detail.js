"use strict";
// One integration: its form saved and checked, its state, its setup text.

import { $, api, el, page, polling, show } from "./common.js";
import { SECRET_INPUTS, clearErrors, fillForm, inputFor, readForm } from "./form.js";
import { loadHistory } from "./history.js";
import { loadDeadLetters } from "./tools.js";
import { loadEvents } from "./events.js";
import { showApplied } from "./applied.js";

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
    reload.addEventListener("click", () => openIntegration(page.current.id));
    box.append(reload);
  }
}

async function save(force) {
  clearErrors();
  const form = readForm();
  const body = { integration: form, force: !!force };
  let answer;
  if (page.current) {
    body.version = page.current.version;
    answer = await api("PUT", `/api/integrations/${encodeURIComponent(page.current.id)}`, body);
  } else {
    answer = await api("POST", "/api/integrations", body);
  }
  if (!answer.ok) { showError(answer.data, answer.data.error === "check_failed"); return; }
  page.current = answer.data;
  $("saved").textContent = `Saved (version ${page.current.version}).`;
  await showIntegration(page.current);
}

$("settings").addEventListener("submit", (e) => { e.preventDefault(); save(false); });

$("deactivate").addEventListener("click", async () => {
  if (!page.current) return;
  const { ok, data } = await api("POST", `/api/integrations/${encodeURIComponent(page.current.id)}/deactivate`, { version: page.current.version });
  if (!ok) { showError(data, false); return; }
  page.current = data;
  await showIntegration(page.current);
});

$("load-choices").addEventListener("click", async () => {
  $("choices-status").textContent = "";
  const request = {};
  if ($("f-api")) request.comagic_api = $("f-api").value.trim();
  const typed = $("f-comagic-token").value.trim();
  if (typed) request.comagic_token = typed;
  if (page.current) request.id = page.current.id;
  const { ok, data } = await api("POST", "/api/account", request);
  if (!ok) { $("choices-status").className = "error"; $("choices-status").textContent = (data.problems || [data.message]).join(" "); return; }
  $("choices-status").className = "ok";
  const kept = readForm();
  const secrets = SECRET_INPUTS.map(([, input]) => $(input).value);
  page.choices = data;
  fillForm({ ...(page.current ? page.current.integration : {}), ...kept, timezone: kept.timezone || data.timezone });
  SECRET_INPUTS.forEach(([, input], i) => { $(input).value = secrets[i]; });
  $("choices-status").textContent = `Loaded ${data.employees.length} employees, ${data.campaigns.length} active campaigns, ${data.sites.length} sites, ${data.sources.length} sources.`;
});

// ---- one integration ----

export async function openIntegration(id) {
  clearErrors();
  page.choices = null;
  $("full-urls").hidden = true;
  $("test-result").replaceChildren();
  if (id === null) {
    page.current = null;
    show("detail");
    $("detail-title").textContent = "New integration";
    for (const s of ["setup-section", "test-section", "events-section", "dead-section", "history-section"]) $(s).hidden = true;
    $("deactivate").hidden = true;
    $("paused-banner").hidden = true;
    showApplied(null);
    fillForm(null);
    $("f-id").focus();
    return;
  }
  const { ok, data } = await api("GET", `/api/integrations/${encodeURIComponent(id)}`);
  if (!ok) return;
  page.current = data;
  show("detail");
  await showIntegration(page.current);
  $("f-api").focus();
}

async function showIntegration(view) {
  $("detail-title").textContent = `Integration ${view.id}`;
  for (const s of ["setup-section", "test-section", "events-section", "dead-section", "history-section"]) $(s).hidden = false;
  $("deactivate").hidden = !view.active;
  if (!page.choices) {
    const lists = await api("GET", `/api/integrations/${encodeURIComponent(view.id)}/account`);
    if (lists.ok) page.choices = lists.data; else $("choices-status").textContent = (lists.data.problems || [lists.data.message]).join(" ");
  }
  fillForm(view.integration);
  showState(view.state);
  showApplied(view.applied);
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
  loadEvents();
  loadHistory(openIntegration);
  polling(async () => {
    const s = await api("GET", `/api/integrations/${encodeURIComponent(view.id)}/state`);
    // An answer that comes back after another integration was opened is not this page's.
    if (s.ok && page.current && page.current.id === view.id) { showState(s.data); showApplied(s.data.applied); }
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
