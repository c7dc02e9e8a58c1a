"use strict";
// An integration's change history (who changed which fields, when), a restore of an earlier
// version, and its delete, confirmed by typing its id. A restore is a save: the page reopens the
// integration as the answer left it.

import { $, api, el, page } from "./common.js";

const path = (suffix) => `/api/integrations/${encodeURIComponent(page.current.id)}${suffix}`;

function describe(entry) {
  if (entry.action === "restored") return `restored from version ${entry.restored_from}`;
  if (entry.detail) return `${entry.action}: ${entry.detail}`;
  return entry.to_version ? `${entry.action} (version ${entry.to_version})` : entry.action;
}

// `reopen(id)` shows the integration again after a restore.
export async function loadHistory(reopen) {
  const body = $("history").querySelector("tbody");
  body.replaceChildren();
  $("history-result").textContent = "";
  const { ok, data } = await api("GET", path("/history"));
  if (!ok) { $("history-result").textContent = data.message || "The history cannot be read."; return; }
  for (const entry of data.entries) {
    const row = el("tr");
    row.append(el("td", new Date(entry.at).toLocaleString()), el("td", entry.who), el("td", describe(entry)),
      el("td", entry.changed.join(", ")));
    const cell = el("td");
    const earlier = entry.to_version && entry.to_version !== page.current.version && !entry.detail;
    if (earlier) {
      const restore = el("button", "Restore this version");
      restore.type = "button";
      restore.addEventListener("click", async () => {
        const answer = await api("POST", path("/restore"), { version: page.current.version, restore: entry.to_version });
        if (!answer.ok) { $("history-result").textContent = answer.data.message || "The restore failed."; return; }
        await reopen(page.current.id);
      });
      cell.append(restore);
    }
    row.append(cell);
    body.append(row);
  }
}

$("delete").addEventListener("click", async () => {
  if ($("delete-confirm").value.trim() !== page.current.id) {
    $("history-result").textContent = `Type "${page.current.id}" to delete it.`;
    return;
  }
  const { ok, data } = await api("DELETE", path(""), { version: page.current.version });
  if (!ok) { $("history-result").textContent = data.message || "The delete failed."; return; }
  $("delete-confirm").value = "";
  $("back").click();
});
