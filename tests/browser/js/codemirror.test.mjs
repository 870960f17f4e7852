// collab-codemirror.js's conversion against the real @codemirror/state: random change sets
// (inserts, deletes, replacements; astral characters, "\r\n" and lone "\r") turned into collab ops
// and back give the document CodeMirror's own ChangeSet.apply gives.
// Run: node --import ./editor_modules.mjs --test codemirror.test.mjs
import assert from "node:assert/strict";
import { test } from "node:test";
import { ChangeSet, EditorState, Transaction } from "@codemirror/state";
import { history, undo, redo } from "@codemirror/commands";
import * as ot from "../../../collab/static/ot-text.js";
import { changeSetToOp, opToChangeSpecs, remoteChange } from "../../../collab/static/collab-codemirror.js";
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
