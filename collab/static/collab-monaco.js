/**
 * collab-monaco.js: binds a Monaco editor to a collab client (SPEC section 8).
 *
 *   import * as monaco from "monaco-editor";
 *   import { connect } from "collab-client";            // or "/static/collab-client.js"
 *   import { bindMonaco } from "collab-client/monaco";
 *
 *   const client = connect({ url, doc: "notes", token });
 *   await client.ready;
 *   const editor = monaco.editor.create(document.querySelector("#editor"), {
 *     model: monaco.editor.createModel(client.text, "plaintext"),
 *   });
 *   const unbind = bindMonaco(client, editor);
 *
 * The binding works on the editor instance alone (it imports nothing from monaco-editor), so it
 * serves an ESM build and the AMD loader alike. What it does:
 *   - local edits (onDidChangeModelContent: {rangeOffset, rangeLength, text}, UTF-16) become ops
 *     in code points; remote ops are applied with model.applyEdits, outside Monaco's undo stack;
 *   - undo is local: Ctrl/Cmd+Z, Ctrl/Cmd+Shift+Z and Ctrl+Y revert this user's own edits only,
 *     from the binding's own stack, which is transformed through every remote op (Monaco's stack
 *     holds offsets that remote edits would make wrong);
 *   - the model's end of line is the document's ("\r\n" or "\n"). A Monaco model holds one kind
 *     only: while the document mixes both, the editor shows it read-only with a notice, so the
 *     model never rewrites line breaks in the shared text;
 *   - peers' cursors and selections are decorations in their colour with their name, and our
 *     selection is sent as presence while the editor has focus;
 *   - read-only while the token may only read; an edit refused by the server shows a notice and
 *     the editor shows the server's text again; an edit too large for one message (a big paste)
 *     is sent in pieces (editor-sync.js).
 *
 * Options of bindMonaco(client, editor, options):
 *   colour(peer) -> CSS colour      a peer's colour (default: from a hash of its user id)
 *   maxMessageBytes = 1048576       the server's COLLAB_MAX_MESSAGE_BYTES
 *   notices = true                  show notices above the editor
 *   groupDelay = 500                ms within which typed edits undo together
 * Returns a function that unbinds, with `undo()` and `redo()` for menus and buttons: Monaco's
 * own undo command (editor.trigger("…", "undo"), a command palette) would use Monaco's stack.
 */

import * as ot from "./ot-text.js";
import { EditorSync } from "./editor-sync.js";

const EOL_LF = 0; // monaco.editor.EndOfLineSequence.LF
const EOL_CRLF = 1; // monaco.editor.EndOfLineSequence.CRLF
const PALETTE = ["#3b5bdb", "#e8590c", "#2f9e44", "#ae3ec9", "#e03131", "#0c8599", "#d6336c", "#f08c00"];

/** A stable colour per user id. */
export function defaultColour(peer) {
  const key = String(peer.user ?? peer.client ?? "");
  let h = 2166136261;
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 16777619);
  return PALETTE[(h >>> 0) % PALETTE.length];
}

/**
 * Monaco content changes ({rangeOffset, rangeLength, text}, all on the text before the event) as
 * one op in code points on `before`. A change splitting a surrogate pair falls back to the diff.
 */
export function monacoChangesToOp(changes, before) {
  const sorted = [...changes].sort((a, b) => a.rangeOffset - b.rangeOffset);
  const op = [];
  let at = 0;
  try {
    for (const { rangeOffset, rangeLength, text } of sorted) {
      if (rangeOffset > at) op.push(ot.utf16ToCp(before.slice(at, rangeOffset)));
      if (rangeLength > 0) op.push({ d: whole(before.slice(rangeOffset, rangeOffset + rangeLength)) });
      if (text) op.push(text);
      at = rangeOffset + rangeLength;
    }
    return ot.normalize(op);
  } catch (err) {
    if (!(err instanceof ot.InvalidOp)) throw err;
    let after = before;
    for (const c of sorted.reverse()) {
      after = after.slice(0, c.rangeOffset) + c.text + after.slice(c.rangeOffset + c.rangeLength);
    }
    return ot.diffOp(before, after);
  }
}

function whole(s) {
  ot.utf16ToCp(s);
  const first = s.charCodeAt(0);
  if (first >= 0xdc00 && first <= 0xdfff) throw new ot.InvalidOp("splits a surrogate pair");
  return s;
}

/** The end of line a Monaco model needs for `text`, or null when the text mixes kinds. */
export function eolOf(text) {
  const crlf = text.includes("\r\n");
  const lone = /\r(?!\n)|(?<!\r)\n/.test(text);
  if (crlf && lone) return null;
  return crlf ? EOL_CRLF : EOL_LF;
}

const hasLineBreak = (op) =>
  op.some((c) =>
    typeof c === "string" ? /[\r\n]/.test(c) : typeof c === "object" && (typeof c.d !== "string" || /[\r\n]/.test(c.d)),
  );

let styleSheet = null;
const peerClasses = new Map(); // "name|colour" -> class name

/** A CSS class for a peer's colour and name (the caret's flag is its ::after content). */
function peerClass(name, colour) {
  const key = `${name}|${colour}`;
  let cls = peerClasses.get(key);
  if (cls) return cls;
  cls = `collab-peer-${peerClasses.size}`;
  peerClasses.set(key, cls);
  if (!styleSheet) {
    styleSheet = document.createElement("style");
    styleSheet.textContent = `
      .collab-selection { background: color-mix(in srgb, var(--collab-colour) 25%, transparent); }
      .collab-caret { position: relative; border-left: 2px solid var(--collab-colour); margin-left: -1px; }
      .collab-caret::after {
        position: absolute; left: -2px; top: -1.1em; padding: 0 4px; border-radius: 3px 3px 3px 0;
        background: var(--collab-colour); color: white; font: 600 11px/1.4 system-ui, sans-serif;
        white-space: nowrap; pointer-events: none; z-index: 10; }
      .collab-notice { padding: 4px 8px; background: #fff4e6; color: #7a3e00;
        font: 13px/1.4 system-ui, sans-serif; }`;
    document.head.append(styleSheet);
  }
  const label = JSON.stringify(String(name).replace(/[\u0000-\u001f\\]/g, " "));
  styleSheet.textContent += `\n.${cls} { --collab-colour: ${colour.replace(/[;{}]/g, "")}; }` +
    `\n.collab-caret.${cls}::after { content: ${label}; }`;
  return cls;
}

/** Binds `editor` (a Monaco IStandaloneCodeEditor) to `client`; returns a function that unbinds. */
export function bindMonaco(client, editor, options = {}) {
  const colour = options.colour ?? defaultColour;
  const groupDelay = options.groupDelay ?? 500;
  const model = editor.getModel();
  const sync = new EditorSync(client, { maxMessageBytes: options.maxMessageBytes });
  let applying = false; // the binding itself is changing the model
  let mixed = false; // the document mixes line endings: shown read-only
  let undoStack = []; // [{op, at}]: ops that revert our edits, newest last, on the current text
  let redoStack = [];
  const decorations = editor.createDecorationsCollection();

  const notice = document.createElement("div");
  notice.className = "collab-notice";
  notice.setAttribute("role", "alert");
  const noticeWidget = {
    getId: () => "collab.notice",
    getDomNode: () => notice,
    getPosition: () => ({ preference: 0 }), // OverlayWidgetPositionPreference.TOP_RIGHT_CORNER
  };
  let noticeShown = false;
  const notify = (text) => {
    if (options.notices === false) return;
    notice.textContent = text;
    if (!noticeShown) editor.addOverlayWidget(noticeWidget);
    noticeShown = true;
  };
  const clearNotice = () => {
    if (noticeShown) editor.removeOverlayWidget(noticeWidget);
    noticeShown = false;
  };

  const edit = (fn) => {
    applying = true;
    try {
      fn();
    } finally {
      applying = false;
    }
  };

  /** The model shows the client's text wholesale, with the document's end of line. */
  const resync = () => {
    sync.reset();
    const text = sync.text;
    const eol = eolOf(text);
    mixed = eol === null;
    if (mixed) {
      notify("This document mixes \\r\\n and \\n line endings, which Monaco cannot show as they are: it is read-only here.");
    }
    edit(() => {
      if (!mixed && model.getEndOfLineSequence() !== eol) model.setEOL(eol);
      if (model.getValue() !== text) model.applyEdits([{ range: model.getFullModelRange(), text }]);
    });
    updateReadOnly();
    showPeers();
  };

  const rangeOf = (from, to) => {
    const a = model.getPositionAt(from);
    const b = model.getPositionAt(to);
    return { startLineNumber: a.lineNumber, startColumn: a.column, endLineNumber: b.lineNumber, endColumn: b.column };
  };

  /** Shows an op the client applied to its text (remote, or submitted outside the editor). */
  const onClientChange = ({ op }) => {
    const before = sync.text;
    try {
      op = sync.remote(op);
    } catch {
      return resync();
    }
    transformStacks(op);
    showChange(op, before);
  };

  /** Applies `op`, made on `before` (the text the model showed), to the model. */
  const showChange = (op, before) => {
    if (mixed || (hasLineBreak(op) && eolOf(sync.text) === null)) return resync();
    if (model.getValueLength() !== before.length) return resync();
    const { changes } = ot.opToUtf16(op, before);
    edit(() => model.applyEdits(changes.map(({ from, to, insert }) => ({ range: rangeOf(from, to), text: insert }))));
    if (model.getValueLength() !== sync.text.length) resync(); // Monaco changed a line break
    showPeers();
  };

  /** Moves our undo and redo stacks past a remote op `s` made on the text they apply to. */
  const transformStacks = (s) => {
    for (const stack of [undoStack, redoStack]) {
      let past = s;
      for (let i = stack.length - 1; i >= 0; i--) {
        const mine = stack[i].op;
        stack[i].op = ot.transform(mine, past, "left");
        past = ot.transform(past, mine, "right");
      }
    }
    undoStack = undoStack.filter((e) => !ot.isNoop(e.op));
    redoStack = redoStack.filter((e) => !ot.isNoop(e.op));
  };

  const record = (op, before) => {
    const inverse = ot.invert(ot.makeInvertible(op, before));
    const now = Date.now();
    const top = undoStack[undoStack.length - 1];
    if (top && now - top.at < groupDelay) {
      top.op = ot.compose(inverse, top.op);
      top.at = now;
    } else {
      undoStack.push({ op: inverse, at: now });
      if (undoStack.length > 200) undoStack.shift();
    }
    redoStack = [];
  };

  const onModelChange = (event) => {
    if (applying || event.isFlush) return;
    const before = sync.text;
    try {
      const op = monacoChangesToOp(event.changes, before);
      sync.local(op);
      if (!ot.isNoop(op)) record(op, before);
    } catch (err) {
      notify(`Your edit could not be applied: ${err?.message ?? err}`);
      return queueMicrotask(resync);
    }
    if (model.getValueLength() !== sync.text.length) queueMicrotask(resync);
    sendSelection();
  };

  const runUndo = (from, to) => {
    if (!writable()) return;
    const entry = from.pop();
    if (!entry) return;
    const before = sync.text;
    try {
      sync.local(entry.op);
    } catch (err) {
      notify(`Undo failed: ${err?.message ?? err}`);
      return;
    }
    showChange(entry.op, before);
    to.push({ op: ot.invert(ot.makeInvertible(entry.op, before)), at: 0 });
    // The caret goes where the reverted edit was.
    const first = ot.opToUtf16(entry.op, before).changes[0];
    if (first) {
      const end = first.from + first.insert.length;
      const p = model.getPositionAt(end);
      editor.setPosition({ lineNumber: p.lineNumber, column: p.column });
      editor.revealPosition({ lineNumber: p.lineNumber, column: p.column });
    }
  };

  const onKeyDown = (event) => {
    const k = event.browserEvent;
    if (!(k.ctrlKey || k.metaKey) || k.altKey) return;
    const key = k.key.toLowerCase();
    if (key === "z" || key === "y") {
      event.preventDefault();
      event.stopPropagation();
      if (key === "z" && !k.shiftKey) runUndo(undoStack, redoStack);
      else runUndo(redoStack, undoStack);
    }
  };

  const sendSelection = () => {
    if (!editor.hasTextFocus() || mixed) return;
    const sel = editor.getSelection();
    if (!sel || model.getValueLength() !== sync.text.length) return;
    const anchor = model.getOffsetAt({ lineNumber: sel.selectionStartLineNumber, column: sel.selectionStartColumn });
    const head = model.getOffsetAt({ lineNumber: sel.positionLineNumber, column: sel.positionColumn });
    sync.setCursor({ anchor, head });
  };

  const showPeers = () => {
    if (mixed || model.getValueLength() !== sync.text.length) return decorations.clear();
    const list = [];
    for (const peer of sync.peers()) {
      if (!peer.cursor) continue;
      const cls = peerClass(peer.name || peer.user || "someone", colour(peer));
      const anchor = sync.toUtf16(peer.cursor.anchor);
      const head = sync.toUtf16(peer.cursor.head);
      const forward = head >= anchor;
      list.push({
        range: rangeOf(Math.min(anchor, head), Math.max(anchor, head)),
        options: {
          className: anchor === head ? undefined : `collab-selection ${cls}`,
          [forward ? "afterContentClassName" : "beforeContentClassName"]: `collab-caret ${cls}`,
          hoverMessage: { value: peer.name || peer.user || "someone" },
          stickiness: 1, // TrackedRangeStickiness.NeverGrowsWhenTypingAtEdges
        },
      });
    }
    decorations.set(list);
  };

  const writable = () => client.access === "write" && client.status !== "closed" && !mixed;
  const updateReadOnly = () => editor.updateOptions({ readOnly: !writable() });

  const disposables = [
    model.onDidChangeContent(onModelChange),
    editor.onKeyDown(onKeyDown),
    editor.onDidChangeCursorSelection(() => sendSelection()),
    editor.onDidBlurEditorText(() => client.setCursor(null)),
  ];
  const offs = [
    client.on("change", (detail) => onClientChange(detail)),
    client.on("localchange", (detail) => {
      if (!sync.submitting) onClientChange(detail);
    }),
    ...["presence", "join", "leave"].map((name) => client.on(name, showPeers)),
    client.on("status", updateReadOnly),
    client.on("error", ({ code, message, seq }) => {
      if (seq != null && code !== "rate_limited") {
        notify(`The server refused an edit (${code}: ${message}). The editor now shows the server's text.`);
      }
    }),
  ];
  notice.addEventListener("click", clearNotice);
  resync();

  const unbind = () => {
    for (const d of disposables) d.dispose();
    for (const off of offs) off();
    decorations.clear();
    clearNotice();
    sync.destroy();
  };
  return Object.assign(unbind, {
    undo: () => runUndo(undoStack, redoStack),
    redo: () => runUndo(redoStack, undoStack),
  });
}

export default bindMonaco;
