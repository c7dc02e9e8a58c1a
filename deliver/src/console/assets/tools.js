"use strict";
// What an integration's page does besides its settings: the test chat and the dead letters.

import { $, api, el, page } from "./common.js";

$("send-test").addEventListener("click", async () => {
  const out = $("test-result");
  out.replaceChildren(el("p", "Sending…"));
  const { ok, data } = await api("POST", `/api/integrations/${encodeURIComponent(page.current.id)}/test-chat`);
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

// The count the page last showed, for the replay's confirmation.
let deadTotal = 0;

export async function loadDeadLetters() {
  const { ok, data } = await api("GET", `/api/integrations/${encodeURIComponent(page.current.id)}/dead-letters`);
  const body = $("dead-letters").querySelector("tbody");
  body.replaceChildren();
  if (!ok) { $("dead-summary").textContent = data.message || "The dead-letter queue cannot be read."; return; }
  const total = (data.stats && data.stats.total) || 0;
  deadTotal = total;
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
  if (!confirm(`Replay all ${deadTotal} dead letters of ${page.current.id}?`)) return;
  const { ok, data } = await api("POST", `/api/integrations/${encodeURIComponent(page.current.id)}/dead-letters/replay`, {});
  $("dead-result").textContent = ok ? data.result : data.message;
  loadDeadLetters();
});

$("dead-purge").addEventListener("click", async () => {
  const { ok, data } = await api("POST", `/api/integrations/${encodeURIComponent(page.current.id)}/dead-letters/purge`, { confirm: $("purge-confirm").value.trim() });
  $("dead-result").textContent = ok ? data.result : data.message;
  if (ok) $("purge-confirm").value = "";
  loadDeadLetters();
});
