"use strict";
// The table of integrations.

import { $, api, el, show } from "./common.js";
import { openIntegration } from "./detail.js";

function stateText(i) {
  if (!i.active) return ["inactive", "state-off"];
  if (i.state && i.state.paused) return ["paused", "state-paused"];
  return ["active", "state-ok"];
}

export async function showList() {
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
