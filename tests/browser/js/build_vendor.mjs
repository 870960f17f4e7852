// Builds the vendored ES modules under collab/static/vendor/ from the npm packages pinned in
// this folder's package-lock.json (`make vendor`). The output is committed, so serving the demo
// never needs npm. Each bundle is one folder with one module per entry, the code the entries share
// split into chunks (so `@codemirror/view` and `@codemirror/commands` use the one copy of
// `@codemirror/state` they must share), and THIRD-PARTY-NOTICES.txt with every bundled package's
// licence. A page maps the bare names to the entries with an import map (see index.html).
//
// To add a bundle, add an entry to BUNDLES. `external` lists bare names the bundle must not
// contain because another bundle provides them (a y-codemirror.next bundle would name the
// @codemirror packages here and get them from the codemirror bundle through the import map).
import { build } from "esbuild";
import { existsSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const VENDOR = resolve(here, "../../../collab/static/vendor");

export const BUNDLES = {
  codemirror: {
    entries: {
      state: "@codemirror/state",
      view: "@codemirror/view",
      commands: "@codemirror/commands",
      language: "@codemirror/language",
    },
    external: [],
  },
};

/** The folder of an installed package (its package.json's folder). */
function packageDir(name) {
  const dir = join(here, "node_modules", name);
  if (!existsSync(join(dir, "package.json"))) throw new Error(`${name} is not installed: run npm ci in ${here}`);
  return dir;
}

/** The names of the packages in an esbuild metafile's inputs (node_modules/<name>/...). */
function bundledPackages(metafile) {
  const names = new Set();
  for (const input of Object.keys(metafile.inputs)) {
    const m = input.match(/node_modules\/((?:@[^/]+\/)?[^/]+)\//);
    if (m) names.add(m[1]);
  }
  return [...names].sort();
}

function notices(names) {
  const parts = [
    "Third-party software bundled in this folder by tests/browser/js/build_vendor.mjs (make vendor).",
    "Each package's licence follows, as shipped in its npm package.",
  ];
  for (const name of names) {
    const dir = packageDir(name);
    const meta = JSON.parse(readFileSync(join(dir, "package.json"), "utf8"));
    const file = ["LICENSE", "LICENSE.md", "LICENSE.txt", "license"].find((f) => existsSync(join(dir, f)));
    if (!file) throw new Error(`${name} ships no LICENSE file: check its licence before bundling it`);
    parts.push(`${"=".repeat(78)}\n${name}@${meta.version} (${meta.license})\n${"=".repeat(78)}\n` +
      readFileSync(join(dir, file), "utf8").trim());
  }
  return parts.join("\n\n") + "\n";
}

async function buildBundle(name, { entries, external }) {
  const outdir = join(VENDOR, name);
  rmSync(outdir, { recursive: true, force: true });
  const result = await build({
    absWorkingDir: here,
    entryPoints: Object.entries(entries).map(([out, pkg]) => ({ out, in: pkg })),
    bundle: true,
    splitting: true,
    format: "esm",
    target: "es2020",
    minify: true,
    legalComments: "none", // the licences are in THIRD-PARTY-NOTICES.txt, whole
    chunkNames: "chunks/[name]-[hash]",
    external,
    outdir,
    metafile: true,
    logLevel: "warning",
  });
  writeFileSync(join(outdir, "THIRD-PARTY-NOTICES.txt"), notices(bundledPackages(result.metafile)));
  return Object.keys(result.metafile.outputs).length;
}

const only = process.argv.slice(2);
for (const [name, bundle] of Object.entries(BUNDLES)) {
  if (only.length && !only.includes(name)) continue;
  const files = await buildBundle(name, bundle);
  console.log(`vendor/${name}: ${files} files`);
}
