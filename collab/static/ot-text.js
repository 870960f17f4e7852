/**
 * ot-text.js: the plain-text OT type of collab (SPEC section 3), as a dependency-free ES module.
 *
 * Same semantics as the npm type `ot-text-unicode` v4, component for component, for every op in
 * normal form. An operation is an array of components, positions in Unicode code points:
 *
 *   n          (integer > 0)  skip n characters
 *   "text"     (non-empty)    insert text here
 *   {d: n}     (n > 0)        delete n characters here
 *   {d: "txt"} (non-empty)    delete that text here (invertible form; checked by `apply`)
 *
 * Normal form: no empty components, neighbours of one kind merged, no trailing skip.
 *
 * Exports
 *   Type:      apply(doc, op), transform(op, other, side), compose(a, b), normalize(op),
 *              transformPosition(pos, op), transformSelection(sel, op), check(op, docLen?),
 *              invert(op), makeInvertible(op, doc), isInvertible(op), stripInvertible(op),
 *              isNoop(op), insertOp(pos, text), deleteOp(pos, textOrLength)
 *   Unicode:   cpLength(s), cpToUtf16(s, cp), utf16ToCp(s, u16), cpSlice(s, start, end?)
 *   Browser:   diffOp(oldText, newText, caretUtf16?)  prefix/suffix diff into an op
 *              opToUtf16(op, doc) -> {op, changes}   the op re-counted in UTF-16 units, for UIs
 *
 * JavaScript strings are UTF-16: an astral character (emoji, U+10000 and above) is two units and
 * one code point. Everything the type takes and returns counts code points; only the helpers named
 * "Utf16" count units.
 */

/** Thrown for malformed operations and for operations that do not fit the document. */
export class InvalidOp extends Error {
  constructor(message) {
    super(message);
    this.name = "InvalidOp";
  }
}

// ---------------------------------------------------------------------------------------------
// Unicode helpers

const isSurrogate = (code) => code >= 0xd800 && code <= 0xdfff;
const isHighSurrogate = (code) => code >= 0xd800 && code <= 0xdbff;
const isLowSurrogate = (code) => code >= 0xdc00 && code <= 0xdfff;

/** Number of code points in `s` up to the UTF-16 offset `u16` (whole string by default). */
export function utf16ToCp(s, u16 = s.length) {
  let pairs = 0;
  let i = 0;
  for (; i < u16; i++) {
    if (isSurrogate(s.charCodeAt(i))) {
      pairs++;
      i++;
    }
  }
  if (i !== u16) throw new InvalidOp("offset splits a surrogate pair");
  return i - pairs;
}

/** Length of `s` in code points. */
export const cpLength = (s) => utf16ToCp(s);

/** UTF-16 offset in `s` of the code point position `cp` (counted from UTF-16 offset `from`). */
export function cpToUtf16(s, cp, from = 0) {
  let pos = from;
  for (; cp > 0; cp--) pos += isSurrogate(s.charCodeAt(pos)) ? 2 : 1;
  return pos - from;
}

/** `s.slice` in code points. */
export function cpSlice(s, start, end) {
  const a = cpToUtf16(s, start);
  const b = end == null ? s.length : cpToUtf16(s, end);
  return s.slice(a, b);
}

// ---------------------------------------------------------------------------------------------
// Components

/** Length of a delete's payload in code points. */
export const dlen = (d) => (typeof d === "number" ? d : cpLength(d));

const componentLength = (c) =>
  typeof c === "number" ? c : typeof c === "string" ? cpLength(c) : dlen(c.d);

const dslice = (d, start, end) =>
  typeof d === "number" ? (end == null ? d - start : Math.min(d, end) - start) : cpSlice(d, start, end);

/**
 * Throws InvalidOp unless `op` is well formed: skips and delete counts are integers > 0, inserts
 * and delete texts non-empty, no two skips in a row, no trailing skip (the same rules as
 * ot-text-unicode's checkOp). With `docLen`, also that the op fits a document of that length.
 */
export function check(op, docLen) {
  if (!Array.isArray(op)) throw new InvalidOp("an op is an array of components");
  let last = null;
  let consumed = 0;
  for (const c of op) {
    if (typeof c === "number") {
      if (!Number.isInteger(c) || c <= 0) throw new InvalidOp("skips are integers > 0");
      if (typeof last === "number") throw new InvalidOp("adjacent skips must be merged");
      consumed += c;
    } else if (typeof c === "string") {
      if (c.length === 0) throw new InvalidOp("inserts cannot be empty");
    } else if (c !== null && typeof c === "object") {
      if (typeof c.d === "number") {
        if (!Number.isInteger(c.d) || c.d <= 0) throw new InvalidOp("deletes are integers > 0");
      } else if (typeof c.d === "string") {
        if (c.d.length === 0) throw new InvalidOp("deletes cannot be empty");
      } else {
        throw new InvalidOp("a delete is {d: n} or {d: 'text'}");
      }
      consumed += dlen(c.d);
    } else {
      throw new InvalidOp("unknown component " + JSON.stringify(c));
    }
    last = c;
  }
  if (typeof last === "number") throw new InvalidOp("op has a trailing skip");
  if (docLen != null && consumed > docLen) throw new InvalidOp("op is longer than the document");
}

/** Returns a function appending a component to `op`, merging neighbours and dropping no-ops. */
function makeAppend(op) {
  return (c) => {
    if (!c || c.d === 0 || c.d === "") return;
    if (op.length === 0) {
      op.push(typeof c === "object" ? { d: c.d } : c);
      return;
    }
    const last = op[op.length - 1];
    if (typeof c !== typeof last) {
      op.push(typeof c === "object" ? { d: c.d } : c);
    } else if (typeof c === "object") {
      last.d =
        typeof last.d === "string" && typeof c.d === "string" ? last.d + c.d : dlen(last.d) + dlen(c.d);
    } else {
      op[op.length - 1] = last + c;
    }
  };
}

const trim = (op) => {
  if (op.length > 0 && typeof op[op.length - 1] === "number") op.pop();
  return op;
};

/** Normal form of `op`: empty components dropped, neighbours merged, no trailing skip. */
export function normalize(op) {
  const out = [];
  const append = makeAppend(out);
  for (const c of op) append(c);
  return trim(out);
}

/**
 * Reader over an op's components. `take(n, indivisible)` returns up to n characters' worth of the
 * next component (a skip, an insert string or a delete); n = -1 takes the rest of the component.
 * indivisible "i" never splits inserts, "d" never splits deletes. Past the end: skips forever
 * (take(n) returns n, take(-1) returns null).
 */
function makeTake(op) {
  let idx = 0;
  let offset = 0; // into the current component: units of length for skips/deletes, UTF-16 for inserts
  const take = (n, indivisible) => {
    if (idx === op.length) return n === -1 ? null : n;
    const c = op[idx];
    if (typeof c === "number") {
      if (n === -1 || c - offset <= n) {
        const part = c - offset;
        idx++;
        offset = 0;
        return part;
      }
      offset += n;
      return n;
    }
    if (typeof c === "string") {
      const rest = c.slice(offset);
      if (n === -1 || indivisible === "i" || cpLength(rest) <= n) {
        idx++;
        offset = 0;
        return rest;
      }
      const end = offset + cpToUtf16(rest, n);
      const part = c.slice(offset, end);
      offset = end;
      return part;
    }
    if (n === -1 || indivisible === "d" || dlen(c.d) - offset <= n) {
      const part = { d: dslice(c.d, offset) };
      idx++;
      offset = 0;
      return part;
    }
    const part = { d: dslice(c.d, offset, offset + n) };
    offset += n;
    return part;
  };
  const peek = () => op[idx];
  return { take, peek };
}

// ---------------------------------------------------------------------------------------------
// The type

/** Applies `op` to the string `doc`. Throws InvalidOp if it does not fit, or a {d: "text"} differs. */
export function apply(doc, op) {
  check(op);
  const parts = [];
  let pos = 0; // UTF-16 offset into doc
  for (const c of op) {
    if (typeof c === "number") {
      const end = pos + cpToUtf16(doc, c, pos);
      if (end > doc.length) throw new InvalidOp("the op is longer than the document");
      parts.push(doc.slice(pos, end));
      pos = end;
    } else if (typeof c === "string") {
      parts.push(c);
    } else {
      const n = dlen(c.d);
      const end = pos + cpToUtf16(doc, n, pos);
      if (end > doc.length) throw new InvalidOp("the delete runs past the end of the document");
      if (typeof c.d === "string" && doc.slice(pos, end) !== c.d) {
        throw new InvalidOp("deleted text does not match the document");
      }
      pos = end;
    }
  }
  parts.push(doc.slice(pos));
  return parts.join("");
}

/**
 * Transforms `op` so it applies after `other` (both made on the same document). `side` breaks
 * ties between inserts at the same place: the "left" op's insert goes first.
 */
export function transform(op, other, side) {
  if (side !== "left" && side !== "right") throw new InvalidOp("side must be 'left' or 'right'");
  check(op);
  check(other);
  const out = [];
  const append = makeAppend(out);
  const { take, peek } = makeTake(op);
  for (const c2 of other) {
    if (typeof c2 === "number") {
      let length = c2;
      while (length > 0) {
        const c1 = take(length, "i");
        append(c1);
        if (typeof c1 !== "string") length -= componentLength(c1);
      }
    } else if (typeof c2 === "string") {
      if (side === "left" && typeof peek() === "string") append(take(-1));
      append(cpLength(c2));
    } else {
      let length = dlen(c2.d);
      while (length > 0) {
        const c1 = take(length, "i");
        if (typeof c1 === "number") length -= c1;
        else if (typeof c1 === "string") append(c1);
        else length -= dlen(c1.d);
      }
    }
  }
  let c;
  while ((c = take(-1))) append(c);
  return trim(out);
}

/** The op doing `a` then `b`. */
export function compose(a, b) {
  check(a);
  check(b);
  const out = [];
  const append = makeAppend(out);
  const { take } = makeTake(a);
  for (const c2 of b) {
    if (typeof c2 === "number") {
      let length = c2;
      while (length > 0) {
        const chunk = take(length, "d");
        append(chunk);
        if (typeof chunk !== "object") length -= componentLength(chunk);
      }
    } else if (typeof c2 === "string") {
      append(c2);
    } else {
      const length = dlen(c2.d);
      let offset = 0;
      while (offset < length) {
        const chunk = take(length - offset, "d");
        if (typeof chunk === "number") {
          append({ d: dslice(c2.d, offset, offset + chunk) });
          offset += chunk;
        } else if (typeof chunk === "string") {
          offset += cpLength(chunk);
        } else {
          append(chunk);
        }
      }
    }
  }
  let c;
  while ((c = take(-1))) append(c);
  return trim(out);
}

/**
 * Where the code point position `pos` ends up after `op`. An insert exactly at `pos` leaves it
 * before the inserted text; a deleted range collapses onto its start.
 */
export function transformPosition(pos, op) {
  let at = 0;
  for (let i = 0; i < op.length && pos > at; i++) {
    const c = op[i];
    if (typeof c === "number") {
      at += c;
    } else if (typeof c === "string") {
      const n = cpLength(c);
      at += n;
      pos += n;
    } else {
      pos -= Math.min(dlen(c.d), pos - at);
    }
  }
  return pos;
}

/** transformPosition for a number, an [anchor, head] pair or an {anchor, head} object. */
export function transformSelection(sel, op) {
  if (sel == null) return sel;
  if (typeof sel === "number") return transformPosition(sel, op);
  if (Array.isArray(sel)) return sel.map((p) => transformPosition(p, op));
  return { anchor: transformPosition(sel.anchor, op), head: transformPosition(sel.head, op) };
}

export const isNoop = (op) => op.length === 0;

export const isInvertible = (op) => op.every((c) => typeof c !== "object" || typeof c.d === "string");

/** Fills every {d: n} with the text it deletes from `doc`, so the op can be inverted. */
export function makeInvertible(op, doc) {
  const out = [];
  const append = makeAppend(out);
  let pre = 0;
  for (const c of op) {
    if (typeof c === "number") {
      append(c);
      pre += c;
    } else if (typeof c === "string") {
      append(c);
    } else {
      const n = dlen(c.d);
      append({ d: typeof c.d === "string" ? c.d : cpSlice(doc, pre, pre + n) });
      pre += n;
    }
  }
  return trim(out);
}

/** The op undoing `op`; needs the invertible form. */
export function invert(op) {
  const out = [];
  const append = makeAppend(out);
  for (const c of op) {
    if (typeof c === "number") append(c);
    else if (typeof c === "string") append({ d: c });
    else if (typeof c.d === "string") append(c.d);
    else throw new InvalidOp("cannot invert {d: n}: call makeInvertible first");
  }
  return trim(out);
}

/** Replaces every {d: "text"} by {d: n}. */
export const stripInvertible = (op) =>
  normalize(op.map((c) => (typeof c === "object" && typeof c.d === "string" ? { d: cpLength(c.d) } : c)));

/** The op inserting `text` at code point `pos`. */
export const insertOp = (pos, text) => normalize([pos, text]);

/** The op deleting `textOrLength` (a string or a code point count) at code point `pos`. */
export const deleteOp = (pos, textOrLength) => normalize([pos, { d: textOrLength }]);

// ---------------------------------------------------------------------------------------------
// Browser helpers

/**
 * The op turning `oldText` into `newText`: one replaced region found by common prefix and
 * suffix, never splitting a surrogate pair. `caret` (UTF-16 offset in newText, e.g. the
 * textarea's selectionEnd after the edit) settles ambiguous cases such as typing "a" into "aa":
 * the changed region is taken to end at or after the caret. Deletes carry their text.
 */
export function diffOp(oldText, newText, caret) {
  if (oldText === newText) return [];
  const oldLen = oldText.length;
  const newLen = newText.length;
  let suffixMax = Math.min(oldLen, newLen);
  if (caret != null && caret >= 0 && caret <= newLen) suffixMax = Math.min(suffixMax, newLen - caret);
  let suffix = 0;
  while (
    suffix < suffixMax &&
    oldText.charCodeAt(oldLen - 1 - suffix) === newText.charCodeAt(newLen - 1 - suffix)
  ) {
    suffix++;
  }
  const prefixMax = Math.min(oldLen, newLen) - suffix;
  let prefix = 0;
  while (prefix < prefixMax && oldText.charCodeAt(prefix) === newText.charCodeAt(prefix)) prefix++;
  // Never cut a surrogate pair in half.
  if (prefix > 0 && isHighSurrogate(oldText.charCodeAt(prefix - 1))) prefix--;
  if (suffix > 0 && isLowSurrogate(oldText.charCodeAt(oldLen - suffix))) suffix--;
  const removed = oldText.slice(prefix, oldLen - suffix);
  const inserted = newText.slice(prefix, newLen - suffix);
  return normalize([utf16ToCp(oldText, prefix), { d: removed }, inserted]);
}

/**
 * `op` (code points, made on `doc`) re-counted in UTF-16 units. Returns `{op, changes}`: the op
 * with UTF-16 skips and deletes, and `changes`, a list of `{from, to, insert}` in UTF-16 offsets
 * of `doc`, non-overlapping and in document order (CodeMirror's change format).
 */
export function opToUtf16(op, doc) {
  const out = [];
  const changes = [];
  let pos = 0; // UTF-16 offset in doc
  for (const c of op) {
    if (typeof c === "number") {
      const end = pos + cpToUtf16(doc, c, pos);
      out.push(end - pos);
      pos = end;
    } else if (typeof c === "string") {
      out.push(c);
      const last = changes[changes.length - 1];
      if (last && last.to === pos) last.insert += c;
      else changes.push({ from: pos, to: pos, insert: c });
    } else {
      const end = pos + cpToUtf16(doc, dlen(c.d), pos);
      out.push({ d: typeof c.d === "string" ? c.d : end - pos });
      const last = changes[changes.length - 1];
      if (last && last.to === pos) last.to = end;
      else changes.push({ from: pos, to: end, insert: "" });
      pos = end;
    }
  }
  return { op: out, changes };
}

/** The type as an object, shaped like ShareDB types. */
export const type = {
  name: "text-unicode",
  uri: "http://sharejs.org/types/text-unicode",
  create: (initial = "") => initial,
  apply,
  transform,
  compose,
  normalize,
  transformPosition,
  transformSelection,
  checkOp: check,
  isNoop,
  isInvertible,
  makeInvertible,
  invert,
  stripInvertible,
};

export default type;
