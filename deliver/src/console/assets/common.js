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

// Who a token is, as the page shows it: "Acme's manager · tenant of acme · until …".
export function whoText(who) {
  const role = who.role === "tenant" ? `tenant of ${who.integration}` : "operator";
  const until = who.expires_at ? ` · until ${new Date(who.expires_at).toLocaleString()}` : "";
  return `${who.name} · ${role}${who.read_only ? " (read-only)" : ""}${until}`;
}

// A link an operator issued carries its token in the fragment (`#token=…`), which no server
// sees: it is kept for this tab's session and taken out of the address bar and the history. A
// link signs in only once the user has seen as whom and said yes: a link anyone can send must
// not quietly put the user's next edits (a CoMagic token typed in, say) into the sender's
// integration. Answers what to tell the user when the link's token is refused, else "".
export async function tokenFromLink() {
  const found = /^#token=([A-Za-z0-9_]+)$/.exec(location.hash);
  if (!found) return "";
  history.replaceState(null, "", location.pathname + location.search);
  if (found[1] === token) return "";
  const response = await fetch("api/whoami", { headers: { "Authorization": "Bearer " + found[1] } });
  if (!response.ok) return "That link's token was refused (it may have expired or been revoked).";
  const as = whoText(await response.json());
  const question = signedIn()
    ? `This link signs in as ${as}: another access than yours in this tab. Switch to it?`
    : `This link signs in as ${as}. Sign in?`;
  if (confirm(question)) signIn(found[1]);
  return "";
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
