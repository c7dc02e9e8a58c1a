"use strict";
// Whether the integration's saved version runs in every ingest and deliver process: "Saved" says
// only that the store took it. A process that cannot be read is "unknown", never "applied".

import { $, el } from "./common.js";

// The status line under the form's buttons, made on first use.
function line() {
  let node = $("applied");
  if (!node) {
    node = el("div", null, "applied");
    node.id = "applied";
    node.setAttribute("role", "status");
    $("saved").after(node);
  }
  return node;
}

function behindText(b) {
  if (b.reason && b.reason.startsWith("unknown")) return `${b.page}: ${b.reason}`;
  const running = b.version ? `runs version ${b.version}` : "does not serve it";
  return b.reason ? `${b.page}: ${running}; refuses this version: ${b.reason}` : `${b.page}: ${running} (not re-read yet)`;
}

// `applied` as the API gives it (the integration's view, or its state); nothing for a new one.
export function showApplied(applied) {
  const node = line();
  if (!applied) { node.replaceChildren(); return; }
  if (applied.applied) {
    node.className = "applied ok";
    node.replaceChildren(el("p", `Applied: all ${applied.processes} running processes run version ${applied.version}.`));
    return;
  }
  node.className = "applied error";
  const head = applied.processes === 0
    ? "Not known to be applied: no ingest or deliver process could be read."
    : `Not applied everywhere: ${applied.have_it} of ${applied.processes} processes run version ${applied.version}.`;
  const list = el("ul");
  for (const b of applied.behind) list.append(el("li", behindText(b)));
  node.replaceChildren(el("p", head), list);
}
