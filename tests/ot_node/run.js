// Differential-test helper: runs a batch of cases through the real npm `ot-text-unicode`.
//
// Usage: node run.js <install-prefix>   (the folder `npm install --prefix` was run in)
// stdin:  JSON list of {"fn": "apply"|"transform"|"compose"|"normalize"|"transformPosition",
//                       "args": [...]}
// stdout: JSON list, one {"ok": result} or {"error": message} per case, in order.
'use strict';
const path = require('path');

const prefix = process.argv[2];
if (!prefix) {
  process.stderr.write('usage: node run.js <install-prefix>\n');
  process.exit(2);
}
const { type } = require(path.join(path.resolve(prefix), 'node_modules', 'ot-text-unicode'));

const functions = {
  apply: (doc, op) => type.apply(doc, op),
  transform: (op, other, side) => type.transform(op, other, side),
  compose: (a, b) => type.compose(a, b),
  normalize: (op) => type.normalize(op),
  transformPosition: (pos, op) => type.transformPosition(pos, op),
};

let input = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (chunk) => { input += chunk; });
process.stdin.on('end', () => {
  const cases = JSON.parse(input);
  const results = cases.map(({ fn, args }) => {
    // Fresh copies per call: the package mutates some of its inputs (normalize merges
    // deletes into the caller's component objects).
    const copied = JSON.parse(JSON.stringify(args));
    try {
      return { ok: functions[fn](...copied) };
    } catch (e) {
      return { error: String(e && e.message) };
    }
  });
  process.stdout.write(JSON.stringify(results));
});
