(function (w) {
  var KEY = "__SESSION_KEY__";
  var hooked = false;
  function sessionId() {
    try {
      var c = w.Comagic;
      return c && typeof c.getSessionId === "function" ? c.getSessionId() : null;
    } catch (e) {
      return null;
    }
  }
  function pass() {
    var id = sessionId();
    if (!id || typeof w.Verbox !== "function") return false;
    var custom = {};
    custom[KEY] = String(id);
    try {
      w.Verbox("setClientInfo", { custom: custom });
    } catch (e) {
      return false;
    }
    return true;
  }
  function hook() {
    if (hooked || typeof w.Verbox !== "function") return hooked;
    try {
      w.Verbox("setCallback", "fullyLoaded", pass);
      w.Verbox("setCallback", "clientSendMessage", pass);
      hooked = true;
    } catch (e) {}
    return hooked;
  }
  var tries = 0;
  function poll() {
    tries += 1;
    var ready = hook() && pass();
    if (!ready && tries < 120) w.setTimeout(poll, 500);
  }
  poll();
})(window);
