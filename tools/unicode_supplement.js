// tools/unicode_supplement.js UCD_DIR > tools/unicode_supplement.txt
// Letters and numbers that tiktoken's GPT-2 pattern (Rust regex, a newer Unicode than Debian 12's
// unicode-data 15.0) treats as \p{L} / \p{N} but UnicodeData.txt in UCD_DIR does not list.
// Candidates: code points node's own Unicode tables call L or N (and that UnicodeData.txt leaves
// out); each is kept only when tiktoken agrees: in "<c>'ll", "'ll" is a contraction (id 1183)
// exactly when <c> ends a letter or number run. Needs tiktoken on NODE_PATH (npm install tiktoken).
const fs = require('fs');
const { get_encoding } = require('tiktoken');
const enc = get_encoding('gpt2');
const ucd = fs.readFileSync(process.argv[2] + '/UnicodeData.txt', 'utf8').split('\n');
const known = new Uint8Array(0x110000);
let first = -1;
for (const line of ucd) {
  const f = line.split(';');
  if (f.length < 3) continue;
  const c = parseInt(f[0], 16);
  if (f[1].endsWith(', First>')) { first = c; continue; }
  const lo = f[1].endsWith(', Last>') ? first : c;
  if (/^[LN]/.test(f[2])) for (let k = lo; k <= c; k++) known[k] = 1;
}
const L = /^\p{L}$/u, N = /^\p{N}$/u;
const out = [];
let cur = null;
for (let c = 0; c < 0x110000; c++) {
  if (c >= 0xD800 && c <= 0xDFFF) continue;
  if (known[c]) continue;
  const s = String.fromCodePoint(c);
  const k = L.test(s) ? 'L' : N.test(s) ? 'N' : '';
  if (!k || !Array.from(enc.encode(s + "'ll")).includes(1183)) continue;
  if (cur && cur.hi === c - 1 && cur.k === k) cur.hi = c;
  else { cur = { lo: c, hi: c, k }; out.push(cur); }
}
const hex = c => c.toString(16).toUpperCase().padStart(4, '0');
console.log(`# code points tiktoken (GPT-2 pattern) treats as \\p{L} or \\p{N} beyond ${process.argv[2]}/UnicodeData.txt`);
console.log('# made by tools/unicode_supplement.js (node ' + process.versions.node + ', Unicode ' +
            process.versions.unicode + ' candidates, checked against tiktoken)');
for (const r of out) console.log(`${hex(r.lo)}..${hex(r.hi)};${r.k}`);
enc.free();
