// Regenerates ot_golden.json from the reference implementation, npm `ot-text-unicode` v4:
//   npm install --prefix /tmp/otref ot-text-unicode@4
//   OT_TEXT_UNICODE=/tmp/otref/node_modules/ot-text-unicode node tests/browser/js/make_golden.mjs
// The cases are seeded, so the file only changes when this script does.
import { createRequire } from "node:module";
import { writeFileSync } from "node:fs";

const refPath = process.env.OT_TEXT_UNICODE;
if (!refPath) throw new Error("set OT_TEXT_UNICODE to the ot-text-unicode package folder");
const ref = createRequire(import.meta.url)(refPath).type;

let seed = 20261129;
const rnd = (n) => {
  seed = (seed * 1103515245 + 12345) % 2147483648;
  return Math.floor((seed / 2147483648) * n);
};
const alphabet = ["a", "b", "c", "é", "e\u0301", "😀", "👍🏽", " ", "\n", "ß", "𝒳", "中"];
const randStr = (n) => Array.from({ length: n }, () => alphabet[rnd(alphabet.length)]).join("");
const cpLen = (s) => Array.from(s).length;
const cpSlice = (s, a, b) => Array.from(s).slice(a, b).join("");
const clone = (x) => JSON.parse(JSON.stringify(x));

function randOp(doc, invertible) {
  const len = cpLen(doc);
  const op = [];
  let pos = 0;
  while (pos < len && rnd(10) < 8) {
    const r = rnd(3);
    if (r === 0) {
      const n = 1 + rnd(Math.min(4, len - pos));
      op.push(n);
      pos += n;
    } else if (r === 1) {
      op.push(randStr(1 + rnd(3)));
    } else {
      const n = 1 + rnd(Math.min(4, len - pos));
      op.push({ d: invertible ? cpSlice(doc, pos, pos + n) : n });
      pos += n;
    }
  }
  if (rnd(10) < 3) op.push(randStr(1 + rnd(2)));
  return ref.normalize(op);
}

const out = { apply: [], transform: [], compose: [], transformPosition: [], normalize: [] };

// Hand-picked cases first: ties, overlapping deletes, astral characters, combining marks.
const manual = [
  ["abc", ["x"], ["y"]],
  ["abc", [1, "x"], [1, "y"]],
  ["abc", [1, { d: 1 }], [1, { d: 2 }]],
  ["abc", [{ d: 3 }], [1, "x"]],
  ["h😀llo", [1, { d: "😀" }, "e"], [2, "👍🏽"]],
  ["he\u0301llo", [3, "!"], [1, { d: 2 }]],
  ["😀😀😀", [1, "a"], [2, "b"]],
  ["", ["héllo 😀 wörld"], ["x"]],
];
const cases = [];
for (const [doc, a, b] of manual) cases.push([doc, a, b]);
for (let i = 0; i < 160; i++) {
  const doc = randStr(rnd(10));
  cases.push([doc, randOp(doc, rnd(2) === 0), randOp(doc, rnd(2) === 0)]);
}
for (const [doc, a, b] of cases) {
  out.apply.push({ doc, op: a, result: ref.apply(doc, clone(a)) });
  for (const side of ["left", "right"]) {
    out.transform.push({ op: a, other: b, side, result: ref.transform(clone(a), clone(b), side) });
  }
  const docA = ref.apply(doc, clone(a));
  const c = randOp(docA, rnd(2) === 0);
  out.compose.push({ a, b: c, result: ref.compose(clone(a), clone(c)) });
  for (let pos = 0; pos <= cpLen(doc); pos += 1 + rnd(3)) {
    out.transformPosition.push({ pos, op: a, result: ref.transformPosition(pos, clone(a)) });
  }
}
for (let i = 0; i < 40; i++) {
  const raw = [rnd(3), randStr(rnd(2)), randStr(rnd(2)), { d: rnd(3) }, { d: rnd(2) }, rnd(3), rnd(3)];
  out.normalize.push({ op: raw, result: ref.normalize(clone(raw)) });
}
// Mergeable neighbours without empty components (inputs every implementation must accept).
for (let i = 0; i < 40; i++) {
  const parts = [
    () => 1 + rnd(3),
    () => randStr(1 + rnd(2)),
    () => ({ d: 1 + rnd(3) }),
    () => ({ d: randStr(1 + rnd(2)) }),
  ];
  const raw = Array.from({ length: 2 + rnd(6) }, () => parts[rnd(parts.length)]());
  out.normalize.push({ op: raw, result: ref.normalize(clone(raw)) });
}
const target = new URL("./ot_golden.json", import.meta.url);
writeFileSync(target, JSON.stringify(out, null, 0).replace(/\},\{/g, "},\n{") + "\n");
console.log("wrote", target.pathname);
