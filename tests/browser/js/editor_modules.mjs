// `node --import ./editor_modules.mjs`: resolves the editors' packages imported by the bindings in
// collab/static/ (bare names such as "@codemirror/state") from this folder's node_modules, as a
// bundler or the demo page's import map would.
import { register } from "node:module";

register(
  "data:text/javascript," +
    encodeURIComponent(`
      const here = ${JSON.stringify(import.meta.url)};
      export async function resolve(specifier, context, next) {
        if (/^(@codemirror\\/|monaco-editor)/.test(specifier)) return next(specifier, { ...context, parentURL: here });
        return next(specifier, context);
      }`),
);
