// The client's OT state machine and reconnect logic against an in-memory server (node --test).
import { test } from "node:test";
import assert from "node:assert/strict";
import { connect } from "../../../collab/static/collab-client.js";
import * as ot from "../../../collab/static/ot-text.js";
import { FakeServer, seeded, settle } from "./fake_server.mjs";

const open = (server, doc = "d", extra = {}) =>
  connect({
    url: "http://collab.test",
    doc,
    token: "t",
    WebSocket: server.WebSocket,
    fetch: server.fetch,
    minDelay: 1,
    maxDelay: 4,
    presenceInterval: 0,
    ...extra,
  });

async function ready(server, ...clients) {
  await server.flush();
  await Promise.all(clients.map((c) => c.ready));
}

const pieces = ["a", "b", "é", "e\u0301", "😀", "👍🏽", " ", "\n", "中"];

function randomEdit(client, rnd) {
  const n = client.length;
  if (n > 0 && rnd(3) === 0) {
    const pos = rnd(n);
    client.delete(pos, 1 + rnd(Math.min(3, n - pos)));
  } else {
    client.insert(rnd(n + 1), pieces[rnd(pieces.length)] + pieces[rnd(pieces.length)]);
  }
}

test("first init loads the content and rev", async () => {
  const server = new FakeServer();
  Object.assign(server.doc("d"), { text: "héllo 😀", ops: [{ rev: 1, op: ["héllo 😀"], src: "x", seq: 1 }] });
  const c = open(server);
  const changes = [];
  c.on("change", (e) => changes.push(e));
  await ready(server, c);
  assert.equal(c.text, "héllo 😀");
  assert.equal(c.rev, 1);
  assert.equal(c.status, "online");
  assert.equal(changes.length, 1);
  assert.equal(changes[0].reset, true);
  c.close();
});

test("sends one op at a time with rev, src and seq; buffers the rest", async () => {
  const server = new FakeServer();
  const c = open(server);
  await ready(server, c);
  const [ws] = server.socketsOf("d");
  c.insert(0, "a");
  c.insert(1, "b");
  c.insert(2, "😀");
  assert.equal(c.state, "awaiting-with-buffer");
  assert.deepEqual(ws.toServer, [{ type: "op", rev: 0, op: ["a"], src: c.src, seq: 1 }]);
  server.step(ws, "toServer");
  server.step(ws, "toClient"); // ack
  assert.deepEqual(ws.toServer, [{ type: "op", rev: 1, op: [1, "b😀"], src: c.src, seq: 2 }]);
  await server.flush();
  assert.equal(c.state, "synchronised");
  assert.equal(server.doc("d").text, "ab😀");
  assert.equal(c.rev, 2);
  c.close();
});

test("a submit from an ack handler follows the buffered op, not ahead of it", async () => {
  const server = new FakeServer();
  const c = open(server);
  await ready(server, c);
  const [ws] = server.socketsOf("d");
  c.insert(0, "a");
  c.insert(1, "b"); // buffered behind "a"
  let typed = false;
  c.on("ack", () => {
    if (!typed) {
      typed = true;
      c.insert(2, "c");
    }
  });
  server.step(ws, "toServer");
  server.step(ws, "toClient"); // ack of "a": "b" goes in flight before the handler types "c"
  assert.deepEqual(ws.toServer, [{ type: "op", rev: 1, op: [1, "b"], src: c.src, seq: 2 }]);
  await server.flush();
  assert.equal(server.doc("d").text, "abc");
  assert.equal(c.text, "abc");
  assert.equal(c.state, "synchronised");
  c.close();
});

test("deletes go out in the invertible form and helpers count code points", async () => {
  const server = new FakeServer();
  Object.assign(server.doc("d"), { text: "a😀b", ops: [{ rev: 1, op: ["a😀b"], src: "x", seq: 1 }] });
  const c = open(server);
  await ready(server, c);
  const [ws] = server.socketsOf("d");
  c.delete(1, 1);
  assert.deepEqual(ws.toServer[0].op, [1, { d: "😀" }]);
  assert.equal(c.text, "ab");
  await server.flush();
  assert.equal(server.doc("d").text, "ab");
  c.close();
});

test("random concurrent edits by three clients converge", async () => {
  for (let seed = 1; seed <= 40; seed++) {
    const rnd = seeded(seed);
    const server = new FakeServer();
    const clients = [open(server), open(server), open(server)];
    await ready(server, ...clients);
    for (let round = 0; round < 30; round++) {
      randomEdit(clients[rnd(3)], rnd);
      // deliver a few frames in a random order
      for (let k = rnd(4); k > 0; k--) {
        const socks = server.socketsOf("d");
        const ws = socks[rnd(socks.length)];
        server.step(ws, rnd(2) ? "toServer" : "toClient");
      }
    }
    await server.flush(rnd);
    assert.deepEqual(server.errors, []);
    const text = server.doc("d").text;
    for (const c of clients) {
      assert.equal(c.text, text, `seed ${seed}`);
      assert.equal(c.rev, server.doc("d").ops.length);
      assert.equal(c.state, "synchronised");
      c.close();
    }
  }
});

test("change events carry UTF-16 offsets for astral characters", async () => {
  const server = new FakeServer();
  const a = open(server);
  const b = open(server);
  await ready(server, a, b);
  a.insert(0, "😀😀");
  await server.flush();
  const seen = [];
  b.on("change", (e) => seen.push(e));
  a.insert(1, "x"); // between the two emoji: code point 1, UTF-16 offset 2
  await server.flush();
  assert.equal(b.text, "😀x😀");
  assert.deepEqual(seen[0].op, [1, "x"]);
  assert.deepEqual(seen[0].opUtf16, [2, "x"]);
  assert.deepEqual(seen[0].changes, [{ from: 2, to: 2, insert: "x" }]);
  a.close();
  b.close();
});

test("a dropped ack: reconnect with since, own op recognised in init.ops, not applied twice", async () => {
  const server = new FakeServer();
  const a = open(server);
  const b = open(server);
  await ready(server, a, b);
  const [wsA] = server.socketsOf("d");
  a.insert(0, "hello");
  server.step(wsA, "toServer"); // committed as rev 1…
  wsA.toClient.length = 0; // …but the ack is lost
  a.insert(5, " world"); // buffered
  b.insert(0, ">");
  server.drop(wsA, 1001, "shutting down");
  assert.equal(a.status, "offline");
  await server.flush();
  await settle(20);
  await server.flush();
  assert.equal(a.status, "online");
  assert.equal(server.doc("d").text, ">hello world");
  assert.equal(a.text, ">hello world");
  assert.equal(b.text, ">hello world");
  assert.ok(server.socketsOf("d").every((s) => s.since === null || s.since === 0));
  a.close();
  b.close();
});

test("an op lost on the way is resent with its same seq after a reconnect", async () => {
  const server = new FakeServer();
  const a = open(server);
  await ready(server, a);
  const [ws] = server.socketsOf("d");
  a.insert(0, "x");
  ws.toServer.length = 0; // lost
  server.drop(ws, 1013, "too slow");
  await settle(20);
  await server.flush();
  assert.equal(server.doc("d").text, "x");
  assert.deepEqual(server.doc("d").ops.map((o) => o.seq), [1]);
  assert.equal(a.state, "synchronised");
  a.close();
});

test("a pending op rebased over init.ops is resent at the new rev", async () => {
  const server = new FakeServer();
  const a = open(server);
  const b = open(server);
  await ready(server, a, b);
  a.insert(0, "hello");
  await server.flush();
  const wsA = server.socketsOf("d").find((s) => s.clientId === a.clientId);
  const wsB = server.socketsOf("d").find((s) => s.clientId === b.clientId);
  b.insert(0, ">> ");
  server.step(wsB, "toServer"); // committed as rev 2, never delivered to a
  a.insert(5, "!"); // in flight…
  wsA.toServer.length = 0; // …and lost
  server.drop(wsA, 1001);
  await settle(20);
  await server.flush();
  assert.deepEqual(server.errors, []);
  assert.equal(server.doc("d").text, ">> hello!");
  assert.equal(a.text, ">> hello!");
  assert.equal(b.text, ">> hello!");
  const last = server.doc("d").ops.at(-1);
  assert.deepEqual([last.rev, last.src, last.seq], [3, a.src, 2]);
  a.close();
  b.close();
});

test("init without ops after a reconnect: the client fetches the history and rebases", async () => {
  const server = new FakeServer();
  server.listOpsOnSince = false;
  const a = open(server);
  const b = open(server);
  await ready(server, a, b);
  const [wsA] = server.socketsOf("d");
  a.insert(0, "A");
  server.step(wsA, "toServer"); // committed
  wsA.toClient.length = 0; // ack lost
  server.drop(wsA, 1006);
  b.insert(0, "B");
  a.insert(1, "a"); // while offline
  await server.flush();
  await settle(20);
  await server.flush();
  assert.equal(server.doc("d").text, "BAa");
  assert.equal(a.text, "BAa");
  assert.equal(b.text, "BAa");
  a.close();
  b.close();
});

const socketOf = (server, client) => server.socketsOf("d").find((s) => s.clientId === client.clientId);

test("bad_revision for the in-flight op: rebased from /history and sent again, never dropped", async () => {
  const server = new FakeServer();
  server.maxRebase = 1;
  const a = open(server);
  const b = open(server);
  await ready(server, a, b);
  const wsA = socketOf(server, a);
  const wsB = socketOf(server, b);
  const errors = [];
  a.on("error", (e) => errors.push(e.code));
  a.insert(0, "A"); // sent at rev 0, not processed yet
  b.insert(0, "x");
  server.step(wsB, "toServer");
  server.step(wsB, "toClient"); // b's ack
  b.insert(0, "y");
  server.step(wsB, "toServer"); // the server is at rev 2
  server.step(wsA, "toServer"); // 2 revisions behind: refused
  wsA.toClient.unshift(wsA.toClient.pop()); // the error overtakes the ops (paced delivery)
  await server.flush();
  await settle(20);
  await server.flush();
  assert.deepEqual(errors, ["bad_revision"]);
  assert.deepEqual(server.errors, []);
  assert.equal(a.text, server.doc("d").text);
  assert.equal(b.text, server.doc("d").text);
  assert.equal(server.doc("d").text, "Ayx");
  assert.deepEqual(server.doc("d").ops.filter((o) => o.src === a.src).map((o) => o.seq), [1]);
  a.close();
  b.close();
});

test("an ack at a revision already held: the op is taken out once, the buffer kept, no loop", async () => {
  const server = new FakeServer();
  const a = open(server);
  await ready(server, a);
  a.insert(0, "hello");
  await server.flush();
  const errors = [];
  a.on("error", (e) => errors.push(e.code));
  let opened = 0;
  a.on("status", ({ status }) => (opened += status === "connecting"));
  const wsA = socketOf(server, a);
  a.insert(5, "!"); // seq 2, in flight…
  wsA.toServer.length = 0; // …never stored, yet the server claims it was (rev 1)
  a.insert(6, "?"); // buffered
  wsA.toClient.push({ type: "ack", seq: 2, rev: 1 });
  server.step(wsA, "toClient");
  assert.equal(a.text, "hello?");
  await settle(30);
  await server.flush();
  await settle(30);
  await server.flush();
  assert.equal(server.doc("d").text, "hello?");
  assert.equal(a.text, "hello?");
  assert.equal(a.state, "synchronised");
  assert.deepEqual(errors, ["resync"]);
  assert.equal(opened, 1); // one reconnect, not a loop
  a.close();
});

test("history unavailable: the server text wins and pending edits are rebased over the diff", async () => {
  const server = new FakeServer();
  server.listOpsOnSince = false;
  server.refuseHistory = 404;
  const a = open(server);
  const b = open(server);
  await ready(server, a, b);
  const wsA = socketOf(server, a);
  a.insert(0, "A");
  server.step(wsA, "toServer"); // committed…
  wsA.toClient.length = 0; // …but the ack is lost
  server.drop(wsA, 1006);
  a.insert(1, "a"); // buffered while offline
  b.insert(0, "B");
  await server.flush();
  await settle(30);
  await server.flush();
  await settle(30);
  await server.flush();
  // The diff held our committed op, so the resend was acked at an old revision: the
  // second copy was taken out, and the buffer kept. (Where the pieces land is the diff's
  // guess; that each is there once is not.)
  const text = server.doc("d").text;
  assert.deepEqual([...text].sort(), ["A", "B", "a"]);
  assert.equal(a.text, text);
  assert.equal(b.text, text);
  a.close();
  b.close();
});

test("close codes come from the generated collab-codes.js", async () => {
  const codes = await import("../../../collab/static/collab-codes.js");
  assert.equal(codes.CLOSE_CODES.DELETED, 4404);
  assert.ok(codes.STOP.includes(1008) && codes.RECONNECT_SOON.includes(1001));
  const server = new FakeServer();
  const a = open(server);
  await ready(server, a);
  const got = [];
  a.on("status", ({ status, reason }) => got.push(`${status}:${reason}`));
  server.drop(socketOf(server, a), codes.CLOSE_CODES.INVALID_DATA, "");
  await settle(5);
  assert.deepEqual(got, ["closed:stopped"]); // a code in STOP: no reconnect
});

test("remote cursors follow later ops, local pending ops included", async () => {
  const server = new FakeServer();
  const a = open(server);
  const b = open(server);
  await ready(server, a, b);
  a.insert(0, "hello world");
  await server.flush();
  b.setCursor({ anchor: 6, head: 11 });
  await server.flush();
  let [peer] = a.peers;
  assert.deepEqual(peer.cursor, { anchor: 6, head: 11 });
  a.insert(0, "😀 "); // pending locally
  [peer] = a.peers;
  assert.deepEqual(peer.cursor, { anchor: 8, head: 13 });
  await server.flush();
  b.insert(0, ">>"); // remote op moves it too
  b.setCursor({ anchor: 0, head: 0 }); // held back: b's op is pending
  const wsB = server.socketsOf("d").find((s) => s.clientId === b.clientId);
  const wsA = server.socketsOf("d").find((s) => s.clientId === a.clientId);
  server.step(wsB, "toServer");
  assert.equal(wsB.toServer.length, 0);
  while (server.step(wsA, "toClient"));
  [peer] = a.peers;
  assert.deepEqual(peer.cursor, { anchor: 10, head: 15 });
  await server.flush();
  [peer] = a.peers;
  assert.deepEqual(peer.cursor, { anchor: 0, head: 0 });
  assert.equal(a.text, ">>😀 hello world");
  a.close();
  b.close();
});

test("presence is held back while an op is pending, then sent at the acked rev", async () => {
  const server = new FakeServer();
  const a = open(server);
  await ready(server, a);
  const [ws] = server.socketsOf("d");
  a.insert(0, "abc");
  a.setCursor({ anchor: 3, head: 3 });
  assert.equal(ws.toServer.filter((f) => f.type === "presence").length, 0);
  await server.flush();
  const sent = [];
  const orig = ws.send.bind(ws);
  ws.send = (d) => {
    sent.push(JSON.parse(d));
    orig(d);
  };
  a.setCursor({ anchor: 1, head: 2 });
  await settle();
  assert.deepEqual(sent.at(-1), { type: "presence", cursor: { anchor: 1, head: 2 }, rev: 1 });
  a.close();
});

test("join, presence and leave events", async () => {
  const server = new FakeServer();
  const a = open(server);
  await ready(server, a);
  const events = [];
  for (const name of ["join", "leave", "presence"]) a.on(name, (d) => events.push([name, d.client]));
  const b = open(server);
  await ready(server, b);
  b.setCursor({ anchor: 0, head: 0 });
  await server.flush();
  b.close();
  await server.flush();
  assert.deepEqual(events.map((e) => e[0]), ["join", "presence", "leave"]);
  assert.equal(a.peers.length, 0);
  a.close();
});

test("close 4404 stops with a deleted event; 1008 stops with a status", async () => {
  const server = new FakeServer();
  const a = open(server);
  const b = open(server);
  await ready(server, a, b);
  const got = [];
  a.on("deleted", () => got.push("deleted"));
  a.on("status", ({ status, reason }) => got.push(`${status}:${reason}`));
  b.on("status", ({ status, reason }) => got.push(`b ${status}:${reason}`));
  const [wsA, wsB] = server.socketsOf("d");
  server.drop(wsA, 4404, "deleted");
  server.drop(wsB, 1008, "token expired");
  await settle(20);
  assert.deepEqual(got, ["deleted", "closed:deleted", "b closed:auth"]);
  assert.equal(server.socketsOf("d").length, 0);
  assert.throws(() => a.insert(0, "x"));
});

test("tickets refused with 401 stop the client; a 5xx is retried", async () => {
  const server = new FakeServer();
  server.refuseTickets = 503;
  const a = open(server);
  await settle(10);
  assert.equal(a.status, "offline");
  server.refuseTickets = null;
  await settle(20);
  await server.flush();
  await a.ready;
  assert.equal(a.status, "online");
  a.close();
  server.refuseTickets = 401;
  const b = open(server);
  await settle(10);
  assert.equal(b.status, "closed");
});

test("a refused token is refreshed once through the token function", async () => {
  const server = new FakeServer();
  server.validToken = "old";
  const calls = [];
  let current = "old";
  const a = open(server, "d", {
    token: async ({ refresh }) => {
      calls.push(refresh);
      if (refresh) current = server.validToken;
      return current;
    },
  });
  await ready(server, a);
  server.validToken = "new"; // the server restarted with another key
  server.drop(server.socketsOf("d")[0], 1001);
  await settle(20);
  await server.flush();
  assert.equal(a.status, "online");
  assert.deepEqual(calls, [false, false, true]);
  a.close();
});

test("every connect uses a fresh ticket and since= after the first", async () => {
  const server = new FakeServer();
  const urls = [];
  const WS = server.WebSocket;
  const a = open(server, "d", {
    WebSocket: class extends WS {
      constructor(url) {
        urls.push(url);
        super(url);
      }
    },
  });
  await ready(server, a);
  a.insert(0, "x");
  await server.flush();
  server.drop(server.socketsOf("d")[0], 1001);
  await settle(20);
  await server.flush();
  assert.equal(urls.length, 2);
  assert.match(urls[0], /^ws:\/\/collab\.test\/ws\/documents\/d\?ticket=t1$/);
  assert.match(urls[1], /^ws:\/\/collab\.test\/ws\/documents\/d\?ticket=t2&since=1$/);
  a.close();
});

test("an ops batch frame is handled item by item", async () => {
  const server = new FakeServer();
  const a = open(server);
  await ready(server, a);
  const [ws] = server.socketsOf("d");
  a.insert(0, "x");
  server.step(ws, "toServer");
  const ack = ws.toClient.shift();
  ws.onmessage({
    data: JSON.stringify({
      type: "ops",
      items: [ack, { type: "op", rev: 2, op: [1, "y"], src: "other", seq: 1, user: "u" }],
    }),
  });
  assert.equal(a.text, "xy");
  assert.equal(a.rev, 2);
  assert.equal(a.state, "synchronised");
  a.close();
});

test("diffOp honours the caret for ambiguous edits", () => {
  assert.deepEqual(ot.diffOp("aa", "aaa", 1), ["a"]);
  assert.deepEqual(ot.diffOp("aa", "aaa", 3), [2, "a"]);
  assert.deepEqual(ot.diffOp("😀", "😁", 2), [{ d: "😀" }, "😁"]);
  assert.deepEqual(ot.diffOp("a😀b", "a😀xb", 4), [2, "x"]);
});
