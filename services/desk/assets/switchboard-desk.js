/*
 * switchboard-desk.js: Switchboard's desk SDK (docs/desk.md, "The SDK"). One file, no build step,
 * no dependencies; plain ES2018. Served by the desk service at GET /sdk/switchboard-desk.js.
 *
 *   <script src="https://switchboard.example.com/sdk/switchboard-desk.js"></script>
 *   <script>
 *     const desk = SwitchboardDesk.connect({
 *       url: "https://switchboard.example.com",  // the desk service
 *       token: "sbd_…",                          // a session token from POST /v1/desk/sessions
 *       // transport: "websocket" | "sse",       // default "websocket", falls back to SSE
 *       // autoPop: true,                        // open screen-pop URLs (mode "open"), emit "pop"
 *     });
 *     desk.on("incoming", (n) => showCaller(n.contact, n.call.customer));
 *     desk.on("pop", (p) => console.log(p.url, p.mode, p.notification));
 *     desk.on("auth_invalid", ({ reason }) => askTheBackEndForANewToken().then((t) => desk.login(t)));
 *     desk.on("connection", ({ state, transport }) => console.log(state, transport));
 *     desk.setStatus("break");
 *     desk.call("+79161234567").catch((e) => alert(e.message)); // e.code: "not_supported", …
 *     // After a call (n.call of any notification names it): its disposition, note and tags.
 *     desk.dispositions(n.call.source_id).then(({ codes }) => showCodes(codes));
 *     desk.setDisposition(n.call, { code: "sale", note: "two seats", tags: ["vip"] });
 *   </script>
 *
 * Events: every notification type by name ("hello", "incoming", "outgoing", "answered", "taken",
 * "ended", "missed", "status", "auth_invalid" with {reason}), "connection" with
 * {state: "connecting" | "open" | "closed", transport} ("open" once the server's hello arrived),
 * and "pop" with {url, mode, notification, opened}.
 *
 * The stream: a WebSocket (GET {url}/v1/desk/stream?token=…), or Server-Sent Events
 * (GET {url}/v1/desk/events?token=…) when asked, when WebSocket is missing, or after a WebSocket
 * failed to open twice in a row. It reconnects by itself with exponential back-off (0.5 s doubling
 * to 30 s, ±20 % jitter, reset by the server's hello), resumes from the last event id it saw, and
 * ignores an id it has already seen (the last 1000). After auth_invalid (a message, a WebSocket
 * close with code 4001, or a 401 to the token when a connection could not be opened) it never
 * reconnects with that token: give it a new one with desk.login(token).
 */
(function (global) {
  "use strict";

  var NOTIFICATION_TYPES = [
    "hello", "incoming", "outgoing", "answered", "taken", "ended", "missed", "status", "auth_invalid",
  ];
  var BACKOFF_START_MS = 500;
  var BACKOFF_MAX_MS = 30000;
  var SEEN_IDS_KEPT = 1000;
  var PINGS_EVERY_MS = 25000;
  // A WebSocket that has received nothing (not even a pong) for this long is taken as dead.
  var SILENT_LIMIT_MS = 60000;
  var WS_FAILURES_BEFORE_SSE = 2;
  var WS_CLOSE_AUTH_INVALID = 4001;

  function trimUrl(url) {
    return String(url || "").replace(/\/+$/, "");
  }

  function reportError(error) {
    if (typeof global.reportError === "function") {
      global.reportError(error);
    } else {
      setTimeout(function () { throw error; }, 0);
    }
  }

  function Desk(options) {
    if (!options || !options.url) throw new Error("SwitchboardDesk.connect: `url` is required");
    if (!options.token) throw new Error("SwitchboardDesk.connect: `token` is required");
    if (options.transport && options.transport !== "websocket" && options.transport !== "sse") {
      throw new Error('SwitchboardDesk.connect: `transport` is "websocket" or "sse"');
    }
    this.url = trimUrl(options.url);
    this.autoPop = options.autoPop !== false;
    this._token = options.token;
    this._preferred = options.transport || "websocket";
    this.transport = this._initialTransport();
    this.lastEventId = options.lastEventId || null;
    this.state = "closed";
    this._handlers = {};
    this._seen = new Set();
    this._seenOrder = [];
    this._popped = new Set();
    this._popOrder = [];
    this._attempt = 0;           // reconnects since the last hello (the back-off exponent)
    this._wsFailures = 0;        // WebSockets in a row that never opened
    this._conn = null;           // the live connection's handle (see _open*)
    this._timer = null;          // the pending reconnect
    this._stopped = false;       // close() or auth_invalid: no reconnect
    this._authInvalid = false;
    var self = this;
    // Start after the caller's synchronous desk.on(…) calls, so that they see every event.
    this._timer = setTimeout(function () { self._timer = null; self._connect(); }, 0);
  }

  Desk.prototype._initialTransport = function () {
    if (this._preferred === "sse" || typeof global.WebSocket !== "function") return "sse";
    return "websocket";
  };

  // --- events ----------------------------------------------------------------------------------

  Desk.prototype.on = function (type, fn) {
    if (typeof fn !== "function") throw new Error("desk.on: a function is required");
    (this._handlers[type] = this._handlers[type] || []).push(fn);
    return this;
  };

  Desk.prototype.off = function (type, fn) {
    var list = this._handlers[type];
    if (!list) return this;
    if (fn === undefined) {
      delete this._handlers[type];
    } else {
      var i = list.indexOf(fn);
      if (i >= 0) list.splice(i, 1);
    }
    return this;
  };

  Desk.prototype._emit = function (type, payload) {
    var list = (this._handlers[type] || []).slice();
    for (var i = 0; i < list.length; i++) {
      try {
        list[i].call(this, payload);
      } catch (error) {
        // A broken handler must not break the stream (nor the other handlers); the page still
        // sees the error.
        reportError(error);
      }
    }
  };

  Desk.prototype._setState = function (state) {
    if (this.state === state) return;
    this.state = state;
    this._emit("connection", { state: state, transport: this.transport });
  };

  // --- public API --------------------------------------------------------------------------------

  Desk.prototype.login = function (token) {
    if (!token) throw new Error("desk.login: a token is required");
    this._token = token;
    this._stopped = false;
    this._authInvalid = false;
    this._attempt = 0;
    this._wsFailures = 0;
    this.transport = this._initialTransport();
    this._drop();
    this._clearTimer();
    this._connect();
    return this;
  };

  Desk.prototype.close = function () {
    this._stopped = true;
    this._clearTimer();
    this._drop();
    this._setState("closed");
  };

  Desk.prototype.setStatus = function (status) {
    var conn = this._conn;
    if (conn && conn.kind === "websocket" && conn.ws.readyState === 1) {
      conn.ws.send(JSON.stringify({ type: "set_status", status: status }));
      return Promise.resolve(null);
    }
    return this._request("PUT", "/v1/desk/status", { status: status });
  };

  Desk.prototype.call = function (number) {
    return this._request("POST", "/v1/desk/call", { number: String(number) });
  };

  // The disposition codes of a source: {source_id, inherited, codes: [{code, label}]}.
  Desk.prototype.dispositions = function (sourceId) {
    return this._request("GET", "/v1/desk/sources/" + encodeURIComponent(sourceId) + "/dispositions");
  };

  // Sets the wrap-up of a call the agent was on ({source_id, call_id}, as notifications name it):
  // {code, note, tags}, as a whole (a field left out is cleared). Resolves with the answer
  // ({event_id, wrap_up, pbx}).
  Desk.prototype.setDisposition = function (call, wrapUp) {
    var c = call || {};
    var path = "/v1/desk/calls/" + encodeURIComponent(c.source_id || "") + "/" +
      encodeURIComponent(c.call_id || "") + "/disposition";
    var body = {};
    var w = wrapUp || {};
    if (w.code) body.code = String(w.code);
    if (w.note) body.note = String(w.note);
    if (w.tags && w.tags.length) body.tags = w.tags.map(String);
    return this._request("PUT", path, body);
  };

  // A JSON request with the session token; resolves with the answer's JSON (null when it has no
  // body) on 2xx, rejects with an Error carrying .code (the answer's "error") and .status.
  Desk.prototype._request = function (method, path, body) {
    var self = this;
    if (self._authInvalid) {
      var dead = new Error("the session ended: log in again");
      dead.code = "auth_invalid";
      dead.status = 401;
      return Promise.reject(dead);
    }
    return fetch(self.url + path, {
      method: method,
      headers: { "Authorization": "Bearer " + self._token, "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    }).then(function (response) {
      return response.text().then(function (text) {
        var json = null;
        try { json = text ? JSON.parse(text) : null; } catch (_) { json = null; }
        if (response.ok) return json;
        var message = (json && json.message) || text || response.status + " " + response.statusText;
        var error = new Error(message);
        error.status = response.status;
        error.code = (json && json.error) || (response.status === 501 ? "not_supported" : "http_" + response.status);
        error.body = json;
        if (response.status === 401 && error.code === "auth_invalid") self._onAuthInvalid("invalid");
        throw error;
      });
    });
  };

  // --- connection --------------------------------------------------------------------------------

  Desk.prototype._query = function () {
    var q = "?token=" + encodeURIComponent(this._token);
    if (this.lastEventId) q += "&last_event_id=" + encodeURIComponent(this.lastEventId);
    return q;
  };

  Desk.prototype._connect = function () {
    if (this._stopped) return;
    this._setState("connecting");
    if (this.transport === "websocket") this._openWebSocket(); else this._openEventSource();
  };

  Desk.prototype._clearTimer = function () {
    if (this._timer !== null) { clearTimeout(this._timer); this._timer = null; }
  };

  // Forgets the live connection without reacting to its end.
  Desk.prototype._drop = function () {
    var conn = this._conn;
    this._conn = null;
    if (!conn) return;
    conn.dead = true;
    if (conn.pinger) clearInterval(conn.pinger);
    try {
      if (conn.kind === "websocket") conn.ws.close(1000, "client closed"); else conn.es.close();
    } catch (_) { /* already closed */ }
  };

  Desk.prototype._openWebSocket = function () {
    var self = this;
    var wsUrl = this.url.replace(/^http(s?):/i, "ws$1:") + "/v1/desk/stream" + this._query();
    var conn = { kind: "websocket", opened: false, dead: false, lastSeen: Date.now(), pinger: null };
    try {
      conn.ws = new WebSocket(wsUrl);
    } catch (error) {
      // A malformed URL, or a page that forbids it: nothing to retry with a WebSocket.
      this._wsFailures = WS_FAILURES_BEFORE_SSE;
      this._conn = null;
      this._lost(conn);
      return;
    }
    this._conn = conn;
    conn.ws.onopen = function () {
      if (conn.dead) return;
      conn.opened = true;
      self._wsFailures = 0;
      conn.lastSeen = Date.now();
      conn.pinger = setInterval(function () {
        if (conn.dead || conn.ws.readyState !== 1) return;
        if (Date.now() - conn.lastSeen > SILENT_LIMIT_MS) {
          try { conn.ws.close(4000, "silent"); } catch (_) { /* closing anyway */ }
          self._lost(conn);
          return;
        }
        conn.ws.send(JSON.stringify({ type: "ping" }));
      }, PINGS_EVERY_MS);
    };
    conn.ws.onmessage = function (event) {
      if (conn.dead) return;
      conn.lastSeen = Date.now();
      self._receive(event.data, conn);
    };
    conn.ws.onclose = function (event) {
      if (conn.dead) return;
      if (event.code === WS_CLOSE_AUTH_INVALID) {
        self._onAuthInvalid(conn.authReason || "revoked");
        return;
      }
      self._lost(conn);
    };
    // An error is always followed by a close, which decides.
    conn.ws.onerror = function () {};
  };

  Desk.prototype._openEventSource = function () {
    var self = this;
    var conn = { kind: "sse", opened: false, dead: false, pinger: null };
    try {
      conn.es = new EventSource(this.url + "/v1/desk/events" + this._query());
    } catch (error) {
      this._conn = null;
      this._lost(conn);
      return;
    }
    this._conn = conn;
    var listener = function (event) {
      if (conn.dead) return;
      self._receive(event.data, conn);
    };
    for (var i = 0; i < NOTIFICATION_TYPES.length; i++) conn.es.addEventListener(NOTIFICATION_TYPES[i], listener);
    // Unnamed events, should a server send one: the JSON's "type" says what it is.
    conn.es.onmessage = listener;
    conn.es.onopen = function () { if (!conn.dead) conn.opened = true; };
    conn.es.onerror = function () {
      if (conn.dead) return;
      // EventSource would retry by itself, without our back-off, our resume parameter or our
      // auth_invalid rule: stop it and reconnect our way.
      self._lost(conn);
    };
  };

  // The connection `conn` ended without auth_invalid: back off and reconnect.
  Desk.prototype._lost = function (conn) {
    if (conn.dead) return;
    var self = this;
    if (this._conn === conn) this._drop();
    conn.dead = true;
    if (this._stopped) return;
    this._setState("closed");
    var neverOpened = !conn.opened && !conn.greeted;
    if (conn.kind === "websocket" && neverOpened) {
      this._wsFailures += 1;
      if (this._wsFailures >= WS_FAILURES_BEFORE_SSE) this.transport = "sse";
    }
    var delay = this._backoff();
    if (!neverOpened) {
      this._schedule(delay);
      return;
    }
    // A connection the server refused may have been refused for its token (a WebSocket or an
    // EventSource cannot read a 401): ask once with a plain request before trying again.
    this._probeToken().then(function (invalid) {
      if (self._stopped || self._conn !== null || self._timer !== null) return;
      if (invalid) self._onAuthInvalid("invalid"); else self._schedule(delay);
    });
  };

  Desk.prototype._backoff = function () {
    var base = Math.min(BACKOFF_MAX_MS, BACKOFF_START_MS * Math.pow(2, this._attempt));
    this._attempt = Math.min(this._attempt + 1, 16);
    return Math.round(base * (0.8 + Math.random() * 0.4));
  };

  Desk.prototype._schedule = function (delay) {
    var self = this;
    this._clearTimer();
    this._timer = setTimeout(function () { self._timer = null; self._connect(); }, delay);
  };

  // Resolves true when the server says the token is no good (401 auth_invalid).
  Desk.prototype._probeToken = function () {
    var token = this._token;
    if (typeof fetch !== "function") return Promise.resolve(false);
    return fetch(this.url + "/v1/desk/status", { headers: { "Authorization": "Bearer " + token } })
      .then(function (response) {
        if (response.status !== 401) return false;
        return response.json().then(
          function (body) { return !body || body.error === "auth_invalid"; },
          function () { return true; });
      })
      .then(function (invalid) { return invalid && token === this._token; }.bind(this),
        function () { return false; });
  };

  Desk.prototype._onAuthInvalid = function (reason) {
    if (this._authInvalid) return;
    this._authInvalid = true;
    this._stopped = true;
    this._clearTimer();
    this._drop();
    this._setState("closed");
    this._emit("auth_invalid", { reason: reason });
  };

  // --- notifications -----------------------------------------------------------------------------

  Desk.prototype._receive = function (data, conn) {
    var n;
    try { n = JSON.parse(data); } catch (_) { return; }
    if (!n || typeof n !== "object" || typeof n.type !== "string") return;
    if (n.type === "pong") return;
    if (n.type === "auth_invalid") {
      conn.authReason = n.reason || "revoked";
      this._onAuthInvalid(conn.authReason);
      return;
    }
    if (n.type === "hello") {
      conn.greeted = true;
      this._attempt = 0;
      this._wsFailures = 0;
      this._emit("hello", n);
      this._setState("open");
      return;
    }
    if (n.id !== undefined && n.id !== null) {
      var id = String(n.id);
      if (this._seen.has(id)) return;
      this._seen.add(id);
      this._seenOrder.push(id);
      if (this._seenOrder.length > SEEN_IDS_KEPT) this._seen.delete(this._seenOrder.shift());
      this.lastEventId = id;
    }
    this._emit(n.type, n);
    if (this.autoPop && n.screen_pop && n.screen_pop.url) this._pop(n);
  };

  Desk.prototype._pop = function (n) {
    var call = n.call || {};
    var key = (call.source_id || "") + "\u0000" + (call.call_id || n.id || "") + "\u0000" + n.type;
    if (this._popped.has(key)) return;
    this._popped.add(key);
    this._popOrder.push(key);
    if (this._popOrder.length > SEEN_IDS_KEPT) this._popped.delete(this._popOrder.shift());
    var pop = n.screen_pop;
    var opened = false;
    if (pop.mode === "open" && typeof global.open === "function") {
      // A browser may block a window that no click opened: "opened" tells, and the page can
      // offer the URL as a link instead.
      opened = !!global.open(pop.url, "_blank");
    }
    this._emit("pop", { url: pop.url, mode: pop.mode, on: pop.on, notification: n, opened: opened });
  };

  global.SwitchboardDesk = {
    version: "1",
    connect: function (options) { return new Desk(options); },
  };
})(typeof window !== "undefined" ? window : this);
