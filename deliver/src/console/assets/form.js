"use strict";
// The settings form: filled from an integration and the account's pick-lists, read back into
// the API's form.

import { $, el, page } from "./common.js";

const MESSENGERS = ["telegram", "whatsapp", "viber", "vk", "facebook", "instagram", "avito", "ok"];
// Write-only fields: the API shows a mask; an empty input keeps the saved value.
export const SECRET_INPUTS = [["comagic_token", "f-comagic-token"], ["webhook_token", "f-webhook-token"], ["verbox_secret_key", "f-secret"]];

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
  options(campaign, page.choices && page.choices.campaigns, t.campaign_id, "– campaign –");
  options(site, page.choices && page.choices.sites, t.site_id, "– site –");
  options(source, page.choices && page.choices.sources, t.source_id, "– source –");
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

function employeeTyped() {
  return !(page.choices && page.choices.employees && page.choices.employees.length);
}

export function fillForm(form) {
  const f = form || {};
  $("f-id").value = f.id || "";
  $("f-id").readOnly = !!page.current;
  $("f-active").checked = f.active !== false;
  $("f-offline").checked = f.offline_enabled !== false;
  // A tenant's page has no address field: the operator sets where its token goes.
  if ($("f-api")) $("f-api").value = f.comagic_api || "https://dataapi.comagic.ru/v2.0";
  for (const [field, input] of SECRET_INPUTS) {
    $(input).value = "";
    $(input).placeholder = f[field] ? `saved (${f[field]}); leave empty to keep` : "";
  }
  options($("f-employee"), page.choices && page.choices.employees, f.employee_id, "– employee –");
  // Without the account's list (CoMagic did not answer, or the token is not saved yet) the id is
  // typed in.
  const manual = employeeTyped();
  $("f-employee").hidden = manual;
  $("f-employee-manual").hidden = $("f-employee-help").hidden = !manual;
  $("f-employee-manual").value = f.employee_id || "";
  $("f-timezone").value = f.timezone || (page.choices && page.choices.timezone) || "Europe/Moscow";
  $("f-session-key").value = f.session_key || "comagic_session_id";
  const def = $("t-default");
  def.querySelectorAll(".target-row").forEach((r) => r.remove());
  targetRow(def, "default", "Default", f.default, false);
  const messengers = $("messengers");
  messengers.querySelectorAll(".target-row").forEach((r) => r.remove());
  for (const m of MESSENGERS) targetRow(messengers, m, m, (f.messengers || {})[m], true);
}

export function readForm() {
  const form = {
    id: $("f-id").value.trim(),
    active: $("f-active").checked,
    offline_enabled: $("f-offline").checked,
    employee_id: Number($(employeeTyped() ? "f-employee-manual" : "f-employee").value || 0),
    timezone: $("f-timezone").value.trim(),
    session_key: $("f-session-key").value.trim(),
    default: readTarget("default") || {},
    messengers: {},
  };
  if ($("f-api")) form.comagic_api = $("f-api").value.trim();
  for (const [field, input] of SECRET_INPUTS) {
    const value = $(input).value.trim();
    if (value) form[field] = value;
  }
  for (const m of MESSENGERS) { const t = readTarget(m); if (t) form.messengers[m] = t; }
  // Keys the page does not edit (event lists, secrets' variables) are left out: the server keeps them.
  return form;
}

export function clearErrors() {
  document.querySelectorAll("[aria-invalid=true]").forEach((n) => n.removeAttribute("aria-invalid"));
  $("save-error").replaceChildren();
  $("saved").textContent = "";
}

// The input a field error names (`default.campaign_id`, `messengers.vk.site_id`, `employee_id`).
export function inputFor(field) {
  const parts = field.split(".");
  const names = { comagic_token: "f-comagic-token", webhook_token: "f-webhook-token", verbox_secret_key: "f-secret",
    employee_id: employeeTyped() ? "f-employee-manual" : "f-employee", timezone: "f-timezone", session_key: "f-session-key", comagic_api: "f-api", id: "f-id" };
  if (names[parts[0]]) return $(names[parts[0]]);
  const key = parts[0] === "default" ? "default" : parts[1];
  const which = (parts[parts.length - 1] || "").replace("_id", "");
  return $(`t-${key}-${which}`) || $(`t-${key}-mode`);
}
