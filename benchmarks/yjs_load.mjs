// The Yjs load of benchmarks/run.py: N WebsocketProviders (yjs + y-websocket, the versions
// pinned in tests/yjs_node) on one room, each typing `rate` updates a second for `duration`
// seconds. Each update also stamps a Y.Map with its author's send time; every other client
// measures the integration latency when the stamp arrives. Prints one JSON line of results.
// node yjs_load.mjs <ws base> <room> <token> <clients> <rate> <warmup s> <duration s>
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'
import { performance } from 'node:perf_hooks'

const [base, room, token, n, rate, warmup, duration] = process.argv.slice(2)
const clients = Number(n)
const now = () => performance.timeOrigin + performance.now()
const latencies = []
let measuring = false
let sent = 0

const peers = []
for (let i = 0; i < clients; i++) {
  const doc = new Y.Doc()
  const provider = new WebsocketProvider(base, room, doc, { WebSocketPolyfill: WebSocket, params: { token }, disableBc: true })
  provider.awareness.setLocalStateField('user', { name: `bench-${i}` })
  const stamps = doc.getMap('stamps')
  stamps.observe((event, transaction) => {
    if (transaction.local || !measuring) return
    const at = now()
    for (const key of event.keysChanged) {
      const stamp = stamps.get(key)
      if (stamp) latencies.push(at - stamp)
    }
  })
  peers.push({ doc, provider, text: doc.getText('content'), stamps })
}

const until = (check, ms) => new Promise((resolve, reject) => {
  const started = Date.now()
  const timer = setInterval(() => {
    if (check()) { clearInterval(timer); resolve() } else if (Date.now() - started > ms) {
      clearInterval(timer); reject(new Error('timed out'))
    }
  }, 20)
})

await until(() => peers.every((p) => p.provider.synced), 30000)
const alphabet = ['a', 'b', 'é', '中', '😀', ' ']
const timers = peers.map((p, i) => setInterval(() => {
  const text = p.text.toString()
  let at = Math.floor(Math.random() * (text.length + 1))
  const code = text.charCodeAt(at - 1)
  if (code >= 0xd800 && code <= 0xdbff) at -= 1
  p.doc.transact(() => {
    if (text.length > 400 && Math.random() < 0.5) {
      let end = at + 1
      const c = text.charCodeAt(at)
      if (c >= 0xd800 && c <= 0xdbff) end += 1
      if (end <= text.length) p.text.delete(at, end - at)
    } else {
      p.text.insert(at, alphabet[(i + sent) % alphabet.length])
    }
    p.stamps.set(String(p.doc.clientID), now())
  })
  if (measuring) sent++
}, 1000 / Number(rate)))

await new Promise((resolve) => setTimeout(resolve, Number(warmup) * 1000))
measuring = true
const began = now()
await new Promise((resolve) => setTimeout(resolve, Number(duration) * 1000))
measuring = false
const elapsed = (now() - began) / 1000
timers.forEach(clearInterval)
let converged = true
try {
  await until(() => peers.every((p) => p.text.toString() === peers[0].text.toString()), 20000)
} catch {
  converged = false
  const texts = new Set(peers.map((p) => p.text.toString()))
  console.error(`${texts.size} different texts: ${[...texts].map((t) => t.length).join(', ')}`)
  for (const t of texts) console.error(JSON.stringify(t))
}
latencies.sort((a, b) => a - b)
const q = (p) => latencies.length ? latencies[Math.min(latencies.length - 1, Math.floor(latencies.length * p / 100))] : null
console.log(JSON.stringify({
  clients, sent, seconds: elapsed, updates_per_second: sent / elapsed,
  deliveries: latencies.length, p50_ms: q(50), p95_ms: q(95), p99_ms: q(99),
  converged, text_length: peers[0].text.length
}))
for (const p of peers) p.provider.destroy()
process.exit(0)
