/**
 * editor-sync.js: what the editor bindings (collab-codemirror.js, collab-monaco.js) share: the
 * text an editor shows, kept in step with a collab client, and edits too large for one message
 * sent in pieces.
 *
 * The client composes every edit made while one is in flight into a single buffered op, so an
 * edit larger than the server's COLLAB_MAX_MESSAGE_BYTES would reach the server as one frame and
 * close the socket (1009). An EditorSync holds such an edit back (`held`, an op on the client's
 * text) and hands it to the client a piece at a time, each piece once the client has room for it
 * (no buffered op yet). Until then the editor shows the client's text with `held` applied, and
 * remote ops are transformed past `held` exactly as the client transforms them past its own
 * pending ops.
 *
 *   const sync = new EditorSync(client, { maxMessageBytes });
 *   sync.text                  the text the editor shows
 *   sync.local(op)             an edit made in the editor (code points on sync.text)
 *   sync.remote(op) -> op'     an op the client applied to its text (a `change` event's op):
 *                              the same change on sync.text, for the editor to apply
 *   sync.peers()               client.peers with cursors on sync.text
 *   sync.toUtf16(cp), sync.fromUtf16(u16)   positions on sync.text
 *   sync.holding               some of our edits are not given to the client yet
 *   sync.submitting            true while it calls client.submit (the `localchange` events
 *                              then are the editor's own edits, shown already)
 *   sync.destroy()
 *
 * splitOp(op, budget) -> [head, rest]: head fits in `budget` bytes of JSON and
 * compose(head, rest) equals op (rest is null when op fits whole).
 */

import * as ot from "./ot-text.js";

const encoder = new TextEncoder();
export const jsonBytes = (value) => encoder.encode(JSON.stringify(value)).length;

/** The longest prefix of `s` (whole code points) whose JSON string takes at most `room` bytes. */
function prefixWithin(s, room) {
  let used = 0;
  let end = 0;
  for (const ch of s) {
    const size = jsonBytes(ch) - 2;
    if (used + size > room) break;
    used += size;
    end += ch.length;
  }
  return s.slice(0, end);
}

export function splitOp(op, budget) {
  if (jsonBytes(op) <= budget) return [op, null];
  const head = [];
  let used = 2; // the brackets
  let at = 0; // code points of the text after `head`, up to where head stops
  for (let i = 0; i < op.length; i++) {
    const c = op[i];
    const size = jsonBytes(c) + 1;
    const text = typeof c === "string" ? c : typeof c === "object" && typeof c.d === "string" ? c.d : null;
    if (used + size <= budget || text === null) {
      head.push(c);
      used += size;
      if (typeof c === "number") at += c;
      else if (typeof c === "string") at += ot.cpLength(c);
      continue;
    }
    let cut = prefixWithin(text, budget - used - 16);
    // A head of skips alone would change nothing: it takes one code point at least.
    if (!cut && head.every((h) => typeof h === "number")) cut = String.fromCodePoint(text.codePointAt(0));
    const remainder = text.slice(cut.length);
    const insert = typeof c === "string";
    if (cut) head.push(insert ? cut : { d: cut });
    if (insert) at += ot.cpLength(cut);
    const rest = [at, insert ? remainder : { d: remainder }, ...op.slice(i + 1)];
    return [ot.normalize(head), ot.normalize(rest)];
  }
  return [op, null];
}

export class EditorSync {
  constructor(client, { maxMessageBytes = 1048576 } = {}) {
    this.client = client;
    // A piece leaves room for the frame around it and for the delete texts the client adds.
    this.budget = Math.max(1024, Math.floor(maxMessageBytes / 2) - 256);
    this.held = null;
    this.text = client.text;
    this.submitting = false;
    // After the event, not in it: the client emits "ack" before it sends its buffered op, and a
    // submit() from inside the handler would go out ahead of that op.
    const later = () => queueMicrotask(() => this._pump());
    this._off = [client.on("ack", later), client.on("status", later)];
  }

  get holding() {
    return this.held !== null;
  }

  /** An edit made in the editor: `op` in code points on `this.text`. Throws if the client refuses it. */
  local(op) {
    const after = ot.apply(this.text, op);
    if (this.held === null && jsonBytes(op) <= this.budget) {
      this._submit(op);
      this.text = after;
    } else {
      this.held = this.held ? ot.compose(this.held, op) : op;
      this.text = after;
      this._pump();
    }
  }

  /** `op` was applied to the client's text: returns it transformed to apply to `this.text`. */
  remote(op) {
    if (this.held !== null) {
      const theirs = ot.transform(op, this.held, "right");
      this.held = ot.transform(this.held, op, "left");
      op = theirs;
    }
    this.text = ot.apply(this.text, op);
    return op;
  }

  /** Forgets held edits and shows the client's text (after a disagreement). */
  reset() {
    this.held = null;
    this.text = this.client.text;
  }

  peers() {
    const peers = this.client.peers;
    if (this.held === null) return peers;
    return peers.map((p) => ({ ...p, cursor: p.cursor && ot.transformSelection(p.cursor, this.held) }));
  }

  toUtf16(cp) {
    return ot.cpToUtf16(this.text, Math.max(0, Math.min(cp, ot.cpLength(this.text))));
  }

  fromUtf16(u16) {
    const n = Math.max(0, Math.min(u16, this.text.length));
    const code = this.text.charCodeAt(n);
    return ot.utf16ToCp(this.text, code >= 0xdc00 && code <= 0xdfff ? n - 1 : n);
  }

  /** Sends our cursor (UTF-16 offsets of `this.text`) as presence, unless edits are held back. */
  setCursor(selection) {
    if (this.held !== null) return;
    this.client.setCursor(selection && { anchor: this.fromUtf16(selection.anchor), head: this.fromUtf16(selection.head) });
  }

  _pump() {
    // One piece in flight and one buffered at most: the client composes everything after that.
    while (this.held !== null && this.client.state !== "awaiting-with-buffer" && this.client.access === "write") {
      const [piece, rest] = splitOp(this.held, this.budget);
      this._submit(piece);
      this.held = rest && !ot.isNoop(rest) ? rest : null;
    }
  }

  _submit(op) {
    this.submitting = true;
    try {
      this.client.submit(op);
    } finally {
      this.submitting = false;
    }
  }

  destroy() {
    for (const off of this._off) off();
  }
}
