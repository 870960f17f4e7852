// An in-memory stand-in for the collab server (SPEC section 4), for testing collab-client.js under
// node: it transforms, deduplicates by (src, seq), acks and broadcasts exactly as the SPEC says,
// and the test decides when each queued frame is delivered, in either direction.
import * as ot from "../../../collab/static/ot-text.js";

export class FakeServer {
  constructor() {
    this.docs = new Map(); // id -> {text, ops: [{rev, op, src, seq, user}]}
    this.sockets = new Set();
    this.tickets = new Map();
    this.nextClient = 1;
    this.nextTicket = 1;
    this.listOpsOnSince = true; // include `ops` in init when ?since= is given
    this.refuseTickets = null; // an HTTP status to answer POST /tickets with
    this.errors = []; // ops refused as invalid (a client bug, in these tests)
    this.validToken = null; // when set, POST /tickets accepts only this bearer token
    this.maxRebase = Infinity; // ops older than this many revisions are refused (bad_revision)
    this.refuseHistory = null; // an HTTP status to answer GET …/history with
  }

  textAt(d, rev) {
    let text = "";
    for (const o of d.ops.slice(0, rev)) text = ot.apply(text, o.op);
    return text;
  }

  doc(id) {
    if (!this.docs.has(id)) this.docs.set(id, { text: "", ops: [] });
    return this.docs.get(id);
  }

  /** A fetch() for the client: POST /tickets and GET /documents/{id}/history. */
  get fetch() {
    return async (url, init = {}) => {
      const u = new URL(url);
      const json = (status, body) => ({
        ok: status < 300,
        status,
        statusText: String(status),
        json: async () => body,
      });
      if (u.pathname === "/tickets" && init.method === "POST") {
        if (this.refuseTickets) return json(this.refuseTickets, { detail: "refused" });
        const auth = init.headers?.Authorization ?? "";
        if (this.validToken && auth !== `Bearer ${this.validToken}`) return json(401, { detail: "bad token" });
        const { doc } = JSON.parse(init.body);
        const ticket = `t${this.nextTicket++}`;
        this.tickets.set(ticket, doc);
        return json(201, { ticket, expires_in: 30 });
      }
      const m = u.pathname.match(/^\/documents\/([^/]+)\/history$/);
      if (m) {
        if (this.refuseHistory) return json(this.refuseHistory, { detail: "refused" });
        const d = this.doc(decodeURIComponent(m[1]));
        const since = Number(u.searchParams.get("since") ?? 0);
        const limit = Number(u.searchParams.get("limit") ?? 100);
        const ops = d.ops.filter((o) => o.rev > since).slice(0, limit);
        const more = d.ops.filter((o) => o.rev > since).length > limit;
        return json(200, { ops, next: more ? ops.at(-1).rev : null });
      }
      return json(404, { detail: "not found" });
    };
  }

  /** A WebSocket class for the client, bound to this server. */
  get WebSocket() {
    const server = this;
    return class FakeWebSocket {
      constructor(url) {
        const u = new URL(url);
        this.url = url;
        this.docId = decodeURIComponent(u.pathname.split("/").pop());
        this.since = u.searchParams.has("since") ? Number(u.searchParams.get("since")) : null;
        this.toClient = []; // frames the server sent, not yet delivered
        this.toServer = []; // frames the client sent, not yet processed
        this.closed = false;
        this.clientId = `c${server.nextClient++}`;
        const ticket = u.searchParams.get("ticket");
        if (server.tickets.get(ticket) !== this.docId) throw new Error("bad ticket");
        server.tickets.delete(ticket);
        server.sockets.add(this);
        server.accept(this);
      }
      send(data) {
        if (this.closed) throw new Error("send on a closed socket");
        this.toServer.push(JSON.parse(data));
      }
      close(code = 1000, reason = "") {
        server.drop(this, code, reason, { notifyClient: false });
      }
    };
  }

  accept(ws) {
    const d = this.doc(ws.docId);
    const init = {
      type: "init",
      doc: ws.docId,
      rev: d.ops.length,
      content: d.text,
      client: ws.clientId,
      user: { id: "u-" + ws.clientId, name: "User " + ws.clientId },
      access: "write",
      peers: [...this.sockets]
        .filter((s) => s !== ws && s.docId === ws.docId && !s.closed)
        .map((s) => ({ client: s.clientId, user: "u-" + s.clientId, name: "User " + s.clientId, cursor: s.cursor ?? null })),
    };
    if (ws.since !== null && this.listOpsOnSince) {
      init.ops = d.ops.filter((o) => o.rev > ws.since).map(({ rev, op, src, seq }) => ({ rev, op, src, seq }));
    }
    ws.toClient.push(init);
    this.broadcast(ws, { type: "join", client: ws.clientId, user: "u-" + ws.clientId, name: "User " + ws.clientId });
  }

  broadcast(from, frame) {
    for (const s of this.sockets) if (s !== from && s.docId === from.docId && !s.closed) s.toClient.push(frame);
  }

  /** Processes one frame the client sent. */
  handle(ws, frame) {
    const d = this.doc(ws.docId);
    if (frame.type === "op") {
      const dup = d.ops.find((o) => o.src === frame.src && o.seq === frame.seq);
      if (dup) {
        ws.toClient.push({ type: "ack", seq: frame.seq, rev: dup.rev });
        return;
      }
      if (frame.rev > d.ops.length) {
        ws.toClient.push({ type: "error", code: "bad_revision", message: "too new", seq: frame.seq });
        return;
      }
      if (d.ops.length - frame.rev > this.maxRebase) {
        ws.toClient.push({ type: "error", code: "bad_revision", message: "too old", seq: frame.seq });
        return;
      }
      let op = ot.normalize(frame.op);
      try {
        ot.check(op, ot.cpLength(this.textAt(d, frame.rev)));
        for (const s of d.ops.slice(frame.rev)) op = ot.transform(op, s.op, "left");
        d.text = ot.apply(d.text, op);
      } catch (err) {
        ws.toClient.push({ type: "error", code: "invalid_op", message: String(err.message), seq: frame.seq });
        this.errors.push(err);
        return;
      }
      const rev = d.ops.length + 1;
      d.ops.push({ rev, op, src: frame.src, seq: frame.seq, user: "u-" + ws.clientId });
      ws.toClient.push({ type: "ack", seq: frame.seq, rev });
      this.broadcast(ws, { type: "op", rev, op, src: frame.src, seq: frame.seq, user: "u-" + ws.clientId });
    } else if (frame.type === "presence") {
      let cursor = frame.cursor;
      for (const s of d.ops.slice(frame.rev)) cursor = cursor && ot.transformSelection(cursor, s.op);
      ws.cursor = cursor;
      this.broadcast(ws, {
        type: "presence",
        client: ws.clientId,
        user: "u-" + ws.clientId,
        name: "User " + ws.clientId,
        cursor,
        rev: d.ops.length,
      });
    }
  }

  /** Delivers one pending frame of `ws` in the given direction; returns whether there was one. */
  step(ws, direction) {
    if (ws.closed) return false;
    if (direction === "toServer") {
      const f = ws.toServer.shift();
      if (!f) return false;
      this.handle(ws, f);
      return true;
    }
    const f = ws.toClient.shift();
    if (!f) return false;
    ws.onmessage?.({ data: JSON.stringify(f) });
    return true;
  }

  /** Delivers everything, in a random order if `rnd` is given; awaits client microtasks too. */
  async flush(rnd) {
    for (let i = 0; i < 100000; i++) {
      await settle();
      const choices = [];
      for (const ws of this.sockets) {
        if (ws.closed) continue;
        if (ws.toServer.length) choices.push([ws, "toServer"]);
        if (ws.toClient.length) choices.push([ws, "toClient"]);
      }
      if (!choices.length) return;
      const [ws, dir] = choices[rnd ? rnd(choices.length) : 0];
      this.step(ws, dir);
    }
    throw new Error("flush did not finish");
  }

  /** Closes a socket from the server side, as if with close code `code`. */
  drop(ws, code = 1006, reason = "", { notifyClient = true } = {}) {
    if (ws.closed) return;
    ws.closed = true;
    this.sockets.delete(ws);
    this.broadcast(ws, { type: "leave", client: ws.clientId, user: "u-" + ws.clientId, name: "User " + ws.clientId });
    if (notifyClient) ws.onclose?.({ code, reason });
  }

  socketsOf(docId) {
    return [...this.sockets].filter((s) => s.docId === docId && !s.closed);
  }
}

/** Lets pending promise callbacks (fetch, timers of 0 ms) run. */
export async function settle(rounds = 5) {
  for (let i = 0; i < rounds; i++) await new Promise((r) => setTimeout(r, 0));
}

/** A seeded random integer generator: rnd(n) in [0, n). */
export function seeded(seed) {
  let s = seed >>> 0 || 1;
  return (n) => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s % n;
  };
}
