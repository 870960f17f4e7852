// Builds Monaco's editor API and its worker as ES modules into the folder given, for the Monaco
// browser tests (test_monaco.py). Monaco is several megabytes: it is built per machine from the
// package pinned in package-lock.json, never committed. Usage: node build_monaco.mjs OUTDIR
import { build } from "esbuild";
import { resolve } from "node:path";

const outdir = resolve(process.argv[2] ?? "monaco-build");
await build({
  absWorkingDir: import.meta.dirname,
  entryPoints: [
    { out: "monaco", in: "monaco-editor/editor/editor.api.js" },
    { out: "editor.worker", in: "monaco-editor/editor/editor.worker.js" },
  ],
  bundle: true,
  format: "esm",
  target: "es2022",
  minify: true,
  loader: { ".ttf": "file" },
  outdir,
  logLevel: "warning",
});
console.log(outdir);
