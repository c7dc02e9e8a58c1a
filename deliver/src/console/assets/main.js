"use strict";
// The settings console: plain JavaScript modules over the admin API (docs/console.md). Everything
// shown comes from the API; nothing is loaded from elsewhere.

import { $, api, show, signIn, signOut, signedIn } from "./common.js";
import { openIntegration } from "./detail.js";
import { showList } from "./list.js";

$("sign-in-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  signIn($("admin-token").value.trim());
  const { ok, status } = await api("GET", "/api/integrations");
  if (!ok) {
    // Only a 401 says the token is wrong; anything else is the console's own trouble.
    $("sign-in-error").textContent = status === 401 ? "That token was refused."
      : `The console cannot answer now (status ${status}); try again in a moment.`;
    return;
  }
  $("admin-token").value = "";
  $("sign-in-error").textContent = "";
  showList();
});
$("sign-out").addEventListener("click", signOut);
$("back").addEventListener("click", showList);
$("new-integration").addEventListener("click", () => openIntegration(null));

if (signedIn()) showList(); else show("sign-in");
