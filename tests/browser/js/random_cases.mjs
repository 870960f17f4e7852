// Prints random cases computed by collab/static/ot-text.js as JSON, for comparison with the
// Python module collab.ot (test_ot_text_js.py). Usage: node random_cases.mjs SEED COUNT
import * as ot from "../../../collab/static/ot-text.js";
import { seeded } from "./fake_server.mjs";

const rnd = seeded(Number(process.argv[2] ?? 1));
const count = Number(process.argv[3] ?? 500);
const pieces = ["a", "b", "é", "e\u0301", "😀", "👍🏽", " ", "\n", "中", "𝒳"];
const randStr = (n) => Array.from({ length: n }, () => pieces[rnd(pieces.length)]).join("");
function randOp(doc) {
  const len = ot.cpLength(doc);
  const op = [];
  let pos = 0;
  while (pos < len && rnd(5) < 4) {
    const n = 1 + rnd(Math.min(4, len - pos));
    const k = rnd(4);
    if (k === 0) op.push(n), (pos += n);
    else if (k === 1) op.push(randStr(1 + rnd(3)));
    else if (k === 2) op.push({ d: n }), (pos += n);
    else op.push({ d: ot.cpSlice(doc, pos, pos + n) }), (pos += n);
  }
  if (rnd(4) === 0) op.push(randStr(1 + rnd(2)));
  return ot.normalize(op);
}
const cases = [];
for (let i = 0; i < count; i++) {
  const doc = randStr(rnd(12));
  const a = randOp(doc);
  const b = randOp(doc);
  const side = rnd(2) ? "left" : "right";
  const after = ot.apply(doc, a);
  const c = randOp(after);
  const pos = rnd(ot.cpLength(doc) + 1);
  cases.push({
    doc, a, b, c, side, pos,
    apply: after,
    transform: ot.transform(a, b, side),
    compose: ot.compose(a, c),
    transformPosition: ot.transformPosition(pos, a),
  });
}
process.stdout.write(JSON.stringify(cases));
