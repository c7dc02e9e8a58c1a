// Loads the site script with stub Comagic and Verbox objects arriving in the given order, and
// checks that the session id is passed once both are there and again on each client message.
const fs = require("fs");
const vm = require("vm");
const assert = require("assert");

const [script, order] = process.argv.slice(2);
const calls = [];
const callbacks = {};
const verbox = function (method, a, b) {
  // The script runs in another realm: keep a plain copy so deepStrictEqual compares values.
  if (method === "setClientInfo") calls.push(JSON.parse(JSON.stringify(a)));
  if (method === "setCallback") callbacks[a] = b;
};
const comagic = { getSessionId: () => 900001 };
const window = { setTimeout: (fn, ms) => setTimeout(fn, Math.min(ms, 20)) };
vm.createContext(window);
window.window = window;
if (order === "comagic-first") window.Comagic = comagic;
if (order === "verbox-first") window.Verbox = verbox;
vm.runInContext(fs.readFileSync(script, "utf8"), window);

setTimeout(() => {
  if (order === "neither") {
    assert.deepStrictEqual(calls, [], "nothing is called without both scripts");
    process.exit(0);
  }
  assert.deepStrictEqual(calls, [], "nothing before both are loaded");
  if (order === "comagic-first") window.Verbox = verbox;
  else window.Comagic = comagic;
  setTimeout(() => {
    assert.deepStrictEqual(calls, [{ custom: { comagic_session_id: "900001" } }], "set once both are loaded");
    assert.ok(callbacks.clientSendMessage && callbacks.fullyLoaded, "hooks on fullyLoaded and clientSendMessage");
    callbacks.clientSendMessage();
    assert.strictEqual(calls.length, 2, "set again on a client message");
    process.exit(0);
  }, 200);
}, 100);
