// bench/tokenizer_diff.js OUT.tsv [N] - random multi-script strings and tiktoken's GPT-2 ids for
// them, for bench/tokenizer.c to compare against retrlm (a differential check of the
// pre-tokenizer's Unicode classes and of the merges). Lines: hex(UTF-8 text) TAB ids.
const fs = require('fs');
const { get_encoding } = require('tiktoken');

const enc = get_encoding('gpt2');
const n = Number(process.argv[3] || 20000);
let x = 2463534242; // xorshift32: every string differs (an LCG's low bits repeat quickly)
function rnd(k) {
  x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
  return x % k;
}
function cp(lo, span) { return () => String.fromCodePoint(lo + rnd(span)); }
const pieces = [
  () => String.fromCharCode(32 + rnd(95)), () => ' ', () => '  ', () => '\n', () => '\t',
  () => '\r\n', () => "'", () => "'s", () => "'ll", () => "'RE", () => String(rnd(100000)),
  () => 'the', () => ' the', () => 'Hello',
  cp(0xA0, 0x250),    // Latin-1, Latin extended
  cp(0x370, 0x500),   // Greek, Cyrillic, Armenian, Hebrew, Arabic
  cp(0x900, 0x800),   // Indic scripts, Thai
  cp(0x2000, 0x100),  // general punctuation, spaces, U+2028/9
  cp(0x3000, 0x100),  // CJK punctuation, kana
  cp(0x4E00, 0x5000), // CJK ideographs
  cp(0xFF00, 0xF0),   // fullwidth forms
  cp(0x1F300, 0x300), // emoji
  cp(0x10000, 0x20000), // supplementary planes, some unassigned
  cp(0xE000, 0x1900), // private use, CJK compatibility
  cp(0x1C, 4),        // FS GS RS US: spaces to Python, not White_Space
  () => '\u0085', () => '\u1680', () => '\u180E', () => '\u200B', () => '\u3000', () => '\uFEFF',
];
const out = [];
for (let i = 0; i < n; i++) {
  let t = '';
  for (let k = 1 + rnd(30); k > 0; k--) t += pieces[rnd(pieces.length)]();
  out.push(Buffer.from(t, 'utf8').toString('hex') + '\t' + Array.from(enc.encode(t)).join(' '));
}
fs.writeFileSync(process.argv[2], out.join('\n') + '\n');
enc.free();
