/**
 * collab-client.js: the browser client of collab (SPEC sections 2 to 5). A dependency-free ES
 * module, served at /static/collab-client.js next to the modules it imports (./ot-text.js, the OT
 * type, and ./collab-codes.js, the error and close codes).
 *
 *   import { connect, bindTextarea } from "/static/collab-client.js";
 *
 *   const client = connect({
 *     url: location.origin,          // the server; ws(s):// is derived from it. Default: location.origin
 *     doc: "welcome",                // document id
 *     token: "eyJ…" | async ({refresh}) => "eyJ…",  // a JWT, or a function called before every
 *                                    // (re)connect; {refresh: true} after the server refused it
 *   });
 *   client.on("status", ({ status }) => …);   // "connecting" | "online" | "offline" | "closed"
 *   client.on("change", ({ op, opUtf16, changes }) => …);
 *   const unbind = bindTextarea(client, document.querySelector("textarea"));
 *
 * Options of connect():
 *   url, doc, token                 as above (token required)
 *   src                             stable id of this editor instance (default: random)
 *   presenceInterval = 80           ms between two presence frames at most (throttle)
 *   minDelay = 250, maxDelay = 10000  reconnect backoff bounds (exponential, full jitter)
 *   WebSocket, fetch                implementations to use (default: the globals)
 *
 * The client object (an EventTarget; `on(name, fn)` returns an unsubscribe function):
 *   text, rev                       the local text (server text plus pending local ops), and the
 *                                   last server revision it includes
 *   length                          text length in code points
 *   status, state                   connection status; OT state "synchronised" | "awaiting" |
 *                                   "awaiting-with-buffer"
 *   clientId, user, access          from the `init` frame (access "read" or "write")
 *   peers                           [{client, user, name, cursor}], cursors in local code points
 *   ready                           a Promise resolved by the first `init`
 *   submit(op)                      applies an op (code points, on `text`) locally and sends it
 *   insert(pos, text), delete(pos, n)  helpers building and submitting ops (code points)
 *   cursor                          our own cursor (code points) or null
 *   setCursor({anchor, head} | null, {utf16})  your cursor, in code points (or UTF-16 units
 *                                   of `text` with {utf16: true}); sent throttled as presence
 *   toUtf16(cp), fromUtf16(u16)     position conversion on the current text
 *   whenSynchronised()              Promise resolved once no local op is pending
 *   close()                         disconnects for good
 *
 * Events (CustomEvent, payload in `event.detail`; `on()` handlers get the detail directly):
 *   ready     {doc, rev, text}                                 first init processed
 *   change    {op, opUtf16, changes, rev, src, user, reset}    remote op applied to `text`:
 *             op in code points, opUtf16 and changes [{from, to, insert}] in UTF-16 offsets of the
 *             text before the change. reset: true when the text was replaced wholesale (first
 *             load, or a resync), in which case op is the diff from the old text.
 *   localchange {op, opUtf16, changes, rev}                   a local op applied to `text` by
 *             submit() and its helpers (bindTextarea uses it for edits not made in its textarea)
 *   presence  {client, user, name, cursor}                     a peer's cursor (local code points)
 *   join      {client, user, name}        leave {client, user, name}
 *   ack       {seq, rev}                  one of your ops became revision rev
 *   status    {status, code?, reason?, retryIn?}
 *   deleted   {}                          the document was deleted (close code 4404)
 *   error     {code, message, seq?, fatal?}
 *
 * Protocol notes
 *   - Authentication: before every (re)connect, POST /tickets {doc} with the bearer token (a 401
 *     makes a token function be called again with {refresh: true}, once), then
 *     open /ws/documents/{doc}?ticket=… (tickets are single use), plus &since=rev on reconnect.
 *   - OT client as in ShareDB: one op in flight, later local edits composed into a buffer. A remote
 *     op s with pending p: p' = transform(p, s, "left"), s' = transform(s, p, "right").
 *   - Every op carries rev, src and seq (1, 2, 3 … per src; a buffer gets its seq when it is sent,
 *     and keeps it across reconnects so the server can deduplicate a resend).
 *   - Deletes are sent in the invertible form {d: "text"}, so the server checks them and the
 *     history shows what was removed.
 *   - Close codes and error codes come from ./collab-codes.js, generated from the server's
 *     collab/errors.py (`python -m collab.errors`): one table for the server, the Python client
 *     (collab/client.py, the same state machine step for step) and this one.
 *   - Reconnect (codes in RECONNECT_SOON at once, network drops and others with backoff and
 *     jitter), then ?since=rev. Unacknowledged edits are never thrown away:
 *     · If the init lists `ops`, they are applied like remote ops and our in-flight op,
 *       recognised by (src, seq), counts as acked; otherwise the in-flight op is resent with its
 *       (src, seq), so the server applies it once whatever happened to the first copy.
 *     · If init has no `ops` although rev moved on (too far back for the server to list), the
 *       client fetches the missing ops from GET /documents/{doc}/history and rebases over them
 *       (frames arriving meanwhile wait). A failed fetch (network, 5xx) drops the socket and
 *       retries later.
 *     · Only if the history is refused (4xx), the revision went back, or the rebase does not
 *       reproduce the server's text, the server's content wins and the in-flight op and buffer
 *       are rebased over the text diff (error event code "resync"); the in-flight op keeps its
 *       (src, seq).
 *   - An ack the stream cannot explain: at a revision we already hold, the server says our op
 *     is in its text already (e.g. after a resync by diff), so it is taken out of ours, the
 *     buffer kept (error "resync"); beyond the next revision, ops were missed (error "gap").
 *     Either way the client reconnects to check, with a backoff that grows while such surprises
 *     repeat, never in a tight loop.
 *   - bad_revision for the in-flight op (its base is outside what the server will rebase): the
 *     ops since rev are fetched from /history, the op rebased past them and sent again with its
 *     (src, seq). rate_limited: the same frame again after a pause. Other refusals of the op
 *     (invalid_op, read_only, document_too_large) are final: the client reloads the server's
 *     text.
 *   - Codes in STOP stop the client: 1008 (token expired or revoked, reason "auth"), 4404
 *     (document deleted, "deleted"), 1009 (frame too large, "too-large": resending the same op
 *     would fail the same way), others ("stopped").
 *   - Presence is sent only when no local op is pending (as ShareDB does), because the server
 *     reads the cursor at the given rev; it goes out as soon as the pending ops are acked.
 */

import * as ot from "./ot-text.js";
import { CLOSE_CODES, ERROR_CODES, RECONNECT_SOON, STOP } from "./collab-codes.js";

export { ot };

// The `reason` a stopped client reports, by close code (any other code in STOP: "stopped").
const STOP_REASONS = new Map([
  [CLOSE_CODES.POLICY, "auth"],
  [CLOSE_CODES.TOO_LARGE, "too-large"],
  [CLOSE_CODES.DELETED, "deleted"],
]);

const randomId = () => {
  const bytes = new Uint8Array(9);
  (globalThis.crypto ?? { getRandomValues: (b) => b.map(() => Math.floor(Math.random() * 256)) })
    .getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(36).padStart(2, "0")).join("").slice(0, 12);
};

class HttpError extends Error {
  constructor(status, detail) {
    super(`HTTP ${status}: ${typeof detail === "string" ? detail : JSON.stringify(detail)}`);
    this.status = status;
    this.detail = detail;
  }
}

/** Opens a client for one document. See the module comment for options, API and events. */
export function connect(options) {
  return new CollabClient(options);
}

export class CollabClient extends EventTarget {
  constructor({
    url = globalThis.location?.origin,
    doc,
    token,
    src = randomId(),
    presenceInterval = 80,
    minDelay = 250,
    maxDelay = 10000,
    WebSocket: WS = globalThis.WebSocket,
    fetch: fetchImpl = globalThis.fetch?.bind(globalThis),
  } = {}) {
    super();
    if (!url) throw new Error("connect: url is required outside a browser page");
    if (!doc) throw new Error("connect: doc is required");
    if (token == null) throw new Error("connect: token is required (a string or a function)");
    this.url = url.replace(/\/+$/, "");
    this.doc = doc;
    this.src = src;
    this._token = token;
    this._WS = WS;
    this._fetch = fetchImpl;
    this._presenceInterval = presenceInterval;
    this._minDelay = minDelay;
    this._maxDelay = maxDelay;

    this.text = "";
    this.rev = 0;
    this.clientId = null;
    this.user = null;
    this.access = null;
    this.status = "connecting";

    this._seq = 0;
    this._inflight = null; // {op, seq, rev}
    this._buffer = null; // op
    this._trouble = 0; // protocol surprises (impossible acks, gaps) since the last good ack
    this._initialised = false; // an init has been processed at least once
    this._ws = null;
    this._online = false; // init processed on the current socket
    this._closed = false;
    this._attempt = 0;
    this._timer = null;
    this._paused = null; // frames waiting while a rebase fetches history
    this._history = new Map(); // rev -> op, the recent server ops (for presence at older revs)
    this._peers = new Map(); // client -> {client, user, name, cursor (server coords at _peerRev), rev}
    this._pendingPresence = []; // presence frames for revisions not received yet
    this._cursor = null; // our own cursor, local code points
    this._cursorDirty = false;
    this._lastPresenceAt = 0;
    this._presenceTimer = null;
    this._names = new Map(); // user id -> display name, from frames seen

    this.ready = new Promise((resolve) => (this._resolveReady = resolve));
    this._opening = false; // a ticket request or handshake is under way
    this._onOnline = () => {
      if (!this._ws && !this._opening && !this._closed) {
        this._attempt = 0;
        this._scheduleReconnect(0);
      }
    };
    globalThis.addEventListener?.("online", this._onOnline);
    this._open();
  }

  // ----- public API -------------------------------------------------------------------------

  get length() {
    return ot.cpLength(this.text);
  }

  get state() {
    if (!this._inflight) return "synchronised";
    return this._buffer ? "awaiting-with-buffer" : "awaiting";
  }

  /** Our own cursor, {anchor, head} in code points of `text`, or null. */
  get cursor() {
    return this._cursor ? { ...this._cursor } : null;
  }

  get pending() {
    return this._inflight !== null || this._buffer !== null;
  }

  get peers() {
    return [...this._peers.values()].map((p) => this._peerView(p));
  }

  /** A display name for a user id, from the frames seen so far. */
  nameOf(userId) {
    return this._names.get(userId) ?? userId;
  }

  on(name, fn) {
    const listener = (event) => fn(event.detail, event);
    this.addEventListener(name, listener);
    return () => this.removeEventListener(name, listener);
  }

  toUtf16(cp) {
    return ot.cpToUtf16(this.text, Math.max(0, Math.min(cp, this.length)));
  }

  fromUtf16(u16) {
    const n = Math.max(0, Math.min(u16, this.text.length));
    // A position inside a surrogate pair counts as before it.
    const code = this.text.charCodeAt(n);
    return ot.utf16ToCp(this.text, code >= 0xdc00 && code <= 0xdfff ? n - 1 : n);
  }

  /** Applies `op` (code points, made on `this.text`) locally and sends it. */
  submit(op) {
    if (this._closed) throw new Error("the client is closed");
    if (!this._initialised) throw new Error("the client is not ready yet (await client.ready)");
    if (this.access === "read") throw new Error("read-only access to this document");
    op = ot.makeInvertible(ot.normalize(op), this.text);
    if (ot.isNoop(op)) return;
    const before = this.text;
    this.text = ot.apply(before, op); // throws InvalidOp before any state changes
    if (this._cursor) this._cursor = ot.transformSelection(this._cursor, op);
    const { op: opUtf16, changes } = ot.opToUtf16(op, before);
    this._emit("localchange", { op, opUtf16, changes, rev: this.rev });
    if (this._inflight === null) {
      this._inflight = { op, seq: ++this._seq, rev: this.rev };
      this._sendInflight();
    } else {
      this._buffer = this._buffer ? ot.compose(this._buffer, op) : op;
    }
  }

  insert(pos, text) {
    this.submit(ot.insertOp(pos, text));
  }

  delete(pos, n) {
    this.submit(ot.deleteOp(pos, n));
  }

  /** Sets our cursor: {anchor, head} in code points, or UTF-16 units with {utf16: true}; or null. */
  setCursor(cursor, { utf16 = false } = {}) {
    if (cursor && utf16) {
      cursor = { anchor: this.fromUtf16(cursor.anchor), head: this.fromUtf16(cursor.head) };
    }
    const same =
      (cursor === null && this._cursor === null) ||
      (cursor && this._cursor && cursor.anchor === this._cursor.anchor && cursor.head === this._cursor.head);
    this._cursor = cursor ? { anchor: cursor.anchor, head: cursor.head } : null;
    if (!same) {
      this._cursorDirty = true;
      this._schedulePresence();
    }
  }

  whenSynchronised() {
    if (!this.pending) return Promise.resolve();
    return new Promise((resolve) => {
      const off = this.on("ack", () => {
        if (!this.pending) {
          off();
          resolve();
        }
      });
    });
  }

  close() {
    if (this._closed) return;
    this._closed = true;
    clearTimeout(this._timer);
    clearTimeout(this._presenceTimer);
    globalThis.removeEventListener?.("online", this._onOnline);
    const ws = this._ws;
    this._ws = null;
    this._online = false;
    if (ws) {
      try {
        ws.close(1000, "client closed");
      } catch {
        /* already closing */
      }
    }
    this._setStatus("closed", { reason: "client" });
  }

  // ----- connection -------------------------------------------------------------------------

  _emit(name, detail) {
    this.dispatchEvent(new CustomEvent(name, { detail }));
  }

  _setStatus(status, extra = {}) {
    this.status = status;
    this._emit("status", { status, ...extra });
  }

  async _bearer(refresh = false) {
    const token = typeof this._token === "function" ? await this._token({ refresh }) : this._token;
    if (!token) throw new HttpError(401, "no token");
    return token;
  }

  async _http(method, path, body, { refresh = false } = {}) {
    const headers = { Authorization: `Bearer ${await this._bearer(refresh)}` };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const res = await this._fetch(this.url + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const data = res.status === 204 ? null : await res.json().catch(() => null);
    if (!res.ok) throw new HttpError(res.status, data?.detail ?? res.statusText);
    return data;
  }

  /** A ticket for one connect; a token function gets one chance to refresh a refused token. */
  async _ticket() {
    try {
      return await this._http("POST", "/tickets", { doc: this.doc });
    } catch (err) {
      if (!(err instanceof HttpError && err.status === 401 && typeof this._token === "function")) throw err;
      return await this._http("POST", "/tickets", { doc: this.doc }, { refresh: true });
    }
  }

  async _open() {
    if (this._closed || this._opening || this._ws) return;
    this._opening = true;
    clearTimeout(this._timer);
    this._setStatus("connecting", { attempt: this._attempt });
    let ticket;
    try {
      ({ ticket } = await this._ticket());
    } catch (err) {
      this._opening = false;
      if (this._closed) return;
      if (err instanceof HttpError && [401, 403, 404].includes(err.status)) {
        const code = { 401: "unauthorized", 403: "forbidden", 404: "not_found" }[err.status];
        this._stop(code, err.message);
      } else {
        this._emit("error", { code: "ticket", message: String(err?.message ?? err) });
        this._scheduleReconnect();
      }
      return;
    }
    this._opening = false;
    if (this._closed) return;
    const wsBase = this.url.replace(/^http/, "ws");
    let query = `ticket=${encodeURIComponent(ticket)}`;
    if (this._initialised) query += `&since=${this.rev}`;
    let ws;
    try {
      ws = new this._WS(`${wsBase}/ws/documents/${encodeURIComponent(this.doc)}?${query}`);
    } catch (err) {
      this._emit("error", { code: "websocket", message: String(err?.message ?? err) });
      this._scheduleReconnect();
      return;
    }
    this._ws = ws;
    ws.onmessage = (event) => {
      if (ws !== this._ws) return;
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        this._emit("error", { code: "bad_frame", message: "server sent invalid JSON" });
        return;
      }
      this._receive(frame);
    };
    ws.onclose = (event) => {
      if (ws !== this._ws) return;
      this._ws = null;
      this._onClose(event.code, event.reason);
    };
    ws.onerror = () => {
      /* a close event follows */
    };
  }

  _onClose(code, reason) {
    const wasOnline = this._online;
    this._online = false;
    this._paused = null;
    this._dropPeers();
    if (this._closed) return;
    const stop = STOP.includes(code) ? (STOP_REASONS.get(code) ?? "stopped") : null;
    if (stop === "deleted") {
      this._emit("deleted", {});
      this._stop("deleted", reason || "document deleted", code);
    } else if (stop) {
      this._stop(stop, reason || `closed with ${code}`, code);
    } else {
      // That connection worked: start over at once after 1001/1013, with a short backoff after
      // other drops, and longer while the protocol keeps going wrong.
      if (wasOnline) this._attempt = Math.max(this._trouble, RECONNECT_SOON.includes(code) ? 0 : 1);
      this._scheduleReconnect(undefined, code, reason);
    }
  }

  _stop(code, message, closeCode) {
    this._closed = true;
    clearTimeout(this._timer);
    clearTimeout(this._presenceTimer);
    globalThis.removeEventListener?.("online", this._onOnline);
    this._emit("error", { code, message, fatal: true });
    this._setStatus("closed", { code: closeCode, reason: code });
  }

  _scheduleReconnect(delay, code, reason) {
    if (this._closed) return;
    if (delay === undefined) {
      const cap = Math.min(this._maxDelay, this._minDelay * 2 ** this._attempt);
      delay = cap / 2 + Math.random() * (cap / 2); // "equal jitter": never 0, never over cap
    }
    this._attempt++;
    clearTimeout(this._timer);
    this._timer = setTimeout(() => this._open(), delay);
    this._setStatus("offline", { code, reason, retryIn: Math.round(delay) });
  }

  _reconnectNow(reason) {
    const ws = this._ws;
    if (!ws) return;
    this._ws = null;
    try {
      ws.close(4000, reason);
    } catch {
      /* ignore */
    }
    this._onClose(4000, reason);
  }

  _send(frame) {
    if (!this._ws || !this._online) return false;
    this._ws.send(JSON.stringify(frame));
    return true;
  }

  _sendInflight() {
    const p = this._inflight;
    if (!p) return;
    // The in-flight op is kept transformed up to this.rev, so that is its base now (a resend
    // after rebasing over init.ops has moved on from the rev it was first sent at).
    p.rev = this.rev;
    this._send({ type: "op", rev: p.rev, op: p.op, src: this.src, seq: p.seq });
  }

  // ----- frames -----------------------------------------------------------------------------

  _receive(frame) {
    if (this._paused) {
      this._paused.push(frame);
      return;
    }
    switch (frame.type) {
      case "init":
        return this._onInit(frame);
      case "ack":
        return this._onAck(frame);
      case "op":
        return this._onRemoteOp(frame);
      case "ops":
        for (const item of frame.items ?? []) {
          if (this._paused) this._paused.push(item);
          else this._receive(item);
        }
        return;
      case "presence":
        return this._onPresence(frame);
      case "join":
        return this._onJoin(frame);
      case "leave":
        return this._onLeave(frame);
      case "error":
        return this._onError(frame);
      default:
        return; // unknown frames are ignored (forward compatibility)
    }
  }

  _onInit(frame) {
    if (frame.user) this._names.set(frame.user.id, frame.user.name ?? frame.user.id);
    this.clientId = frame.client;
    this.user = frame.user ?? null;
    this.access = frame.access ?? "write";
    if (!this._initialised) {
      this._initialised = true;
      this._resetText(frame.content, frame.rev);
      this._goOnline(frame);
      this._emit("ready", { doc: this.doc, rev: this.rev, text: this.text });
      this._resolveReady({ doc: this.doc, rev: this.rev, text: this.text });
      return;
    }
    if (Array.isArray(frame.ops)) {
      this._rebase(frame.ops);
      this._finishReconnect(frame);
    } else if (frame.rev === this.rev) {
      this._finishReconnect(frame); // nothing happened meanwhile, and our op did not commit
    } else if (frame.rev < this.rev) {
      // The server lost ops we had seen acked or applied (restored from a backup?): start over.
      this._emit("error", { code: "rev_regressed", message: `server at ${frame.rev}, client at ${this.rev}` });
      this._resyncByDiff(frame);
    } else {
      // No list of the ops since our rev: fetch them before touching anything.
      this._paused = [];
      this._fetchOps(this.rev, frame.rev).then(
        (ops) => {
          const queued = this._paused;
          this._paused = null;
          if (queued === null) return; // the socket closed meanwhile
          this._rebase(ops);
          this._finishReconnect(frame);
          for (const f of queued) this._receive(f);
        },
        (err) => {
          if (this._paused === null) return;
          this._paused = null;
          if (err instanceof HttpError && err.status >= 400 && err.status < 500) {
            this._emit("error", { code: "history_unavailable", message: err.message });
            this._resyncByDiff(frame);
          } else {
            this._reconnectNow("history fetch failed");
          }
        },
      );
    }
  }

  _finishReconnect(frame) {
    if (frame.rev !== this.rev) {
      // The ops did not bring us to the server's revision: the protocol was not kept.
      this._emit("error", {
        code: "rebase_mismatch",
        message: `init rev ${frame.rev}, client at ${this.rev} after rebasing`,
      });
      this._resyncByDiff(frame);
      return;
    }
    const expected = this._serverText();
    if (expected !== null && expected !== frame.content) {
      this._emit("error", { code: "diverged", message: "client and server text differ; resyncing" });
      this._resyncByDiff(frame);
      return;
    }
    this._goOnline(frame);
  }

  /** The text at `this.rev` on the server: local text with the pending ops undone. */
  _serverText() {
    try {
      let t = this.text;
      if (this._buffer) t = ot.apply(t, ot.invert(this._buffer));
      if (this._inflight) t = ot.apply(t, ot.invert(this._inflight.op));
      return t;
    } catch {
      return null;
    }
  }

  /** The ops after `since` up to `until` (null: up to the newest) from GET …/history. */
  async _fetchOps(since, until) {
    const ops = [];
    let cursor = since;
    while (until === null || cursor < until) {
      const limit = until === null ? 1000 : Math.min(1000, until - cursor);
      const page = await this._http(
        "GET",
        `/documents/${encodeURIComponent(this.doc)}/history?since=${cursor}&limit=${limit}`,
      );
      const items = (page?.ops ?? []).filter((o) => o.rev > cursor && (until === null || o.rev <= until));
      if (items.length) {
        ops.push(...items);
        cursor = items[items.length - 1].rev;
      }
      if (until === null && page?.next == null) break;
      if (items.length === 0) throw new Error("history ended early");
    }
    return ops;
  }

  /** Applies ops listed by init (or fetched) after a reconnect: ours count as acks. */
  _rebase(ops) {
    for (const item of ops) {
      if (item.rev <= this.rev) continue; // already known
      if (item.src === this.src) {
        if (this._inflight && item.seq === this._inflight.seq) {
          this._onAck({ seq: item.seq, rev: item.rev }, { quiet: true });
        } else {
          // An op of ours that we never saw acked, but which is not the in-flight one: only
          // possible if acks were lost for an earlier seq. It is in the text already.
          this._advance(item.rev, ot.normalize(item.op));
        }
        continue;
      }
      this._onRemoteOp({ type: "op", ...item });
    }
  }

  /**
   * Last resort when the ops between our revision and the server's cannot be had: the server's
   * content wins, and our in-flight op and buffer are rebased over the text diff between what
   * we last knew of the server and its content now. The in-flight op keeps its (src, seq): if
   * the server had committed it already, it acks at an old revision (see _alreadyApplied).
   */
  _resyncByDiff(frame) {
    const base = this._serverText() ?? "";
    let theirs = ot.diffOp(base, frame.content);
    let mine = this._inflight ? ot.stripInvertible(this._inflight.op) : null;
    let later = this._buffer ? ot.stripInvertible(this._buffer) : null;
    try {
      if (mine) [mine, theirs] = [ot.transform(mine, theirs, "left"), ot.transform(theirs, mine, "right")];
      if (later) later = ot.transform(later, theirs, "left");
    } catch {
      mine = later = null;
    }
    this._emit("error", {
      code: "resync",
      message: `taking the server's text at revision ${frame.rev}; unacknowledged edits rebased over the difference`,
    });
    const seq = this._inflight?.seq;
    this._history.clear();
    this._resetText(frame.content, frame.rev);
    this._inflight = null;
    this._buffer = null;
    for (const op of [mine, later]) {
      if (!op || ot.isNoop(op)) continue;
      const before = this.text;
      const invertible = ot.makeInvertible(op, before);
      this.text = ot.apply(before, invertible);
      this._emitChange(before, invertible, { reset: true });
      if (this._inflight === null) {
        this._inflight = { op: invertible, seq: op === mine && seq !== undefined ? seq : ++this._seq, rev: this.rev };
      } else {
        this._buffer = invertible;
      }
    }
    this._goOnline(frame);
  }

  _goOnline(frame) {
    this._online = true;
    this._attempt = 0;
    this._replacePeers(frame.peers ?? [], frame.rev);
    this._setStatus("online");
    this._sendInflight();
    this._cursorDirty = this._cursor !== null || this._cursorDirty;
    this._schedulePresence();
  }

  _resetText(content, rev) {
    const before = this.text;
    this.text = content;
    this.rev = rev;
    if (before !== content) {
      const op = ot.diffOp(before, content);
      if (this._cursor) this._cursor = ot.transformSelection(this._cursor, op);
      this._emitChange(before, op, { reset: true });
    }
  }

  _emitChange(before, op, extra = {}) {
    const { op: opUtf16, changes } = ot.opToUtf16(op, before);
    this._emit("change", { op, opUtf16, changes, rev: this.rev, ...extra });
  }

  /** Records server op `op` as revision `rev` (our view of the server moved on). */
  _advance(rev, op) {
    this.rev = rev;
    this._history.set(rev, op);
    if (this._history.size > 200) this._history.delete(this._history.keys().next().value);
    for (const p of this._peers.values()) {
      if (p.cursor && p.rev === rev - 1) {
        p.cursor = ot.transformSelection(p.cursor, op);
        p.rev = rev;
      }
    }
    if (this._pendingPresence.length) {
      const ready = this._pendingPresence.filter((f) => f.rev <= rev);
      this._pendingPresence = this._pendingPresence.filter((f) => f.rev > rev);
      for (const f of ready) this._onPresence(f);
    }
  }

  _onAck(frame, { quiet = false } = {}) {
    const p = this._inflight;
    if (!p || frame.seq !== p.seq) {
      if (!quiet) this._emit("error", { code: "unexpected_ack", message: `ack for seq ${frame.seq}` });
      return;
    }
    // An op sent empty is acked at the current revision (docs/protocol.md); ours may have
    // become empty after it was sent, so either answer fits an empty one.
    const emptyAck = frame.rev === this.rev && !p.op.length;
    if (frame.rev <= this.rev && !emptyAck) {
      this._alreadyApplied(frame.rev);
      return;
    }
    if (frame.rev !== this.rev + 1 && !emptyAck) {
      this._emit("error", { code: "gap", message: `ack rev ${frame.rev}, expected ${this.rev + 1}` });
      this._trouble++;
      this._reconnectNow("gap in revisions");
      return;
    }
    this._trouble = 0;
    this._inflight = null;
    if (!emptyAck) this._advance(frame.rev, ot.stripInvertible(p.op));
    // The buffer goes in flight before listeners run, so a submit() from an ack handler lands
    // in the next buffer instead of racing ahead of it with a stale revision.
    if (this._buffer) {
      this._inflight = { op: this._buffer, seq: ++this._seq, rev: this.rev };
      this._buffer = null;
      this._sendInflight();
    } else {
      this._schedulePresence();
    }
    this._emit("ack", { seq: frame.seq, rev: frame.rev });
  }

  /**
   * An ack at a revision we hold as another op: the server says our in-flight op is in its text
   * already (e.g. it had it before a resync by diff), so our text holds it twice. Take it out,
   * keep the buffer, then reconnect (with a growing backoff) to check our text against the
   * server's, instead of looping.
   */
  _alreadyApplied(rev) {
    this._emit("error", {
      code: "resync",
      message: `ack rev ${rev}, expected ${this.rev + 1}: the server had this op already`,
    });
    const server = this._serverText();
    if (server !== null) {
      const undo = ot.diffOp(ot.apply(server, this._inflight.op), server);
      let buffer = null;
      try {
        if (this._buffer) buffer = ot.makeInvertible(ot.transform(ot.stripInvertible(this._buffer), undo, "left"), server);
      } catch {
        buffer = null;
      }
      this._inflight = null;
      this._buffer = null;
      const before = this.text;
      this.text = buffer ? ot.apply(server, buffer) : server;
      if (before !== this.text) {
        const op = ot.diffOp(before, this.text);
        if (this._cursor) this._cursor = ot.transformSelection(this._cursor, op);
        this._emitChange(before, op, { reset: true });
      }
      if (buffer && !ot.isNoop(buffer)) this._inflight = { op: buffer, seq: ++this._seq, rev: this.rev };
    }
    this._trouble++;
    this._reconnectNow("impossible ack");
  }

  /** Fetches the ops since our revision and rebases the in-flight op past them, then resends. */
  _rebaseFromHistory() {
    if (this._paused) return;
    const ws = this._ws;
    this._paused = [];
    this._fetchOps(this.rev, null).then(
      (ops) => {
        const queued = this._paused;
        this._paused = null;
        if (queued === null || ws !== this._ws) return; // reconnected meanwhile: init resends
        this._rebase(ops);
        this._sendInflight();
        for (const f of queued) this._receive(f);
      },
      () => {
        if (this._paused === null) return;
        this._paused = null;
        this._reconnectNow("history fetch failed"); // the reconnect resends the op
      },
    );
  }

  _reloadFromServer() {
    // Forget everything local and take a fresh init: a reconnect without `since`.
    this._initialised = false;
    this._inflight = null;
    this._buffer = null;
    this._reconnectNow("reload");
  }

  _onRemoteOp(frame) {
    if (frame.src === this.src && this._inflight && frame.seq === this._inflight.seq) {
      this._onAck(frame); // our own op echoed back: it is an ack
      return;
    }
    if (frame.rev <= this.rev) return; // seen already
    // An op sent empty is acked at the current revision (docs/protocol.md); ours may have
    // become empty after it was sent, so either answer fits an empty one.
    const emptyAck = frame.rev === this.rev && !p.op.length;
    if (frame.rev !== this.rev + 1 && !emptyAck) {
      this._emit("error", { code: "gap", message: `op rev ${frame.rev}, expected ${this.rev + 1}` });
      this._trouble++;
      this._reconnectNow("gap in revisions");
      return;
    }
    if (frame.user && frame.name) this._names.set(frame.user, frame.name);
    const s = ot.normalize(frame.op);
    let s1 = s;
    try {
      if (this._inflight) {
        const p = this._inflight.op;
        s1 = ot.transform(s1, p, "right");
        this._inflight.op = ot.transform(p, s, "left");
      }
      if (this._buffer) {
        const b = this._buffer;
        const s2 = ot.transform(s1, b, "right");
        this._buffer = ot.transform(b, s1, "left");
        s1 = s2;
      }
      const before = this.text;
      this.text = ot.apply(before, s1);
      this._advance(frame.rev, s);
      if (this._cursor) this._cursor = ot.transformSelection(this._cursor, s1);
      this._emitChange(before, s1, { src: frame.src, user: frame.user });
    } catch (err) {
      this._emit("error", { code: "apply_failed", message: String(err?.message ?? err) });
      this._reconnectNow("could not apply a remote op");
    }
  }

  _onError(frame) {
    this._emit("error", { code: frame.code, message: frame.message, seq: frame.seq });
    if (frame.seq == null || !this._inflight || frame.seq !== this._inflight.seq) return;
    if (frame.code === ERROR_CODES.RATE_LIMITED) {
      // Same (src, seq) again a little later: the server never applies it twice.
      setTimeout(() => this._sendInflight(), 500 + Math.random() * 500);
      return;
    }
    if (frame.code === ERROR_CODES.BAD_REVISION) {
      // Its base is outside what the server will rebase: rebase it here, past what the server
      // holds now, and send it again (same seq: the server never applies it twice).
      this._trouble++;
      this._rebaseFromHistory();
      return;
    }
    // Refused for good (invalid_op, read_only, document_too_large…): our text holds an edit
    // the server will never have. Take the server's text again.
    this._reloadFromServer();
  }

  // ----- presence ---------------------------------------------------------------------------

  _peerView(p) {
    let cursor = p.cursor;
    if (cursor && this._inflight) cursor = ot.transformSelection(cursor, this._inflight.op);
    if (cursor && this._buffer) cursor = ot.transformSelection(cursor, this._buffer);
    if (cursor) {
      const n = this.length;
      cursor = { anchor: Math.min(cursor.anchor, n), head: Math.min(cursor.head, n) };
    }
    return { client: p.client, user: p.user, name: p.name, cursor };
  }

  /** Brings a cursor valid at server revision `rev` up to `this.rev` using recent history. */
  _catchUp(cursor, rev) {
    if (this.rev - rev > this._history.size) return cursor; // too old to follow: keep as is
    for (let r = rev + 1; cursor && r <= this.rev; r++) {
      const op = this._history.get(r);
      if (op) cursor = ot.transformSelection(cursor, op);
    }
    return cursor;
  }

  _replacePeers(list, rev) {
    const seen = new Set();
    for (const item of list) {
      if (item.client === this.clientId) continue;
      seen.add(item.client);
      const known = this._peers.has(item.client);
      const cursor = item.cursor ? this._catchUp(item.cursor, rev) : null;
      this._peers.set(item.client, { client: item.client, user: item.user, name: item.name, cursor, rev: this.rev });
      if (item.user) this._names.set(item.user, item.name ?? item.user);
      if (!known) this._emit("join", { client: item.client, user: item.user, name: item.name });
      if (cursor) this._emit("presence", this._peerView(this._peers.get(item.client)));
    }
    for (const client of [...this._peers.keys()]) {
      if (!seen.has(client)) {
        const p = this._peers.get(client);
        this._peers.delete(client);
        this._emit("leave", { client, user: p.user, name: p.name });
      }
    }
  }

  _dropPeers() {
    for (const p of this._peers.values()) this._emit("leave", { client: p.client, user: p.user, name: p.name });
    this._peers.clear();
    this._pendingPresence = [];
  }

  _onJoin(frame) {
    if (frame.client === this.clientId) return;
    if (frame.user) this._names.set(frame.user, frame.name ?? frame.user);
    const known = this._peers.get(frame.client);
    this._peers.set(frame.client, {
      client: frame.client,
      user: frame.user,
      name: frame.name,
      cursor: known?.cursor ?? null,
      rev: this.rev,
    });
    if (!known) this._emit("join", { client: frame.client, user: frame.user, name: frame.name });
    // Tell the newcomer where we are.
    if (this._cursor) {
      this._cursorDirty = true;
      this._schedulePresence();
    }
  }

  _onLeave(frame) {
    const p = this._peers.get(frame.client);
    if (!p) return;
    this._peers.delete(frame.client);
    this._emit("leave", { client: frame.client, user: p.user ?? frame.user, name: p.name ?? frame.name });
  }

  _onPresence(frame) {
    if (frame.client === this.clientId) return;
    if (frame.cursor && typeof frame.rev === "number" && frame.rev > this.rev) {
      this._pendingPresence.push(frame); // valid at a revision we have not received yet
      return;
    }
    if (frame.user) this._names.set(frame.user, frame.name ?? frame.user);
    let cursor = frame.cursor ?? null;
    if (cursor && typeof frame.rev === "number") cursor = this._catchUp(cursor, frame.rev);
    const known = this._peers.has(frame.client);
    const peer = { client: frame.client, user: frame.user, name: frame.name, cursor, rev: this.rev };
    this._peers.set(frame.client, peer);
    if (!known) this._emit("join", { client: frame.client, user: frame.user, name: frame.name });
    this._emit("presence", this._peerView(peer));
  }

  _schedulePresence() {
    if (!this._cursorDirty || !this._online || this.pending || this._presenceTimer) return;
    const wait = this._lastPresenceAt + this._presenceInterval - Date.now();
    if (wait > 0) {
      this._presenceTimer = setTimeout(() => {
        this._presenceTimer = null;
        this._schedulePresence();
      }, wait);
      return;
    }
    this._cursorDirty = false;
    this._lastPresenceAt = Date.now();
    const c = this._cursor;
    const n = this.length;
    const cursor = c ? { anchor: Math.min(c.anchor, n), head: Math.min(c.head, n) } : null;
    this._send({ type: "presence", cursor, rev: this.rev });
  }
}

/**
 * Binds a <textarea> to a client: local edits become ops (common prefix/suffix diff of the value
 * on every `input` event, in code points), remote changes update the value with the selection
 * moved through them, and the selection is sent as presence. Returns a function that unbinds.
 */
export function bindTextarea(client, textarea) {
  let shadow = client.text; // the value the client knows about
  let submitting = false; // our own submit() is running: its localchange is already shown
  textarea.value = shadow;

  const readSelection = () => ({
    anchor: textarea.selectionDirection === "backward" ? textarea.selectionEnd : textarea.selectionStart,
    head: textarea.selectionDirection === "backward" ? textarea.selectionStart : textarea.selectionEnd,
  });

  const flush = () => {
    const value = textarea.value;
    if (value === shadow) return;
    const op = ot.diffOp(shadow, value, textarea.selectionEnd);
    shadow = value;
    submitting = true;
    try {
      client.submit(op);
    } catch (err) {
      // Read-only, closed client, or a diff the client refused: show the client's text again.
      shadow = client.text;
      textarea.value = shadow;
      client.dispatchEvent(new CustomEvent("error", { detail: { code: "local", message: String(err?.message ?? err) } }));
    } finally {
      submitting = false;
    }
  };

  const sendSelection = () => {
    if (textarea.value !== shadow) return;
    client.setCursor(readSelection(), { utf16: true });
  };

  const onInput = () => {
    flush();
    sendSelection();
  };

  const onChange = ({ op, reset }) => {
    flush(); // never lose a local edit the input event has not reported yet
    const before = shadow;
    const focused = globalThis.document?.activeElement === textarea;
    const sel = readSelection();
    const scrollTop = textarea.scrollTop;
    // The selection in code points of the old text, through the op, back to UTF-16 of the new.
    const anchor = ot.transformPosition(ot.utf16ToCp(before, safe(before, sel.anchor)), op);
    const head = ot.transformPosition(ot.utf16ToCp(before, safe(before, sel.head)), op);
    shadow = client.text;
    textarea.value = shadow;
    const a = ot.cpToUtf16(shadow, anchor);
    const h = ot.cpToUtf16(shadow, head);
    textarea.setSelectionRange(Math.min(a, h), Math.max(a, h), h < a ? "backward" : "forward");
    textarea.scrollTop = scrollTop;
    if (focused || reset) client.setCursor({ anchor, head });
  };

  const onSelect = () => {
    if (globalThis.document?.activeElement === textarea) sendSelection();
  };
  const onBlur = () => client.setCursor(null);

  const offChange = client.on("change", onChange);
  const offLocal = client.on("localchange", (detail) => {
    if (!submitting) onChange(detail);
  });
  textarea.addEventListener("input", onInput);
  textarea.addEventListener("select", onSelect);
  textarea.addEventListener("keyup", onSelect);
  textarea.addEventListener("mouseup", onSelect);
  textarea.addEventListener("focus", onSelect);
  textarea.addEventListener("blur", onBlur);
  const onSelectionChange = () => onSelect();
  globalThis.document?.addEventListener("selectionchange", onSelectionChange);
  const updateReadOnly = () => {
    textarea.readOnly = !client._initialised || client.access === "read";
    if (textarea.value !== client.text && textarea.value === shadow) {
      shadow = client.text;
      textarea.value = shadow;
    }
  };
  updateReadOnly();
  const offReady = client.on("status", updateReadOnly);

  return () => {
    offChange();
    offLocal();
    offReady();
    textarea.removeEventListener("input", onInput);
    textarea.removeEventListener("select", onSelect);
    textarea.removeEventListener("keyup", onSelect);
    textarea.removeEventListener("mouseup", onSelect);
    textarea.removeEventListener("focus", onSelect);
    textarea.removeEventListener("blur", onBlur);
    globalThis.document?.removeEventListener("selectionchange", onSelectionChange);
  };
}

/** A UTF-16 offset moved off the middle of a surrogate pair. */
function safe(s, u16) {
  const n = Math.max(0, Math.min(u16, s.length));
  const code = s.charCodeAt(n);
  return code >= 0xdc00 && code <= 0xdfff && n > 0 ? n - 1 : n;
}

export default connect;
