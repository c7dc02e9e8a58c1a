"use strict";
// "Access": an operator issues a link for a tenant (one integration) or a read-only operator,
// sees the tokens issued and revokes them. The token is in the answer to issuing only, so the
// link is shown once; the list never has it.

import { $, api, el, show } from "./common.js";

const ROLES = {
  "tenant": { role: "tenant", read_only: false },
  "tenant-read-only": { role: "tenant", read_only: true },
  "operator-read-only": { role: "operator", read_only: true },
};

async function fillIntegrations() {
  const { ok, data } = await api("GET", "/api/integrations");
  if (!ok) return;
  $("issue-integration").replaceChildren(...data.integrations.map((i) => {
    const option = el("option", i.id);
    option.value = i.id;
    return option;
  }));
}

async function refreshTokens() {
  const { ok, data } = await api("GET", "/api/tokens");
  if (!ok) return;
  $("issue-days").max = data.max_lifetime_days;
  const body = $("tokens").querySelector("tbody");
  body.replaceChildren(...data.tokens.map((t) => {
    const row = el("tr");
    const action = el("td");
    if (t.status === "active") {
      const revoke = el("button", "Revoke");
      revoke.type = "button";
      revoke.addEventListener("click", async () => {
        await api("POST", `/api/tokens/${encodeURIComponent(t.id)}/revoke`);
        refreshTokens();
      });
      action.append(revoke);
    }
    row.append(el("td", t.name), el("td", t.role + (t.read_only ? " (read-only)" : "")), el("td", t.integration || "all"),
      el("td", new Date(t.expires_at).toLocaleString()), el("td", t.status), action);
    row.dataset.token = t.id;
    return row;
  }));
}

export async function showAccess() {
  show("access");
  $("issued").hidden = true;
  $("issue-error").textContent = "";
  await Promise.all([fillIntegrations(), refreshTokens()]);
}

$("issue-role").addEventListener("change", () => {
  $("issue-integration").disabled = ROLES[$("issue-role").value].role !== "tenant";
});

$("issue-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const chosen = ROLES[$("issue-role").value];
  const days = Number($("issue-days").value || 0);
  const request = { ...chosen, expires_at: new Date(Date.now() + days * 86400000).toISOString() };
  if (chosen.role === "tenant") request.integration = $("issue-integration").value;
  const name = $("issue-name").value.trim();
  if (name) request.name = name;
  const { ok, data } = await api("POST", "/api/tokens", request);
  if (!ok) { $("issue-error").textContent = data.message || "The token was not issued."; return; }
  $("issue-error").textContent = "";
  // The page's own address, so a console served under a path prefix gives a link that works.
  $("issued-link").value = `${location.origin}${location.pathname}#token=${data.token}`;
  $("issued").hidden = false;
  refreshTokens();
});
