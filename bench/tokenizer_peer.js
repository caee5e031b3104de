// bench/tokenizer_peer.js VERSES_TSV [RUNS] - tiktoken's GPT-2 encode throughput on the KJV,
// run by bench/tokenizer.c. Prints name=value lines (MB = 10^6 bytes). Needs the npm package
// tiktoken on NODE_PATH (bench/tokenizer.c installs it into build/npm).
const fs = require('fs');
const path = require('path');
const { get_encoding } = require('tiktoken');

const runs = Number(process.argv[3] || 5);
const lines = fs.readFileSync(process.argv[2], 'utf8').split('\n');
const verses = [];
for (let i = 1; i < lines.length; i++) {
  if (lines[i] === '') continue;
  verses.push(lines[i].split('\t')[3]); // book, chapter, verse, text (no escapes in the KJV)
}
const text = verses.map(v => v + '\n').join('');
const bytes = Buffer.byteLength(text, 'utf8');
const enc = get_encoding('gpt2');

function median(xs) { const s = xs.slice().sort((a, b) => a - b); return s[(s.length - 1) >> 1]; }
function time(fn) {
  fn(); // warm-up
  const t = [];
  for (let r = 0; r < runs; r++) {
    const t0 = process.hrtime.bigint();
    fn();
    t.push(Number(process.hrtime.bigint() - t0) / 1e9);
  }
  return median(t);
}

let count = 0;
const whole = time(() => { count = enc.encode(text).length; });
const perVerse = time(() => { for (const v of verses) enc.encode(v + '\n'); });
const pkg = path.join(path.dirname(require.resolve('tiktoken')), 'package.json');
console.log(`tiktoken_version=${JSON.parse(fs.readFileSync(pkg, 'utf8')).version}`);
console.log(`tiktoken_kjv_tokens=${count}`);
console.log(`tiktoken_whole_mbps=${(bytes / 1e6 / whole).toFixed(2)}`);
console.log(`tiktoken_per_verse_mbps=${(bytes / 1e6 / perVerse).toFixed(2)}`);
enc.free();
