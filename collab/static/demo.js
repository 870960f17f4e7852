// The demo page of `collab serve --dev`: a shared CodeMirror editor with live cursors, a list of
// who is here, a connection indicator and a history slider. Tokens come from the dev-only
// POST /dev/token. `?editor=textarea` shows the dependency-free textarea binding instead.
import { EditorState } from "@codemirror/state";
import { EditorView, drawSelection, highlightActiveLine, highlightActiveLineGutter, highlightSpecialChars, keymap, lineNumbers } from "@codemirror/view";
import { defaultKeymap, history as undoHistory, historyKeymap } from "@codemirror/commands";
import { connect, bindTextarea, ot } from "/static/collab-client.js";
import { collabExtension } from "/static/collab-codemirror.js";

const EDITOR = new URLSearchParams(location.search).get("editor") === "textarea" ? "textarea" : "codemirror";

const $ = (id) => document.getElementById(id);
const els = {
  form: $("join-form"),
  name: $("name"),
  doc: $("doc"),
  status: $("status"),
  statusText: $("status-text"),
  banner: $("banner"),
  editor: $("editor"),
  editorBox: $("editor-box"),
  pick: $("pick"),
  cm: $("cm"),
  overlay: $("overlay"),
  overlayInner: $("overlay-inner"),
  peers: $("peers"),
  peerCount: $("peer-count"),
  stats: $("doc-stats"),
  tabEdit: $("tab-edit"),
  tabHistory: $("tab-history"),
  paneEdit: $("pane-edit"),
  paneHistory: $("pane-history"),
  slider: $("slider"),
  live: $("live"),
  histRev: $("hist-rev"),
  histAuthor: $("hist-author"),
  histTime: $("hist-time"),
  histDelta: $("hist-delta"),
  histView: $("history-view"),
  share: $("share-link"),
};

const ADJECTIVES = ["Amber", "Brisk", "Calm", "Daring", "Eager", "Gentle", "Jolly", "Lucky", "Nimble", "Quiet", "Swift", "Witty"];
const ANIMALS = ["Otter", "Heron", "Lynx", "Panda", "Fox", "Koala", "Falcon", "Badger", "Ibis", "Marten", "Puffin", "Wren"];
const pick = (list) => list[Math.floor(Math.random() * list.length)];

const session = {
  client: null,
  unbind: null,
  token: null,
  user: null,
  names: new Map(), // user id -> display name
  history: new Map(), // rev -> {content, op, user, created_at}
  following: true, // the history slider sits on the newest revision
  generation: 0,
  editor: EDITOR,
  view: null, // the CodeMirror EditorView
  /** The text the editor shows. */
  shown: () => (EDITOR === "textarea" ? els.editor.value : session.view?.state.doc.toString() ?? null),
  /** Whether the editor takes typing. */
  writable: () =>
    EDITOR === "textarea" ? !els.editor.readOnly : !!session.view && !session.view.state.readOnly,
};
window.collabDemo = session; // handy in the console, and for the browser tests

// ----- colours and names ----------------------------------------------------------------------

const PALETTE = ["#3b5bdb", "#e8590c", "#2f9e44", "#ae3ec9", "#e03131", "#0c8599", "#d6336c", "#f08c00", "#5f3dc4", "#8d6e63"];
const colours = new Map(); // user id -> colour, kept for the session

/** A colour per user: from a hash of the id, moved on while another user present has it. */
function colorFor(key) {
  if (colours.has(key)) return colours.get(key);
  let h = 2166136261;
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 16777619);
  const start = (h >>> 0) % PALETTE.length;
  const present = new Set(
    [session.user?.id, ...(session.client?.peers ?? []).map((p) => p.user)]
      .filter((u) => u && u !== key && colours.has(u))
      .map((u) => colours.get(u)),
  );
  let colour = PALETTE[start];
  for (let i = 0; i < PALETTE.length; i++) {
    const candidate = PALETTE[(start + i) % PALETTE.length];
    if (!present.has(candidate)) {
      colour = candidate;
      break;
    }
  }
  colours.set(key, colour);
  return colour;
}

function displayName(userId) {
  if (!userId) return "someone";
  if (session.names.has(userId)) return session.names.get(userId);
  const known = session.client?.nameOf(userId);
  if (known && known !== userId) return known;
  // Dev tokens name users "<slug>-<6 hex>": show the slug nicely.
  const slug = userId.replace(/-[0-9a-f]{6}$/, "");
  return slug.split("-").map((w) => w.charAt(0).toUpperCase() + w.slice(1)).join(" ");
}

const initials = (name) =>
  name.split(/\s+/).filter(Boolean).slice(0, 2).map((w) => Array.from(w)[0]).join("") || "?";

// ----- start / restart ------------------------------------------------------------------------

function docFromHash() {
  const m = location.hash.match(/doc=([A-Za-z0-9._-]{1,128})/);
  return m ? m[1] : null;
}

async function devToken(name) {
  const cacheKey = "collab.token:" + name;
  const cached = JSON.parse(sessionStorage.getItem(cacheKey) || "null");
  if (cached && cached.expires > Date.now()) return cached;
  const res = await fetch("/dev/token", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ name }),
  });
  if (!res.ok) {
    throw new Error(
      res.status === 404
        ? "This page mints demo tokens with POST /dev/token, which only exists when the server runs with --dev."
        : `POST /dev/token answered ${res.status}`,
    );
  }
  const body = await res.json();
  const entry = { token: body.token, user: body.user, expires: Date.now() + 6 * 3600 * 1000 };
  sessionStorage.setItem(cacheKey, JSON.stringify(entry));
  return entry;
}

function showBanner(text) {
  els.banner.textContent = text;
  els.banner.hidden = !text;
}

async function start() {
  const generation = ++session.generation;
  session.unbind?.();
  session.unbind = null;
  session.client?.close();
  session.client = null;
  els.pick.hidden = true;
  els.editorBox.hidden = false;
  session.history.clear();
  session.following = true;
  showBanner("");
  renderPeers();
  setStatus("connecting");

  const name = els.name.value.trim();
  const doc = els.doc.value.trim();
  els.share.href = `${location.origin}${location.pathname}${location.search}#doc=${doc}`;
  els.share.textContent = els.share.href;
  document.title = `${doc} · collab`;

  let auth;
  try {
    auth = await devToken(name);
  } catch (err) {
    setStatus("closed", String(err.message));
    showBanner(String(err.message));
    return;
  }
  if (generation !== session.generation) return;
  session.token = auth.token;
  session.user = auth.user;
  session.names.set(auth.user.id, auth.user.name);
  colorFor(auth.user.id); // our own colour first: peers then avoid it

  // A dev server started without COLLAB_JWT_SECRET signs with a new random key each time it
  // starts: when it refuses our token, mint a new one.
  const token = async ({ refresh = false } = {}) => {
    if (refresh) {
      sessionStorage.removeItem("collab.token:" + name);
      const fresh = await devToken(name);
      session.token = fresh.token;
      session.user = fresh.user;
      session.names.set(fresh.user.id, fresh.user.name);
    }
    return session.token;
  };
  const client = connect({ url: location.origin, doc, token });
  session.client = client;
  client.on("status", ({ status, retryIn, reason }) => setStatus(status, reason, retryIn));
  client.on("deleted", () => showBanner("This document was deleted. Open another one above."));
  client.on("error", ({ code, message, fatal }) => {
    console.warn("collab:", code, message);
    if (fatal && code !== "deleted") showBanner(`Disconnected: ${message}`);
  });
  for (const name of ["change", "localchange"]) client.on(name, () => {
    scheduleRender();
    updateStats();
    updateSlider();
  });
  client.on("ack", () => {
    updateStats();
    updateSlider();
  });
  for (const name of ["presence", "join", "leave"]) client.on(name, scheduleRender);
  await client.ready;
  if (generation !== session.generation) return;
  session.unbind = EDITOR === "textarea" ? showTextarea(client) : showCodeMirror(client);
  updateStats();
  updateSlider();
  renderPeers();
  scheduleRender();
}

function showTextarea(client) {
  els.editor.hidden = false;
  els.overlay.hidden = false;
  const unbind = bindTextarea(client, els.editor);
  els.editor.focus();
  els.editor.setSelectionRange(els.editor.value.length, els.editor.value.length);
  return unbind;
}

function showCodeMirror(client) {
  els.cm.hidden = false;
  const view = new EditorView({
    parent: els.cm,
    state: EditorState.create({
      doc: client.text,
      extensions: [
        lineNumbers(),
        highlightActiveLineGutter(),
        highlightSpecialChars(),
        undoHistory(),
        drawSelection(),
        highlightActiveLine(),
        EditorView.lineWrapping,
        keymap.of([...historyKeymap, ...defaultKeymap]),
        EditorView.updateListener.of((update) => {
          if (update.selectionSet || update.focusChanged) scheduleRender();
        }),
        collabExtension(client, { colour: (peer) => colorFor(peer.user ?? peer.client) }),
      ],
    }),
  });
  session.view = view;
  view.focus();
  view.dispatch({ selection: { anchor: view.state.doc.length } });
  return () => {
    view.destroy();
    if (session.view === view) session.view = null;
  };
}

function setStatus(status, reason, retryIn) {
  els.status.dataset.status = status;
  const client = session.client;
  let text = {
    idle: "no document open",
    connecting: "connecting…",
    online: "online",
    offline: "offline",
    closed: "disconnected",
  }[status] ?? status;
  if (status === "online" && client?.access === "read") text = "online · read only";
  if (status === "offline" && retryIn != null) text = `offline · retrying in ${Math.max(1, Math.round(retryIn / 1000))}s`;
  if (status === "closed" && reason === "deleted") text = "document deleted";
  if (status === "closed" && reason === "auth") text = "signed out";
  els.statusText.textContent = text;
}

function updateStats() {
  const c = session.client;
  if (!c) return;
  const lines = c.text === "" ? 1 : c.text.split("\n").length;
  els.stats.textContent = `rev ${c.rev} · ${c.length} chars · ${lines} line${lines === 1 ? "" : "s"}`;
}

// ----- peers ----------------------------------------------------------------------------------

function lineCol(text, cp) {
  const upTo = text.slice(0, ot.cpToUtf16(text, Math.min(cp, ot.cpLength(text))));
  const line = upTo.split("\n").length;
  const col = ot.cpLength(upTo.slice(upTo.lastIndexOf("\n") + 1)) + 1;
  return `${line}:${col}`;
}

function renderPeers() {
  const c = session.client;
  const items = [];
  if (c && session.user) {
    const sel = c.cursor;
    items.push({ key: "self", user: session.user.id, name: session.user.name, cursor: sel, you: true });
  }
  for (const p of c?.peers ?? []) {
    items.push({ key: p.client, user: p.user, name: p.name || displayName(p.user), cursor: p.cursor });
  }
  els.peers.replaceChildren(
    ...items.map((p) => {
      const li = document.createElement("li");
      li.dataset.client = p.key;
      li.style.setProperty("--c", colorFor(p.user ?? p.key));
      const avatar = document.createElement("span");
      avatar.className = "avatar";
      avatar.textContent = initials(p.name ?? "?");
      const who = document.createElement("span");
      who.className = "who";
      who.textContent = p.name ?? "someone";
      if (p.you) {
        const you = document.createElement("span");
        you.className = "you";
        you.textContent = " (you)";
        who.append(you);
      }
      const pos = document.createElement("span");
      pos.className = "pos";
      pos.textContent = p.cursor && c ? lineCol(c.text, p.cursor.head) : "";
      li.append(avatar, who, pos);
      return li;
    }),
  );
  els.peerCount.textContent = String(items.length);
}

// ----- remote cursors: a mirror of the textarea with coloured carets --------------------------

let renderQueued = false;
function scheduleRender() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => {
    renderQueued = false;
    renderOverlay();
    renderPeers();
  });
}

function renderOverlay() {
  if (EDITOR !== "textarea") return; // CodeMirror draws the cursors itself
  const ta = els.editor;
  const c = session.client;
  els.overlay.style.width = `${ta.clientWidth}px`;
  els.overlay.style.height = `${ta.clientHeight}px`;
  const inner = els.overlayInner;
  inner.className = "overlay-text";
  inner.style.transform = `translateY(${-ta.scrollTop}px)`;
  if (!c || ta.value !== c.text) {
    inner.replaceChildren();
    return;
  }
  const text = c.text;
  const ranges = [];
  const carets = [];
  for (const p of c.peers) {
    if (!p.cursor) continue;
    const color = colorFor(p.user ?? p.client);
    const a = c.toUtf16(p.cursor.anchor);
    const h = c.toUtf16(p.cursor.head);
    if (a !== h) ranges.push({ from: Math.min(a, h), to: Math.max(a, h), color });
    carets.push({ pos: h, color, name: p.name || displayName(p.user), client: p.client });
  }
  const cuts = new Set([0, text.length]);
  for (const r of ranges) cuts.add(r.from).add(r.to);
  for (const k of carets) cuts.add(k.pos);
  const points = [...cuts].sort((x, y) => x - y);
  const frag = document.createDocumentFragment();
  for (let i = 0; i < points.length; i++) {
    const at = points[i];
    for (const k of carets.filter((k) => k.pos === at)) {
      const caret = document.createElement("span");
      caret.className = "caret";
      caret.dataset.client = k.client;
      caret.style.setProperty("--c", k.color);
      const flag = document.createElement("span");
      flag.className = "flag";
      flag.textContent = k.name;
      caret.append(flag);
      frag.append(caret);
    }
    const next = points[i + 1];
    if (next === undefined || next === at) continue;
    const piece = text.slice(at, next);
    const cover = ranges.filter((r) => r.from <= at && r.to >= next).at(-1);
    if (cover) {
      const span = document.createElement("span");
      span.className = "sel";
      span.style.setProperty("--c", cover.color);
      span.textContent = piece;
      frag.append(span);
    } else {
      frag.append(document.createTextNode(piece));
    }
  }
  frag.append(document.createTextNode("\u200b")); // keeps a trailing empty line measurable
  inner.replaceChildren(frag);
}

els.editor.addEventListener("scroll", scheduleRender);
els.editor.addEventListener("input", () => {
  scheduleRender();
  updateStats();
});
for (const type of ["keyup", "mouseup", "select", "focus"]) els.editor.addEventListener(type, scheduleRender);
new ResizeObserver(scheduleRender).observe(els.editor);

// ----- history --------------------------------------------------------------------------------

function selectTab(which) {
  const history = which === "history";
  els.tabEdit.setAttribute("aria-selected", String(!history));
  els.tabHistory.setAttribute("aria-selected", String(history));
  els.paneEdit.hidden = history;
  els.paneHistory.hidden = !history;
  if (history) {
    updateSlider();
    showRevision(Number(els.slider.value));
  } else {
    if (EDITOR === "textarea") els.editor.focus();
    else session.view?.focus();
    scheduleRender();
  }
}
els.tabEdit.addEventListener("click", () => selectTab("edit"));
els.tabHistory.addEventListener("click", () => selectTab("history"));

function updateSlider() {
  const c = session.client;
  if (!c) return;
  const max = c.rev;
  const wasAtMax = session.following;
  els.slider.max = String(max);
  if (wasAtMax) {
    els.slider.value = String(max);
    if (!els.paneHistory.hidden) showRevision(max);
  }
}

let sliderTimer = null;
els.slider.addEventListener("input", () => {
  session.following = Number(els.slider.value) === Number(els.slider.max);
  clearTimeout(sliderTimer);
  sliderTimer = setTimeout(() => showRevision(Number(els.slider.value)), 60);
});
els.live.addEventListener("click", () => {
  session.following = true;
  els.slider.value = els.slider.max;
  showRevision(Number(els.slider.max));
});

async function api(path) {
  const res = await fetch(path, { headers: { Authorization: `Bearer ${session.token}` } });
  if (!res.ok) throw new Error(`${path}: HTTP ${res.status}`);
  return res.json();
}

async function loadRevision(rev) {
  if (session.history.has(rev)) return session.history.get(rev);
  const doc = encodeURIComponent(session.client.doc);
  const [content, hist] = await Promise.all([
    api(`/documents/${doc}/content?rev=${rev}`),
    rev > 0 ? api(`/documents/${doc}/history?since=${rev - 1}&limit=1`) : Promise.resolve({ ops: [] }),
  ]);
  const op = hist.ops.find((o) => o.rev === rev) ?? null;
  const entry = { rev, content: content.content, op };
  session.history.set(rev, entry);
  return entry;
}

let shownRev = null;
async function showRevision(rev) {
  if (!session.client) return;
  shownRev = rev;
  els.histView.classList.add("loading");
  let entry;
  try {
    entry = await loadRevision(rev);
  } catch (err) {
    if (shownRev === rev) {
      els.histView.classList.remove("loading");
      els.histView.textContent = String(err.message);
    }
    return;
  }
  if (shownRev !== rev) return;
  els.histView.classList.remove("loading");
  els.histView.dataset.rev = String(rev);
  els.histRev.textContent = `rev ${rev} / ${els.slider.max}`;
  if (!entry.op) {
    els.histAuthor.replaceChildren(document.createTextNode(rev === 0 ? "the empty document" : ""));
    els.histTime.textContent = "";
    els.histDelta.textContent = "";
    els.histView.replaceChildren(document.createTextNode(entry.content));
    return;
  }
  const color = colorFor(entry.op.user);
  const swatch = document.createElement("span");
  swatch.className = "swatch";
  swatch.style.setProperty("--c", color);
  els.histAuthor.replaceChildren(swatch, document.createTextNode(displayName(entry.op.user)));
  els.histTime.textContent = new Date(entry.op.created_at).toLocaleString();
  els.histView.replaceChildren(renderOp(entry.content, entry.op.op, color));
}

/** The content at a revision with that revision's op marked: inserts highlighted, deletes struck. */
function renderOp(content, op, color) {
  const frag = document.createDocumentFragment();
  let pos = 0; // UTF-16 offset in content (the text after the op)
  let added = 0;
  let removed = 0;
  let firstMark = null;
  for (const c of op) {
    if (typeof c === "number") {
      const end = pos + ot.cpToUtf16(content, c, pos);
      frag.append(document.createTextNode(content.slice(pos, end)));
      pos = end;
    } else if (typeof c === "string") {
      const ins = document.createElement("ins");
      ins.style.setProperty("--c", color);
      ins.textContent = c;
      frag.append(ins);
      firstMark ??= ins;
      pos += c.length;
      added += ot.cpLength(c);
    } else {
      const n = typeof c.d === "number" ? c.d : ot.cpLength(c.d);
      removed += n;
      if (typeof c.d === "string") {
        const del = document.createElement("del");
        del.textContent = c.d;
        frag.append(del);
        firstMark ??= del;
      }
    }
  }
  frag.append(document.createTextNode(content.slice(pos)));
  els.histDelta.textContent = [added && `+${added}`, removed && `−${removed}`].filter(Boolean).join(" ");
  if (firstMark) requestAnimationFrame(() => firstMark.scrollIntoView({ block: "nearest" }));
  return frag;
}

// ----- wiring ---------------------------------------------------------------------------------

els.name.value = localStorage.getItem("collab.name") || `${pick(ADJECTIVES)} ${pick(ANIMALS)}`;
els.doc.value = docFromHash() || "";

els.form.addEventListener("submit", (event) => {
  event.preventDefault();
  if (!els.form.reportValidity()) return;
  localStorage.setItem("collab.name", els.name.value.trim());
  const doc = els.doc.value.trim();
  if (docFromHash() !== doc) history.replaceState(null, "", `#doc=${doc}`);
  start();
});

window.addEventListener("hashchange", () => {
  const doc = docFromHash();
  if (doc && doc !== session.client?.doc) {
    els.doc.value = doc;
    start();
  }
});

// A document is joined (and created) only once one is chosen: in the link, or with Open.
if (docFromHash()) start();
else els.doc.focus();
