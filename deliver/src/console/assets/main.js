"use strict";
// The settings console: plain JavaScript modules over the admin API (docs/console.md). Everything
// shown comes from the API; nothing is loaded from elsewhere. Who is signed in decides what is
// shown: an operator the list and the "Access" section, a tenant its own integration only (the
// API refuses the rest whatever the page shows).

import { $, api, page, show, signIn, signOut, signedIn, tokenFromLink, whoText } from "./common.js";
import { openIntegration } from "./detail.js";
import { showList } from "./list.js";
import { showAccess } from "./tokens.js";

// Asks who the token is, then opens what that one may see.
async function start() {
  const { ok, status, data } = await api("GET", "/api/whoami");
  if (!ok) {
    show("sign-in");
    // Only a 401 says the token is wrong; anything else is the console's own trouble.
    $("sign-in-error").textContent = status === 401 ? "That token was refused (or has expired, or was revoked)."
      : status === 429 ? data.message
      : `The console cannot answer now (status ${status}); try again in a moment.`;
    return;
  }
  page.who = data;
  $("who").textContent = whoText(data);
  $("sign-in-error").textContent = "";
  if (data.role === "tenant") {
    document.querySelectorAll(".operator-only").forEach((node) => node.remove());
    openIntegration(data.integration);
  } else {
    showList();
  }
}

$("sign-in-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  signIn($("admin-token").value.trim());
  $("admin-token").value = "";
  start();
});
$("sign-out").addEventListener("click", signOut);
$("back").addEventListener("click", showList);
$("new-integration").addEventListener("click", () => openIntegration(null));
$("open-access").addEventListener("click", showAccess);
$("access-back").addEventListener("click", showList);

tokenFromLink().then((refused) => {
  if (signedIn()) start(); else show("sign-in");
  if (refused) $("sign-in-error").textContent = refused;
});
