// ot-text.js against golden vectors produced by the reference, npm ot-text-unicode v4
// (see make_golden.mjs), plus properties on random ops (node --test).
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import * as ot from "../../../collab/static/ot-text.js";
import { seeded } from "./fake_server.mjs";

const golden = JSON.parse(readFileSync(new URL("./ot_golden.json", import.meta.url), "utf8"));
const clone = (x) => JSON.parse(JSON.stringify(x));

test("apply matches the reference", () => {
  for (const c of golden.apply) assert.equal(ot.apply(c.doc, clone(c.op)), c.result, JSON.stringify(c));
});

test("transform matches the reference, both sides", () => {
  for (const c of golden.transform) {
    const op = clone(c.op);
    const other = clone(c.other);
    assert.deepEqual(ot.transform(op, other, c.side), c.result, JSON.stringify(c));
    assert.deepEqual(op, c.op, "inputs are not mutated");
    assert.deepEqual(other, c.other, "inputs are not mutated");
  }
});

test("compose matches the reference", () => {
  for (const c of golden.compose) assert.deepEqual(ot.compose(clone(c.a), clone(c.b)), c.result, JSON.stringify(c));
});

test("transformPosition matches the reference", () => {
  for (const c of golden.transformPosition) assert.equal(ot.transformPosition(c.pos, c.op), c.result);
});

test("normalize matches the reference", () => {
  for (const c of golden.normalize) assert.deepEqual(ot.normalize(clone(c.op)), c.result, JSON.stringify(c));
});

test("check refuses malformed ops", () => {
  for (const bad of [[0], [1, 2], [3], [""], [{ d: 0 }], [{ d: "" }], [{}], [-1, "a"], "abc", [1.5, "a"]]) {
    assert.throws(() => ot.check(bad), ot.InvalidOp, JSON.stringify(bad));
  }
  assert.throws(() => ot.check([5, "x"], 3), ot.InvalidOp);
  ot.check([3, "x"], 3);
  assert.throws(() => ot.apply("abc", [{ d: "abd" }]), ot.InvalidOp);
  assert.throws(() => ot.apply("abc", [4, "x"]), ot.InvalidOp);
  assert.throws(() => ot.apply("abc", [2, { d: 2 }]), ot.InvalidOp);
});

test("code point and UTF-16 conversions", () => {
  const s = "a😀e\u0301👍🏽";
  assert.equal(ot.cpLength(s), 6);
  assert.equal(ot.cpToUtf16(s, 2), 3);
  assert.equal(ot.utf16ToCp(s, 3), 2);
  assert.throws(() => ot.utf16ToCp(s, 2), ot.InvalidOp);
  assert.equal(ot.cpSlice(s, 1, 2), "😀");
  assert.deepEqual(ot.opToUtf16([1, { d: 1 }, "x", 2, "y"], s), {
    op: [1, { d: 2 }, "x", 2, "y"],
    changes: [
      { from: 1, to: 3, insert: "x" },
      { from: 5, to: 5, insert: "y" },
    ],
  });
});

test("properties on random ops: convergence, compose, invert, diff", () => {
  const rnd = seeded(7);
  const pieces = ["a", "é", "e\u0301", "😀", "👍🏽", " ", "\n"];
  const randStr = (n) => Array.from({ length: n }, () => pieces[rnd(pieces.length)]).join("");
  const randOp = (doc) => {
    const len = ot.cpLength(doc);
    const op = [];
    let pos = 0;
    while (pos < len && rnd(5) < 4) {
      const n = 1 + rnd(Math.min(3, len - pos));
      const k = rnd(3);
      if (k === 0) op.push(n), (pos += n);
      else if (k === 1) op.push(randStr(1 + rnd(2)));
      else op.push({ d: ot.cpSlice(doc, pos, pos + n) }), (pos += n);
    }
    return ot.normalize(op);
  };
  for (let i = 0; i < 3000; i++) {
    const doc = randStr(rnd(10));
    const a = randOp(doc);
    const b = randOp(doc);
    const left = ot.apply(ot.apply(doc, a), ot.transform(b, a, "right"));
    const right = ot.apply(ot.apply(doc, b), ot.transform(a, b, "left"));
    assert.equal(left, right);
    const docA = ot.apply(doc, a);
    const c = randOp(docA);
    assert.equal(ot.apply(doc, ot.compose(a, c)), ot.apply(docA, c));
    assert.equal(ot.apply(docA, ot.invert(a)), doc);
    const other = randStr(rnd(10));
    assert.equal(ot.apply(doc, ot.diffOp(doc, other, rnd(other.length + 1))), other);
  }
});
