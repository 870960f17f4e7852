/**
 * collab-codemirror.js: binds a CodeMirror 6 editor to a collab client (SPEC section 8).
 *
 *   import { EditorState } from "@codemirror/state";
 *   import { EditorView, lineNumbers, keymap } from "@codemirror/view";
 *   import { history, historyKeymap, defaultKeymap } from "@codemirror/commands";
 *   import { connect } from "collab-client";            // or "/static/collab-client.js"
 *   import { collabExtension } from "collab-client/codemirror";
 *
 *   const client = connect({ url, doc: "notes", token });
 *   await client.ready;
 *   const view = new EditorView({
 *     parent: document.querySelector("#editor"),
 *     state: EditorState.create({
 *       doc: client.text,
 *       extensions: [lineNumbers(), history(), keymap.of([...historyKeymap, ...defaultKeymap]),
 *                    collabExtension(client)],
 *     }),
 *   });
 *
 * What the extension does:
 *   - local transactions become ops (UTF-16 offsets to code points); remote ops become
 *     transactions annotated with `remoteChange` and `Transaction.addToHistory.of(false)`, so
 *     `undo` only ever reverts this user's own edits (the history maps its stack through them);
 *   - the line separator is "\n" only: CodeMirror's default splits on "\r\n" and "\r" too and
 *     joins with "\n", which would change a document holding "\r\n" and shift every offset;
 *   - peers' cursors and selections are drawn in their colour with their name (from presence),
 *     and our main selection is sent as presence while the editor has focus;
 *   - read-only while the token may only read (or before the client is ready);
 *   - an edit the server refused makes the client reload the server's text: a notice panel says
 *     so; an edit too large for one message (a big paste) is sent in pieces (editor-sync.js).
 *
 * Options of collabExtension(client, options):
 *   colour(peer) -> CSS colour      a peer's colour (default: from a hash of its user id)
 *   maxMessageBytes = 1048576       the server's COLLAB_MAX_MESSAGE_BYTES
 *   notices = true                  show the notice panel
 *
 * Exports for other bindings and tests: changeSetToOp(changes, before), opToChangeSpecs(op, before).
 */

import { Annotation, EditorState, StateEffect, StateField, Text, Transaction } from "@codemirror/state";
import { Decoration, EditorView, ViewPlugin, WidgetType, showPanel } from "@codemirror/view";
import * as ot from "./ot-text.js";
import { EditorSync } from "./editor-sync.js";

/** Marks transactions that carry the client's text into the editor (never sent back). */
export const remoteChange = Annotation.define();

const PALETTE = ["#3b5bdb", "#e8590c", "#2f9e44", "#ae3ec9", "#e03131", "#0c8599", "#d6336c", "#f08c00"];

/** A stable colour per user id. */
export function defaultColour(peer) {
  const key = String(peer.user ?? peer.client ?? "");
  let h = 2166136261;
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 16777619);
  return PALETTE[(h >>> 0) % PALETTE.length];
}

// ----- conversion ---------------------------------------------------------------------------

/**
 * A CodeMirror ChangeSet (UTF-16 offsets of `before`) as an op in code points on `before`.
 * A change that splits a surrogate pair cannot be counted in code points: the op is then the
 * prefix/suffix diff of the two texts, which gives the same document.
 */
export function changeSetToOp(changes, before) {
  const op = [];
  let at = 0;
  try {
    changes.iterChanges((fromA, toA, _fromB, _toB, inserted) => {
      if (fromA > at) op.push(ot.utf16ToCp(before.slice(at, fromA)));
      if (toA > fromA) op.push({ d: checkWhole(before.slice(fromA, toA)) });
      const text = inserted.toString();
      if (text) op.push(text);
      at = toA;
    });
    return ot.normalize(op);
  } catch (err) {
    if (!(err instanceof ot.InvalidOp)) throw err;
    return ot.diffOp(before, changes.apply(Text.of(before.split("\n"))).toString());
  }
}

function checkWhole(s) {
  ot.utf16ToCp(s); // throws InvalidOp when s starts or ends inside a surrogate pair
  const first = s.charCodeAt(0);
  if (first >= 0xdc00 && first <= 0xdfff) throw new ot.InvalidOp("splits a surrogate pair");
  return s;
}

/** An op in code points on `before` as CodeMirror change specs in UTF-16 offsets of `before`. */
export function opToChangeSpecs(op, before) {
  return ot.opToUtf16(op, before).changes.map(({ from, to, insert }) => ({ from, to, insert }));
}

// ----- remote cursors -----------------------------------------------------------------------

class CaretWidget extends WidgetType {
  constructor(name, colour, client) {
    super();
    this.name = name;
    this.colour = colour;
    this.client = client;
  }

  eq(other) {
    return other.name === this.name && other.colour === this.colour && other.client === this.client;
  }

  toDOM() {
    const caret = document.createElement("span");
    caret.className = "cm-collab-caret";
    caret.dataset.client = this.client;
    caret.style.setProperty("--collab-colour", this.colour);
    const flag = document.createElement("span");
    flag.className = "cm-collab-flag";
    flag.textContent = this.name;
    caret.append(flag);
    return caret;
  }

  ignoreEvent() {
    return true;
  }
}

const setPeers = StateEffect.define();

const peersField = StateField.define({
  create: () => Decoration.none,
  update(decorations, tr) {
    for (const effect of tr.effects) if (effect.is(setPeers)) return effect.value;
    return decorations.map(tr.changes);
  },
  provide: (field) => EditorView.decorations.from(field),
});

function peerDecorations(sync, colour) {
  const ranges = [];
  const docLength = sync.text.length;
  for (const peer of sync.peers()) {
    if (!peer.cursor) continue;
    const c = colour(peer);
    const anchor = Math.min(sync.toUtf16(peer.cursor.anchor), docLength);
    const head = Math.min(sync.toUtf16(peer.cursor.head), docLength);
    if (anchor !== head) {
      ranges.push(
        Decoration.mark({
          class: "cm-collab-selection",
          attributes: { style: `--collab-colour: ${c}`, "data-client": String(peer.client) },
        }).range(Math.min(anchor, head), Math.max(anchor, head)),
      );
    }
    const name = peer.name || peer.user || "someone";
    ranges.push(Decoration.widget({ widget: new CaretWidget(name, c, String(peer.client)), side: 1 }).range(head));
  }
  return Decoration.set(ranges, true);
}

const theme = EditorView.baseTheme({
  ".cm-collab-selection": {
    backgroundColor: "color-mix(in srgb, var(--collab-colour) 22%, transparent)",
  },
  ".cm-collab-caret": {
    position: "relative",
    borderLeft: "2px solid var(--collab-colour)",
    marginLeft: "-1px",
    marginRight: "-1px",
  },
  ".cm-collab-flag": {
    position: "absolute",
    bottom: "100%",
    left: "-2px",
    padding: "0 4px",
    borderRadius: "3px 3px 3px 0",
    background: "var(--collab-colour)",
    color: "white",
    font: "600 11px/16px system-ui, sans-serif",
    whiteSpace: "nowrap",
    pointerEvents: "none",
    zIndex: "10",
  },
  ".cm-collab-notice": {
    padding: "4px 8px",
    background: "#fff4e6",
    color: "#7a3e00",
    font: "13px/1.4 system-ui, sans-serif",
    display: "flex",
    gap: "8px",
    alignItems: "center",
  },
  ".cm-collab-notice button": { marginLeft: "auto" },
});

// ----- notices and access -------------------------------------------------------------------

const setNotice = StateEffect.define();

const noticeField = StateField.define({
  create: () => null,
  update(notice, tr) {
    for (const effect of tr.effects) if (effect.is(setNotice)) notice = effect.value;
    return notice;
  },
  provide: (field) =>
    showPanel.from(field, (notice) =>
      notice
        ? (view) => {
            const dom = document.createElement("div");
            dom.className = "cm-collab-notice";
            dom.setAttribute("role", "alert");
            const text = document.createElement("span");
            text.textContent = notice;
            const close = document.createElement("button");
            close.type = "button";
            close.textContent = "Dismiss";
            close.onclick = () => view.dispatch({ effects: setNotice.of(null) });
            dom.append(text, close);
            return { dom, top: true };
          }
        : null,
    ),
});

const setWritable = StateEffect.define();

const writableField = StateField.define({
  create: () => false,
  update(writable, tr) {
    for (const effect of tr.effects) if (effect.is(setWritable)) writable = effect.value;
    return writable;
  },
  provide: (field) => EditorState.readOnly.from(field, (writable) => !writable),
});

/** A changed text only ever comes from the client while we may not write. */
const refuseWhileReadOnly = EditorState.transactionFilter.of((tr) =>
  !tr.docChanged || tr.annotation(remoteChange) || tr.startState.field(writableField) ? tr : [],
);

// ----- the binding --------------------------------------------------------------------------

class Binding {
  constructor(view, client, options) {
    this.view = view;
    this.client = client;
    this.colour = options.colour ?? defaultColour;
    this.notices = options.notices ?? true;
    this.sync = new EditorSync(client, { maxMessageBytes: options.maxMessageBytes });
    this.destroyed = false;
    this.off = [
      client.on("change", (detail) => this.onClientChange(detail)),
      client.on("localchange", (detail) => {
        if (!this.sync.submitting) this.onClientChange(detail);
      }),
      ...["presence", "join", "leave"].map((name) => client.on(name, () => this.later(() => this.showPeers()))),
      client.on("status", () => this.later(() => this.syncAccess())),
      client.on("error", (detail) => this.onClientError(detail)),
    ];
    // The view may be created with another text than the client's, or before it is ready.
    this.later(() => {
      if (this.view.state.doc.toString() !== this.sync.text) this.replaceAll();
      this.syncAccess();
      this.showPeers();
    });
  }

  /** Runs `fn` outside the current view update (a dispatch inside one throws). */
  later(fn) {
    queueMicrotask(() => {
      if (!this.destroyed) fn();
    });
  }

  update(update) {
    for (const tr of update.transactions) {
      if (!tr.docChanged || tr.annotation(remoteChange)) continue;
      this.submit(tr);
    }
    if (update.selectionSet || update.docChanged || update.focusChanged) this.sendSelection(update);
  }

  submit(tr) {
    const before = this.sync.text;
    if (tr.startState.doc.length !== before.length) {
      // The editor and the client disagree already: the client's text wins.
      this.later(() => this.replaceAll());
      return;
    }
    try {
      this.sync.local(changeSetToOp(tr.changes, before));
    } catch (err) {
      this.notify(`Your edit could not be applied: ${err?.message ?? err}`);
      this.later(() => this.replaceAll());
    }
  }

  sendSelection(update) {
    if (!update.view.hasFocus) {
      if (update.focusChanged) this.client.setCursor(null);
      return;
    }
    if (update.state.doc.length !== this.sync.text.length) return;
    const { anchor, head } = update.state.selection.main;
    this.sync.setCursor({ anchor, head });
  }

  onClientChange({ op }) {
    const before = this.sync.text;
    let changes;
    try {
      op = this.sync.remote(op);
      // The editor shows sync.text: anything else is a disagreement, settled by replaceAll.
      if (this.view.state.doc.length !== before.length) throw new Error("texts differ");
      changes = opToChangeSpecs(op, before);
    } catch {
      this.replaceAll();
      return;
    }
    this.view.dispatch({
      changes,
      effects: setPeers.of(peerDecorations(this.sync, this.colour)),
      annotations: [remoteChange.of(true), Transaction.addToHistory.of(false)],
    });
  }

  /** Shows the client's text wholesale (first load, or after a disagreement). */
  replaceAll() {
    this.sync.reset();
    const doc = this.view.state.doc;
    const text = this.sync.text;
    if (doc.toString() === text) return;
    const op = ot.diffOp(doc.toString(), text);
    this.view.dispatch({
      changes: opToChangeSpecs(op, doc.toString()),
      annotations: [remoteChange.of(true), Transaction.addToHistory.of(false)],
    });
  }

  showPeers() {
    if (this.view.state.doc.length !== this.sync.text.length) return;
    this.view.dispatch({ effects: setPeers.of(peerDecorations(this.sync, this.colour)) });
  }

  syncAccess() {
    const writable = this.client.access === "write" && this.client.status !== "closed";
    if (this.view.state.field(writableField) !== writable) this.view.dispatch({ effects: setWritable.of(writable) });
  }

  onClientError({ code, message, seq }) {
    if (seq == null || code === "rate_limited") return;
    this.notify(`The server refused an edit (${code}: ${message}). The editor now shows the server's text.`);
  }

  notify(text) {
    if (!this.notices) return;
    this.later(() => this.view.dispatch({ effects: setNotice.of(text) }));
  }

  destroy() {
    this.destroyed = true;
    for (const off of this.off) off();
    this.sync.destroy();
  }
}

/** The CodeMirror extension that binds the editor to `client` (see the module comment). */
export function collabExtension(client, options = {}) {
  return [
    EditorState.lineSeparator.of("\n"),
    writableField,
    refuseWhileReadOnly,
    peersField,
    noticeField,
    theme,
    ViewPlugin.define((view) => new Binding(view, client, options)),
  ];
}

export default collabExtension;
