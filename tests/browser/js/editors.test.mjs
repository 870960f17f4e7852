// The editor bindings' conversions, imported through the collab-client package's exports (a
// link to collab/static): collab-codemirror.js against the real @codemirror/state (random change
// sets with astral characters, "\r\n" and lone "\r", turned into collab ops and back, give the
// document CodeMirror's own ChangeSet.apply gives), and collab-monaco.js's reading of Monaco's
// content change events.
// Run: node --import ./editor_modules.mjs --test editors.test.mjs
import assert from "node:assert/strict";
import { test } from "node:test";
import { ChangeSet, EditorState, Transaction } from "@codemirror/state";
import { history, undo, redo } from "@codemirror/commands";
import * as ot from "collab-client/ot-text";
import { changeSetToOp, opToChangeSpecs, remoteChange } from "collab-client/codemirror";
import { eolOf, monacoChangesToOp } from "collab-client/monaco";
import { jsonBytes, splitOp } from "collab-client/editor-sync";
import { seeded } from "./fake_server.mjs";

const PIECES = ["a", "b", "é", "e\u0301", "😀", "👍🏽", " ", "\n", "\r\n", "\r", "中", "𝒳"];

function randomText(rnd, n) {
  return Array.from({ length: n }, () => PIECES[rnd(PIECES.length)]).join("");
}

/** UTF-16 offsets of `s` that do not split a surrogate pair, plus its end. */
function boundaries(s) {
  const out = [];
  for (let i = 0; i <= s.length; i++) {
    const code = s.charCodeAt(i);
    if (!(code >= 0xdc00 && code <= 0xdfff)) out.push(i);
  }
  return out;
}

/** Random sorted, non-overlapping change specs on `doc` (positions on code point boundaries). */
function randomSpecs(rnd, doc, { splitPairs = false } = {}) {
  const cuts = splitPairs ? Array.from({ length: doc.length + 1 }, (_, i) => i) : boundaries(doc);
  const specs = [];
  let i = 0;
  while (i < cuts.length && rnd(3) > 0) {
    i += rnd(Math.max(1, Math.floor(cuts.length / 3)));
    if (i >= cuts.length) break;
    const from = cuts[i];
    const kind = rnd(3); // 0 insert, 1 delete, 2 replace
    let to = from;
    if (kind > 0) {
      const j = Math.min(cuts.length - 1, i + 1 + rnd(4));
      to = cuts[j];
      i = j;
    }
    const insert = kind === 1 ? "" : randomText(rnd, 1 + rnd(4));
    if (to > from || insert) specs.push({ from, to, insert });
    i++;
  }
  return specs;
}

const stateOf = (doc, extensions = []) =>
  EditorState.create({ doc, extensions: [EditorState.lineSeparator.of("\n"), ...extensions] });

test("the line separator keeps \\r\\n and lone \\r as they are", () => {
  const doc = "a\r\nb\rc\nd";
  assert.equal(stateOf(doc).doc.toString(), doc);
  assert.equal(stateOf(doc).doc.length, doc.length);
  // Without it, CodeMirror rewrites every line break as "\n": the reason the binding sets it.
  assert.equal(EditorState.create({ doc }).doc.toString(), "a\nb\nc\nd");
});

test("random change sets: op and back give ChangeSet.apply's document", () => {
  const rnd = seeded(20261130);
  for (let n = 0; n < 3000; n++) {
    const doc = randomText(rnd, rnd(14));
    const state = stateOf(doc);
    const specs = randomSpecs(rnd, doc);
    const changes = ChangeSet.of(specs, doc.length, "\n");
    const expected = changes.apply(state.doc).toString();
    assert.equal(state.update({ changes }).state.doc.toString(), expected);

    const op = changeSetToOp(changes, doc);
    assert.deepEqual(op, ot.normalize(op), "normal form");
    assert.doesNotThrow(() => ot.check(op, ot.cpLength(doc)));
    assert.equal(ot.apply(doc, op), expected, JSON.stringify({ doc, specs, op }));
    // Deletes carry their text, so the server checks them and the history shows it.
    for (const c of op) if (typeof c === "object") assert.equal(typeof c.d, "string");

    const back = opToChangeSpecs(op, doc);
    assert.equal(ChangeSet.of(back, doc.length, "\n").apply(state.doc).toString(), expected);
    assert.equal(state.update({ changes: back }).state.doc.toString(), expected);
  }
});

test("random ops from the server become change specs CodeMirror applies to the same text", () => {
  const rnd = seeded(7);
  for (let n = 0; n < 2000; n++) {
    const doc = randomText(rnd, rnd(14));
    const other = randomText(rnd, rnd(14));
    const op = ot.diffOp(doc, other);
    const state = stateOf(doc);
    assert.equal(state.update({ changes: opToChangeSpecs(op, doc) }).state.doc.toString(), other);
    assert.equal(ot.apply(doc, changeSetToOp(state.changes(opToChangeSpecs(op, doc)), doc)), other);
  }
});

test("a change that splits a surrogate pair still gives the same document", () => {
  const rnd = seeded(99);
  let split = 0;
  for (let n = 0; n < 2000; n++) {
    const doc = randomText(rnd, 1 + rnd(10));
    const changes = ChangeSet.of(randomSpecs(rnd, doc, { splitPairs: true }), doc.length, "\n");
    const expected = changes.apply(stateOf(doc).doc).toString();
    if (/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/.test(expected)) continue; // a lone half left
    const op = changeSetToOp(changes, doc);
    assert.equal(ot.apply(doc, op), expected);
    split++;
  }
  assert.ok(split > 1000);
});

test("undo reverts only local edits; remote ones are mapped, never undone", () => {
  let state = stateOf("hello", [history()]);
  const local = (changes) => (state = state.update({ changes, userEvent: "input.type" }).state);
  const remote = (changes) =>
    (state = state.update({
      changes,
      annotations: [remoteChange.of(true), Transaction.addToHistory.of(false)],
    }).state);
  local({ from: 5, insert: " world" }); // mine: "hello world"
  remote({ from: 0, insert: "😀 " }); // theirs, before mine: "😀 hello world"
  remote({ from: 14, insert: "!" }); // theirs, after mine: "😀 hello world!"
  assert.equal(state.doc.toString(), "😀 hello world!");
  const target = { state, dispatch: (tr) => (target.state = tr.state) };
  assert.ok(undo(target));
  assert.equal(target.state.doc.toString(), "😀 hello!");
  assert.equal(undo(target), false, "nothing else of mine to undo");
  assert.ok(redo(target));
  assert.equal(target.state.doc.toString(), "😀 hello world!");
});

test("Monaco content changes (offsets on the text before, any order) become the same op", () => {
  const rnd = seeded(4242);
  for (let n = 0; n < 3000; n++) {
    const doc = randomText(rnd, rnd(14));
    const specs = randomSpecs(rnd, doc, { splitPairs: rnd(4) === 0 });
    // Monaco reports multi-cursor edits newest-offset first; the binding must not care.
    const changes = specs.map(({ from, to, insert }) => ({ rangeOffset: from, rangeLength: to - from, text: insert }));
    if (rnd(2)) changes.reverse();
    let expected = doc;
    for (const c of [...changes].sort((a, b) => b.rangeOffset - a.rangeOffset)) {
      expected = expected.slice(0, c.rangeOffset) + c.text + expected.slice(c.rangeOffset + c.rangeLength);
    }
    if (/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/.test(expected)) continue;
    assert.equal(ot.apply(doc, monacoChangesToOp(changes, doc)), expected, JSON.stringify({ doc, changes }));
  }
});

test("a Monaco model's end of line follows the document; mixed line endings have none", () => {
  assert.equal(eolOf("a\nb"), 0);
  assert.equal(eolOf("a\r\nb\r\n"), 1);
  assert.equal(eolOf("no breaks"), 0);
  assert.equal(eolOf("a\r\nb\nc"), null);
  assert.equal(eolOf("a\r\nb\rc"), null);
});

test("splitOp: pieces within the budget that compose back to the op", () => {
  const rnd = seeded(314);
  for (let n = 0; n < 1500; n++) {
    const doc = randomText(rnd, rnd(40));
    const other = randomText(rnd, rnd(200)) + "\"\\\u0001";
    let op = ot.makeInvertible(ot.diffOp(doc, other), doc);
    const budget = 24 + rnd(60);
    let text = doc;
    for (let pieces = 0; op; pieces++) {
      assert.ok(pieces < 1000);
      const [head, rest] = splitOp(op, budget);
      assert.ok(jsonBytes(head) <= budget || head.length === 1, JSON.stringify({ head, budget }));
      const whole = ot.apply(text, op);
      text = ot.apply(text, head);
      if (rest) assert.equal(ot.apply(text, rest), whole);
      else assert.equal(text, whole);
      op = rest;
    }
    assert.equal(text, other);
  }
});
