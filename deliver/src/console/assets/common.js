"use strict";
// What every part of the console shares: the token, the API call, the page's sections and the
// integration being edited. Text from the API is set with textContent, never parsed as HTML.

export const $ = (id) => document.getElementById(id);
const TOKEN_KEY = "bridge-admin-token";
let token = sessionStorage.getItem(TOKEN_KEY) || "";

// The integration being edited, as the API last returned it (null: a new one), and its
// account's pick-lists.
// `who` is the caller as /api/whoami answers.
export const page = { current: null, choices: null, who: null };
// The one timer polling for the page shown; replaced, never stacked.
let poll = null;

export function signedIn() { return token !== ""; }

export function signIn(value) {
  token = value;
  sessionStorage.setItem(TOKEN_KEY, token);
}

// A link an operator issued carries its token in the fragment (`#token=…`), which no server
// sees: it is kept for this tab's session and taken out of the address bar and the history. A
// link with another token than the one signed in with switches only when the user says so: a
// link anyone can send must not quietly put an operator's next edits into the sender's session.
export function tokenFromLink() {
  const found = /^#token=([A-Za-z0-9_]+)$/.exec(location.hash);
  if (!found) return;
  history.replaceState(null, "", location.pathname + location.search);
  const switching = signedIn() && token !== found[1];
  if (switching && !confirm("This link signs in with another access than yours in this tab. Switch to it?")) return;
  signIn(found[1]);
}

export const isTenant = () => !!page.who && page.who.role === "tenant";

// `path` as the API names it ("/api/…"), fetched relative to the page, so the console also works
// behind a proxy that serves it under a path prefix.
export async function api(method, path, body) {
  const response = await fetch(path.replace(/^\//, ""), {
    method,
    headers: { "Authorization": "Bearer " + token, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await response.json().catch(() => ({}));
  if (response.status === 401) { signOut(); }
  return { status: response.status, ok: response.ok, data };
}

export function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

// Runs `task` every `ms` until another section is shown or another poll starts.
export function polling(task, ms) {
  stopPolling();
  poll = setInterval(task, ms);
}

function stopPolling() {
  if (poll) { clearInterval(poll); poll = null; }
}

export function show(section) {
  for (const id of ["sign-in", "list", "detail", "access"]) $(id).hidden = id !== section;
  $("sign-out").hidden = section === "sign-in";
  $("who").hidden = section === "sign-in";
  stopPolling();
}

export function signOut() {
  token = "";
  page.who = null;
  sessionStorage.removeItem(TOKEN_KEY);
  show("sign-in");
  $("admin-token").focus();
}
