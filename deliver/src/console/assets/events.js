"use strict";
// An integration's events and each one's journey: what deliver did with it, step by step
// (docs/delivery.md "The journey"). A search by dialog id, contact and outcome, newest first a page
// at a time; one event's facts, its item and its steps; a dead-lettered event sent again. Everything
// shown is text (`el` sets textContent): an error CoMagic answered may hold anything.

import { $, api, el, page } from "./common.js";
import { loadDeadLetters } from "./tools.js";

const FIELDS = { dialog: "events-dialog", contact: "events-contact", outcome: "events-outcome" };

// The search shown, the cursor of its next page, and the journey open (its event id). `turn`
// counts searches and `journeyTurn` opened journeys: an answer to an older one is not shown.
let search = null;
let next = null;
let turn = 0;
let opened = null;
let journeyTurn = 0;
// The steps the journey shown had taken (`taken`): a send-again follows it until a newer one ends it.
let shownSteps = 0;

const when = (t) => (t ? new Date(t).toLocaleString() : "–");
const dash = (v) => (v === undefined || v === null || v === "" ? "–" : String(v));
// The step that delivered it (its rule and CoMagic id), else the newest.
const keyStep = (j) => (j.steps || []).findLast((s) => s.outcome === "delivered") || (j.steps || []).at(-1) || {};
// Steps ever taken, those left out too: grows with every step.
const taken = (j) => (j.steps || []).length + (j.steps_dropped || 0);

function clearErrors() {
  $("events-error").textContent = "";
  for (const id of Object.values(FIELDS)) $(id).removeAttribute("aria-invalid");
}

function showError(data, fallback) {
  $("events-error").textContent = data.message || fallback;
  const input = data.field && FIELDS[data.field] && $(FIELDS[data.field]);
  if (input) { input.setAttribute("aria-invalid", "true"); input.focus(); }
}

function row(j) {
  const tr = el("tr");
  const open = el("button", j.event_id, "link");
  open.type = "button";
  open.setAttribute("aria-label", `Open the journey of event ${j.event_id}`);
  open.addEventListener("click", () => openJourney(j.event_id));
  const id = el("td");
  id.append(open);
  const step = keyStep(j);
  tr.append(el("td", when(j.accepted_at)), id, el("td", dash(j.dialog_id)), el("td", dash(j.contact)),
    el("td", j.end || "on its way", `end-${j.end || "open"}`), el("td", dash(j.last)),
    el("td", dash(step.rule)), el("td", dash(step.comagic_id)));
  tr.dataset.event = j.event_id;
  return tr;
}

async function fetchPage(more) {
  const mine = more ? turn : ++turn;
  const integration = page.current.id;
  const query = new URLSearchParams(search);
  if (more && next) query.set("before", next);
  const { ok, data } = await api("GET", `/api/integrations/${encodeURIComponent(integration)}/events?${query}`);
  if (mine !== turn || !page.current || page.current.id !== integration) return;
  const body = $("events-list").querySelector("tbody");
  if (!more) body.replaceChildren();
  if (!ok) {
    showError(data, "The events cannot be read.");
    $("events-more").hidden = true;
    return;
  }
  for (const j of data.events) body.append(row(j));
  next = data.next || null;
  $("events-more").hidden = !next;
  const rows = body.rows.length;
  $("events-summary").textContent = rows === 0 ? (next ? "None on this page: there may be more." : "No events found.")
    : `${rows} event${rows === 1 ? "" : "s"}${next ? ", more below" : ""}.`;
}

function readSearch() {
  const wanted = {};
  for (const [name, id] of Object.entries(FIELDS)) {
    const value = $(id).value.trim();
    if (value) wanted[name] = value;
  }
  return wanted;
}

// The integration whose events are shown.
let shownFor = null;

// Called when an integration is shown: its newest events, no journey open; shown again (after a
// save), the search and the journey stay.
export function loadEvents() {
  if (shownFor === page.current.id) { fetchPage(false); return; }
  shownFor = page.current.id;
  clearErrors();
  for (const id of Object.values(FIELDS)) $(id).value = "";
  search = {};
  next = null;
  closeJourney();
  fetchPage(false);
}

$("events-form").addEventListener("submit", (e) => {
  e.preventDefault();
  clearErrors();
  search = readSearch();
  next = null;
  fetchPage(false);
});
$("events-more").addEventListener("click", () => fetchPage(true));

// ---- one journey ----

function closeJourney() {
  opened = null;
  journeyTurn++;
  $("event-journey").hidden = true;
  $("event-send-result").textContent = "";
}

function fact(list, name, label, value) {
  const dd = el("dd", dash(value));
  dd.dataset.fact = name;
  list.append(el("dt", label), dd);
}

function stepRow(s) {
  const tr = el("tr", null, `step-${s.outcome}`);
  const cls = [s.class, s.mnemonic].filter(Boolean).join(" / ");
  const comagic = s.comagic_id === undefined || s.comagic_id === null ? "–"
    : s.items ? `${s.comagic_id} (call of ${s.items} item${s.items === 1 ? "" : "s"})` : String(s.comagic_id);
  tr.append(el("td", when(s.at)), el("td", s.outcome, `step ${s.outcome}`), el("td", dash(s.rule)), el("td", comagic),
    el("td", dash(cls)), el("td", dash(s.fix)), el("td", dash(s.tier)), el("td", dash(s.replica)), el("td", s.error || ""));
  return tr;
}

// The journey says whether it may be sent again: dead-lettered and not replayed since, or skipped
// with its webhook kept.
const resendable = (j) => j.can_send_again === true;

function showJourney(j) {
  shownSteps = taken(j);
  $("event-journey-title").textContent = `Journey of event ${j.event_id}`;
  const facts = $("event-facts");
  facts.replaceChildren();
  fact(facts, "kind", "Kind", j.kind);
  fact(facts, "accepted_at", "Accepted at", when(j.accepted_at));
  fact(facts, "accepted_by", "Accepted by", j.accepted_by);
  fact(facts, "dialog", "Dialog", j.dialog_id);
  fact(facts, "contact", "Contact (masked)", j.contact);
  fact(facts, "end", "End", j.end || "on its way");
  fact(facts, "last", "Last step", j.last);
  if (j.steps_dropped) fact(facts, "dropped", "Steps left out", `${j.steps_dropped} between the first and the newest`);
  $("event-item").textContent = j.item ? JSON.stringify(j.item, null, 2) : "No item: it was not mapped.";
  const body = $("event-steps").querySelector("tbody");
  body.replaceChildren(...(j.steps || []).map(stepRow));
  $("event-send-again").hidden = !resendable(j);
  $("event-journey").hidden = false;
}

// Shows the journey of `eventId`; answers it (null when it cannot be read, or another was opened).
async function loadJourney(eventId, mine) {
  const { ok, data } = await api("GET", `/api/events/${encodeURIComponent(eventId)}`);
  if (mine !== journeyTurn) return null;
  if (!ok) {
    $("event-journey").hidden = false;
    $("event-send-again").hidden = true;
    $("event-send-result").textContent = data.message || "The journey cannot be read.";
    return null;
  }
  showJourney(data);
  return data;
}

async function openJourney(eventId) {
  opened = eventId;
  const mine = ++journeyTurn;
  $("event-send-result").textContent = "";
  const shown = await loadJourney(eventId, mine);
  if (shown) $("event-journey").scrollIntoView({ block: "nearest" });
}

// After a send-again: the journey read again every second until its copy ends (or a minute).
function follow(eventId, mine, started, before) {
  setTimeout(async () => {
    if (mine !== journeyTurn) return;
    const j = await loadJourney(eventId, mine);
    if (!j) return;
    const ended = taken(j) > before && ["delivered", "dead_lettered", "skipped"].includes(j.last);
    if (ended) { fetchPage(false); return; }
    if (Date.now() - started > 60000) {
      $("event-send-result").append(el("span", " Not ended within a minute: reload it later."));
      return;
    }
    follow(eventId, mine, started, before);
  }, 1000);
}

$("event-reload").addEventListener("click", () => { if (opened) openJourney(opened); });

$("event-send-again").addEventListener("click", async () => {
  const eventId = opened;
  if (!eventId) return;
  if (!confirm(`Send event ${eventId} of ${page.current.id} again? Its dead letter goes back to delivery.`)) return;
  const mine = journeyTurn;
  const before = shownSteps;
  const { ok, status, data } = await api("POST", `/api/events/${encodeURIComponent(eventId)}/send-again`);
  if (mine !== journeyTurn) return;
  $("event-send-result").textContent = ok ? `${data.result}.` : (data.message || `Not sent again (status ${status}).`);
  loadDeadLetters();
  const j = await loadJourney(eventId, mine);
  if (ok && j) follow(eventId, mine, Date.now(), before);
});
