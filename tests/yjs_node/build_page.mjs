// Bundles codemirror_page.mjs (with yjs, y-websocket, CodeMirror and y-codemirror.next) into one
// ES module for the browser test: node build_page.mjs <outfile>.
import { build } from 'esbuild'

await build({
  entryPoints: ['codemirror_page.mjs'],
  bundle: true,
  format: 'esm',
  target: 'es2020',
  outfile: process.argv[2],
  logLevel: 'warning'
})
