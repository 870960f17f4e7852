// Real Yjs clients (yjs + y-websocket's WebsocketProvider on the `ws` package) driven by the
// Python tests: one JSON command per stdin line, one JSON reply per stdout line
// ({id, ok, result | error}); unsolicited events are lines with an `event` field.
// Indexes are Yjs's own (UTF-16 code units), as an editor binding would send them.
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'
import readline from 'node:readline'

const clients = new Map()

const emit = (line) => process.stdout.write(JSON.stringify(line) + '\n')

// y-websocket reports a permission-denied auth message only through console.warn.
const warn = console.warn
console.warn = (...args) => {
  const text = args.join(' ')
  if (text.startsWith('Permission denied to access ')) {
    for (const [name, c] of clients) {
      if (text.startsWith(`Permission denied to access ${c.provider.url}.`)) {
        c.denied.push(text)
        emit({ event: 'permission-denied', name })
        for (const waiter of [...c.waiters]) waiter()
      }
    }
    return
  }
  warn(...args)
}

// A seeded PRNG, so a failing run can be repeated.
const prng = (seed) => () => {
  seed = (seed + 0x6d2b79f5) | 0
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed)
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296
}

const get = (name) => {
  const c = clients.get(name)
  if (!c) throw new Error(`no client ${name}`)
  return c
}

// A UTF-16 index that does not split a surrogate pair.
const boundary = (text, index) => {
  const code = text.charCodeAt(index - 1)
  return code >= 0xd800 && code <= 0xdbff ? index - 1 : index
}

const waitFor = (c, check, timeoutMs, what) => new Promise((resolve, reject) => {
  const done = () => {
    let value
    try { value = check() } catch (e) { cleanup(); reject(e); return }
    if (value !== undefined && value !== false) { cleanup(); resolve(value) }
  }
  const timer = setTimeout(() => {
    cleanup()
    reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}; text ${JSON.stringify(c.text.toString()).slice(0, 300)}, synced ${c.provider.synced}, status ${c.status}`))
  }, timeoutMs)
  const cleanup = () => {
    clearTimeout(timer)
    c.waiters.delete(done)
    c.doc.off('update', done)
    c.provider.off('sync', done)
    c.provider.off('status', done)
    c.provider.off('closed', done)
    c.provider.awareness.off('change', done)
  }
  c.waiters.add(done)
  c.doc.on('update', done)
  c.provider.on('sync', done)
  c.provider.on('status', done)
  c.provider.on('closed', done)
  c.provider.awareness.on('change', done)
  done()
})

const commands = {
  open ({ name, url, room, params = {}, root = 'content', user = null, connect = true }) {
    const doc = new Y.Doc()
    const provider = new WebsocketProvider(url, room, doc, {
      WebSocketPolyfill: WebSocket, params, disableBc: true, connect
    })
    const c = { doc, provider, text: doc.getText(root), status: 'connecting', closes: [], terminal: null, denied: [], synced: 0, waiters: new Set() }
    clients.set(name, c)
    if (user) provider.awareness.setLocalStateField('user', user)
    provider.on('status', ({ status }) => { c.status = status })
    provider.on('sync', (synced) => { if (synced) c.synced++ })
    provider.on('connection-close', (event) => {
      c.closes.push(event ? event.code : null)
      emit({ event: 'close', name, code: event ? event.code : null })
    })
    provider.on('closed', ({ code, reason }) => { c.terminal = { code, reason } })
    return { clientID: doc.clientID }
  },
  insert ({ name, index, text }) { const c = get(name); c.text.insert(index, text); return c.text.toString() },
  delete ({ name, index, length }) { const c = get(name); c.text.delete(index, length); return c.text.toString() },
  text ({ name }) { return get(name).text.toString() },
  state ({ name }) {
    const c = get(name)
    const peers = [...c.provider.awareness.getStates().entries()]
      .filter(([id]) => id !== c.doc.clientID)
      .map(([id, s]) => ({ id, name: s.user ? s.user.name : null }))
    return { text: c.text.toString(), synced: c.provider.synced, status: c.status, closes: c.closes, terminal: c.terminal, denied: c.denied.length, peers, clientID: c.doc.clientID, syncs: c.synced }
  },
  async waitSynced ({ name, timeoutMs = 15000 }) {
    const c = get(name)
    return waitFor(c, () => c.provider.synced && c.status === 'connected', timeoutMs, 'synced')
  },
  async waitText ({ name, text, timeoutMs = 15000 }) {
    const c = get(name)
    return waitFor(c, () => c.text.toString() === text, timeoutMs, `text ${JSON.stringify(text).slice(0, 200)}`)
  },
  async waitTerminal ({ name, timeoutMs = 15000 }) {
    const c = get(name)
    return waitFor(c, () => c.terminal || undefined, timeoutMs, 'a terminal close')
  },
  async waitPeers ({ name, names, timeoutMs = 15000 }) {
    const c = get(name)
    const want = [...names].sort().join('\n')
    return waitFor(c, () => {
      const have = [...c.provider.awareness.getStates().entries()]
        .filter(([id]) => id !== c.doc.clientID)
        .map(([, s]) => (s.user ? s.user.name : '')).sort().join('\n')
      return have === want
    }, timeoutMs, `peers ${names}`)
  },
  async waitDenied ({ name, timeoutMs = 15000 }) {
    const c = get(name)
    return waitFor(c, () => c.denied.length > 0, timeoutMs, 'permission denied')
  },
  // `count` random edits (inserts of astral and plain characters, deletes), `delayMs` apart.
  async type ({ name, count, seed = 1, delayMs = 0, alphabet = ['a', 'b', 'é', '中', '😀', '👍🏽', '𝄞', ' '] }) {
    const c = get(name)
    const random = prng(seed)
    for (let i = 0; i < count; i++) {
      const text = c.text.toString()
      if (text.length > 0 && random() < 0.3) {
        const at = boundary(text, Math.floor(random() * text.length))
        let end = boundary(text, Math.min(text.length, at + 1 + Math.floor(random() * 3)))
        if (end <= at) end = Math.min(text.length, at + 2)
        c.text.delete(at, end - at)
      } else {
        const at = boundary(text, Math.floor(random() * (text.length + 1)))
        c.text.insert(at, alphabet[Math.floor(random() * alphabet.length)])
      }
      if (delayMs > 0) await new Promise((resolve) => setTimeout(resolve, delayMs))
    }
    return c.text.toString()
  },
  disconnect ({ name }) { get(name).provider.disconnect(); return null },
  connect ({ name, params }) {
    const c = get(name)
    if (params) c.provider.params = params
    c.provider.connect()
    return null
  },
  awareness ({ name, field, value }) { get(name).provider.awareness.setLocalStateField(field, value); return null },
  xmlAppend ({ name, root, tag, text }) {
    const fragment = get(name).doc.getXmlFragment(root)
    const element = new Y.XmlElement(tag)
    element.insert(0, [new Y.XmlText(text)])
    fragment.insert(fragment.length, [element])
    return fragment.toString()
  },
  xml ({ name, root }) { return get(name).doc.getXmlFragment(root).toString() },
  async waitXml ({ name, root, xml, timeoutMs = 15000 }) {
    const c = get(name)
    return waitFor(c, () => c.doc.getXmlFragment(root).toString() === xml, timeoutMs, `xml ${xml}`)
  },
  format ({ name, index, length, attributes }) { get(name).text.format(index, length, attributes); return null },
  stateUpdate ({ name }) { return Buffer.from(Y.encodeStateAsUpdate(get(name).doc)).toString('base64') },
  apply ({ name, update }) { const c = get(name); Y.applyUpdate(c.doc, Buffer.from(update, 'base64')); return c.text.toString() },
  diffUpdate ({ name, stateVector }) {
    return Buffer.from(Y.encodeStateAsUpdate(get(name).doc, Buffer.from(stateVector, 'base64'))).toString('base64')
  },
  textOfUpdate ({ update, root = 'content' }) {
    const doc = new Y.Doc()
    Y.applyUpdate(doc, Buffer.from(update, 'base64'))
    return doc.getText(root).toString()
  },
  destroy ({ name }) { const c = get(name); c.provider.destroy(); c.doc.destroy(); clients.delete(name); return null }
}

const input = readline.createInterface({ input: process.stdin })
input.on('line', async (line) => {
  let request
  try { request = JSON.parse(line) } catch { emit({ event: 'bad-command', line }); return }
  try {
    const result = await commands[request.cmd](request)
    emit({ id: request.id, ok: true, result: result === undefined ? null : result })
  } catch (error) {
    emit({ id: request.id, ok: false, error: String(error && error.stack ? error.stack : error) })
  }
})
input.on('close', () => {
  for (const c of clients.values()) c.provider.destroy()
  process.exit(0)
})
