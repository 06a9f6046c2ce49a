#!/usr/bin/env node
// A second, independent verifier of Pledgeflow event logs, written from
// docs/spec/event-log.md alone (Node 20 standard library only, no Pledgeflow code).
//
//   node verify.mjs archive DIR [--checkpoints FILE]... [--public-key PEM]...
//   node verify.mjs vectors DIR
//
// Exit 0: everything verifies; 1: a finding (the first bad event is named); 2: bad usage or
// an unreadable input. It checks integrity only (spec sections 2-7): canonical form, hashes,
// seq, links, the manifest's SHA-256s and counts, and signed checkpoints; the business rules
// are the Python auditor's.

import { createHash, createPublicKey, verify as edVerify } from 'node:crypto';
import { readFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';

const GENESIS = '0'.repeat(64);
const STREAMS = new Set(['campaign', 'settlement', 'notify']);
const ENVELOPE = ['campaign_id', 'causation_id', 'correlation_id', 'event_id', 'event_type',
  'hash', 'occurred_at', 'payload', 'prev_hash', 'schema_version', 'seq', 'stream'];
const HEX64 = /^[0-9a-f]{64}$/;
const TIMESTAMP = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
// Every event type's topic and stream (spec section 2.3): a stream is complete in an archive
// only if all of its types' topics were exported.
const EVENT_STREAMS = {
  CampaignLaunched: 'campaign', PledgeMade: 'campaign', PledgeRejected: 'campaign',
  PledgeCancelled: 'campaign', GoalReached: 'campaign', CampaignClosed: 'campaign',
  PledgeCaptured: 'settlement', PledgeCaptureFailed: 'settlement', PledgeReleased: 'settlement',
  PledgeRefunded: 'settlement', CampaignSettled: 'settlement',
  NotificationSent: 'notify', NotificationFailed: 'notify',
};

class Malformed extends Error {}

// --- JSON (spec 3): a strict parser keeping integers exact (BigInt) -------------------------

function parseJson(text) {
  let i = 0;
  const ws = () => { while (i < text.length && ' \t\n\r'.includes(text[i])) i++; };
  const fail = (what) => { throw new Malformed(`${what} at character ${i}`); };
  function value() {
    ws();
    const c = text[i];
    if (c === '{') return object();
    if (c === '[') return array();
    if (c === '"') return string();
    if (c === '-' || (c >= '0' && c <= '9')) return number();
    for (const [word, v] of [['true', true], ['false', false], ['null', null]]) {
      if (text.startsWith(word, i)) { i += word.length; return v; }
    }
    return fail('unexpected character');
  }
  function object() {
    i++;
    const out = new Map();
    ws();
    if (text[i] === '}') { i++; return out; }
    for (;;) {
      ws();
      if (text[i] !== '"') fail('expected a member name');
      const key = string();
      if (out.has(key)) fail(`duplicate member ${JSON.stringify(key)}`);
      ws();
      if (text[i++] !== ':') fail('expected ":"');
      out.set(key, value());
      ws();
      const c = text[i++];
      if (c === '}') return out;
      if (c !== ',') fail('expected "," or "}"');
    }
  }
  function array() {
    i++;
    const out = [];
    ws();
    if (text[i] === ']') { i++; return out; }
    for (;;) {
      out.push(value());
      ws();
      const c = text[i++];
      if (c === ']') return out;
      if (c !== ',') fail('expected "," or "]"');
    }
  }
  function string() {
    i++;
    let out = '';
    for (;;) {
      if (i >= text.length) fail('unterminated string');
      const c = text[i++];
      if (c === '"') break;
      if (c < ' ') fail('raw control character in a string');
      if (c !== '\\') { out += c; continue; }
      const e = text[i++];
      const simple = { '"': '"', '\\': '\\', '/': '/', b: '\b', f: '\f', n: '\n', r: '\r', t: '\t' };
      if (e in simple) out += simple[e];
      else if (e === 'u' && /^[0-9a-fA-F]{4}$/.test(text.slice(i, i + 4))) {
        out += String.fromCharCode(parseInt(text.slice(i, i + 4), 16));
        i += 4;
      } else fail('bad escape');
    }
    if (!out.isWellFormed()) fail('lone surrogate in a string');
    return out;
  }
  function number() {
    const m = /^-?(0|[1-9]\d*)([.eE])?/.exec(text.slice(i, i + 400));
    if (!m) fail('bad number');
    if (m[2]) fail('non-integer number (spec 3.4: integers only)');
    i += m[0].length;
    return BigInt(m[0]);
  }
  const result = value();
  ws();
  if (i !== text.length) fail('trailing characters');
  return result;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });
function parseBytes(bytes) {
  let text;
  try { text = utf8.decode(bytes); } catch { throw new Malformed('not UTF-8'); }
  return parseJson(text);
}

// --- canonical form (spec 3) ----------------------------------------------------------------

const byCodePoint = (a, b) => Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));

function canonicalString(s) {
  let out = '"';
  for (const ch of s) {
    const code = ch.codePointAt(0);
    if (ch === '"') out += '\\"';
    else if (ch === '\\') out += '\\\\';
    else if (ch === '\b') out += '\\b';
    else if (ch === '\f') out += '\\f';
    else if (ch === '\n') out += '\\n';
    else if (ch === '\r') out += '\\r';
    else if (ch === '\t') out += '\\t';
    else if (code < 0x20) out += '\\u' + code.toString(16).padStart(4, '0');
    else out += ch;
  }
  return out + '"';
}

function canonical(v) {
  if (v === null) return 'null';
  if (v === true) return 'true';
  if (v === false) return 'false';
  if (typeof v === 'bigint') return v.toString();
  if (typeof v === 'string') return canonicalString(v);
  if (Array.isArray(v)) return '[' + v.map(canonical).join(',') + ']';
  if (v instanceof Map) {
    const keys = [...v.keys()].sort(byCodePoint);
    return '{' + keys.map((k) => canonicalString(k) + ':' + canonical(v.get(k))).join(',') + '}';
  }
  throw new Malformed(`cannot encode ${typeof v}`);
}

const sha256hex = (...parts) => {
  const h = createHash('sha256');
  for (const p of parts) h.update(p);
  return h.digest('hex');
};

// --- events (spec 2, 4, 5) ------------------------------------------------------------------

function checkEnvelope(ev) {
  if (!(ev instanceof Map)) throw new Malformed('not a JSON object');
  for (const name of ENVELOPE) if (!ev.has(name)) throw new Malformed(`${name}: missing`);
  for (const name of ev.keys()) if (!ENVELOPE.includes(name)) throw new Malformed(`${name}: unknown member`);
  const str = (n) => { if (typeof ev.get(n) !== 'string') throw new Malformed(`${n}: not a string`); };
  ['campaign_id', 'causation_id', 'correlation_id', 'event_id', 'event_type', 'occurred_at',
    'prev_hash', 'hash', 'stream'].forEach(str);
  for (const n of ['seq', 'schema_version']) {
    if (typeof ev.get(n) !== 'bigint' || ev.get(n) < 1n) throw new Malformed(`${n}: not an integer >= 1`);
  }
  if (!(ev.get('payload') instanceof Map)) throw new Malformed('payload: not an object');
  if (!STREAMS.has(ev.get('stream'))) throw new Malformed('stream: unknown');
  if (!HEX64.test(ev.get('hash')) || !HEX64.test(ev.get('prev_hash'))) throw new Malformed('hash/prev_hash: not 64 lowercase hex');
  if (!TIMESTAMP.test(ev.get('occurred_at'))) throw new Malformed('occurred_at: not YYYY-MM-DDTHH:MM:SS.ffffffZ');
  if (!UUID.test(ev.get('event_id'))) throw new Malformed('event_id: not a lowercase UUID');
  const id = ev.get('campaign_id');
  if (id.length < 1 || [...id].length > 200) throw new Malformed('campaign_id: length not 1..200');
}

function eventHash(ev) {
  const body = new Map([...ev].filter(([k]) => k !== 'hash'));
  return sha256hex(Buffer.from(ev.get('prev_hash'), 'ascii'), Buffer.from(canonical(body), 'utf8'));
}

// Verifies lines in stored order; each chain (campaign, stream) must run 1, 2, 3... from the
// genesis hash. Returns null or {index, reason, detail, event}.
class ChainChecker {
  constructor() { this.heads = new Map(); this.count = 0; }
  check(bytes, index) {
    let ev;
    try {
      ev = parseBytes(bytes);
      checkEnvelope(ev);
    } catch (err) {
      if (!(err instanceof Malformed)) throw err;
      return { index, reason: 'malformed', detail: err.message, event: ev instanceof Map ? ev : null };
    }
    const key = JSON.stringify([ev.get('campaign_id'), ev.get('stream')]);
    const seq = ev.get('seq');
    if (eventHash(ev) !== ev.get('hash')) {
      return { index, reason: 'hash_mismatch', detail: `seq ${seq}: hash does not match the event's content`, event: ev };
    }
    const head = this.heads.get(key);
    const [wantSeq, wantPrev] = head ? [head.seq + 1n, head.hash] : [1n, GENESIS];
    if (seq !== wantSeq) {
      return { index, reason: 'seq_gap', detail: `seq ${seq} where ${wantSeq} was expected`, event: ev };
    }
    if (ev.get('prev_hash') !== wantPrev) {
      return { index, reason: 'prev_hash_mismatch', detail: `seq ${seq}: prev_hash is not the previous event's hash${head ? '' : ' (genesis)'}`, event: ev };
    }
    this.heads.set(key, { seq, hash: ev.get('hash') });
    this.count++;
    return null;
  }
}

// --- checkpoints (spec 7) -------------------------------------------------------------------

function loadKeys(paths) {
  const keys = new Map();
  for (const path of paths) {
    const key = createPublicKey(readFileSync(path));
    if (key.asymmetricKeyType !== 'ed25519') throw new Error(`${path}: not an Ed25519 public key`);
    const raw = key.export({ format: 'der', type: 'spki' }).subarray(-32);
    keys.set(sha256hex(raw).slice(0, 16), key);
  }
  return keys;
}

function parseCheckpoint(text) {
  const cp = parseJson(text);
  const need = ['chains', 'format', 'key_id', 'made_at', 'reason', 'signature', 'tenant_id', 'version'];
  if (!(cp instanceof Map) || cp.get('format') !== 'pledgeflow-checkpoint' || cp.get('version') !== 1n) {
    throw new Malformed('not a pledgeflow-checkpoint version 1');
  }
  for (const n of need) if (!cp.has(n)) throw new Malformed(`${n}: missing`);
  const signed = new Map([...cp].filter(([k]) => k !== 'signature'));
  const message = Buffer.from(canonical(signed), 'utf8');
  return {
    cp, message,
    id: sha256hex(message).slice(0, 16),
    chains: cp.get('chains').map((c) => [c.get('campaign_id'), c.get('stream'), c.get('seq'), c.get('hash')]),
  };
}

function checkSignature({ cp, message }, keys) {
  const key = keys.get(cp.get('key_id'));
  if (!key) return `signed with key ${cp.get('key_id')}, which is not among the given public keys`;
  const sig = Buffer.from(cp.get('signature'), 'base64');
  return sig.length === 64 && edVerify(null, message, key, sig) ? null : `signature does not verify with key ${cp.get('key_id')}`;
}

const describe = ({ cp, id }) => `checkpoint ${id} (tenant '${cp.get('tenant_id')}', made ${cp.get('made_at')})`;

// --- archive (spec 6) -----------------------------------------------------------------------

function verifyArchive(dir, checkpointFiles, keyFiles) {
  const findings = [];
  const manifestPath = join(dir, 'manifest.json');
  if (!existsSync(manifestPath)) usage(`${dir}: no manifest.json`);
  const manifest = parseBytes(readFileSync(manifestPath));
  const m = (k) => manifest.get(k);
  if (m('format') !== 'pledgeflow-audit-archive' || m('version') !== 1n) usage(`${manifestPath}: not a version 1 archive`);
  const checker = new ChainChecker();
  const stored = new Map(); // "cid\0stream\0seq" -> hash, for checkpoints
  let total = 0n;
  let firstBad = null;
  for (const seg of m('segments')) {
    const name = seg.get('name');
    const data = readFileSync(join(dir, name));
    if (sha256hex(data) !== seg.get('sha256')) findings.push(`segment ${name}: SHA-256 differs from the manifest`);
    const idxData = readFileSync(join(dir, seg.get('index')));
    if (sha256hex(idxData) !== seg.get('index_sha256')) findings.push(`index ${seg.get('index')}: SHA-256 differs from the manifest`);
    const lines = splitLines(gunzipSync(data));
    const index = splitLines(gunzipSync(idxData)).map((l) => l.toString('utf8').split('\t'));
    if (BigInt(lines.length) !== seg.get('events')) findings.push(`segment ${name}: ${lines.length} lines, the manifest says ${seg.get('events')}`);
    total += BigInt(lines.length);
    lines.forEach((line, n) => {
      const bad = checker.check(line, n);
      if (bad) {
        if (!firstBad) firstBad = { ...bad, segment: name, origin: index[n] };
        return;
      }
      const ev = parseBytes(line);
      stored.set([ev.get('campaign_id'), ev.get('stream'), ev.get('seq')].join('\0'), ev.get('hash'));
    });
  }
  if (total !== m('counts').get('events')) findings.push(`manifest: counts.events is ${m('counts').get('events')}, the segments hold ${total}`);
  for (const [chain, seq] of m('chain_heads')) {
    const [stream, cid] = [chain.slice(0, chain.indexOf(' ')), chain.slice(chain.indexOf(' ') + 1)];
    const head = checker.heads.get(JSON.stringify([cid, stream]));
    if (!firstBad && (!head || head.seq !== seq)) findings.push(`manifest: chain_heads says ${chain} ends at ${seq}, the segments at ${head ? head.seq : 'nothing'}`);
  }
  const cpInfo = m('checkpoints');
  if (cpInfo instanceof Map) {
    const data = readFileSync(join(dir, cpInfo.get('file')));
    if (sha256hex(data) !== cpInfo.get('sha256')) findings.push(`${cpInfo.get('file')}: SHA-256 differs from the manifest`);
  }
  if (firstBad) {
    const ev = firstBad.event;
    const who = ev ? `event ${ev.get('event_id')} campaign ${ev.get('campaign_id')} stream ${ev.get('stream')} seq ${ev.get('seq')}` : 'unreadable event';
    const origin = firstBad.origin ? ` (topic ${firstBad.origin[0]} offset ${firstBad.origin[1]})` : '';
    findings.unshift(`first bad event: ${firstBad.segment} line ${firstBad.index + 1}${origin}: ${who}: ${firstBad.reason}: ${firstBad.detail}`);
  }
  let signedHeads = 0;
  if (checkpointFiles.length) {
    const keys = loadKeys(keyFiles);
    const topics = new Set(m('topics'));
    const complete = new Set(Object.values(EVENT_STREAMS));
    for (const [type, stream] of Object.entries(EVENT_STREAMS)) if (!topics.has(m('topic_prefix') + type)) complete.delete(stream);
    for (const file of checkpointFiles) {
      for (const text of readFileSync(file, 'utf8').split('\n').filter((l) => l.trim())) {
        const cp = parseCheckpoint(text);
        const bad = checkSignature(cp, keys);
        if (bad) { findings.push(`${describe(cp)}: ${bad}`); continue; }
        if (m('tenant') !== null && cp.cp.get('tenant_id') !== m('tenant')) continue;
        for (const [cid, stream, seq, hash] of cp.chains) {
          if ((m('campaign') !== null && cid !== m('campaign')) || !complete.has(stream)) continue;
          signedHeads++;
          const have = stored.get([cid, stream, seq].join('\0'));
          if (have === hash) continue;
          const where = `campaign '${cid}' stream '${stream}'`;
          const head = checker.heads.get(JSON.stringify([cid, stream]));
          const held = have ? `hash ${have.slice(0, 16)}… there (history rewritten)` : head ? `the chain ends at ${head.seq}` : 'no event of that chain';
          findings.push(`${describe(cp)}: ${where}: signed seq ${seq} hash ${hash.slice(0, 16)}…, the archive has ${held}`);
        }
      }
    }
  }
  return { findings, events: checker.count, chains: checker.heads.size, signedHeads };
}

function splitLines(buf) {
  const lines = [];
  let start = 0;
  for (let i = buf.indexOf(10); i !== -1; i = buf.indexOf(10, start)) {
    lines.push(buf.subarray(start, i));
    start = i + 1;
  }
  if (start < buf.length) lines.push(buf.subarray(start));
  return lines;
}

// --- vectors (spec 8) -----------------------------------------------------------------------

function verifyVectors(dir) {
  const findings = [];
  const load = (name) => JSON.parse(readFileSync(join(dir, name), 'utf8'));
  let checked = 0;
  for (const c of load('canonical.json')) {
    checked++;
    const got = canonical(parseJson(c.input));
    if (got !== c.canonical) findings.push(`canonical "${c.name}": got ${got}`);
  }
  for (const v of load('events.json')) {
    checked++;
    // The body is given as JSON text in another key order: parse it with our parser.
    const body = parseJson(JSON.stringify(v.body));
    const text = canonical(body);
    if (text !== v.canonical_body) findings.push(`event "${v.name}": canonical body differs`);
    const hash = sha256hex(Buffer.from(v.prev_hash, 'ascii'), Buffer.from(text, 'utf8'));
    if (hash !== v.hash) findings.push(`event "${v.name}": hash ${hash}, expected ${v.hash}`);
    const line = new Map([...body, ['hash', v.hash]]);
    if (canonical(line) !== v.line) findings.push(`event "${v.name}": line differs`);
  }
  const chain = splitLines(readFileSync(join(dir, 'chain.jsonl')));
  const checker = new ChainChecker();
  chain.forEach((line, n) => {
    const bad = checker.check(line, n);
    if (bad) findings.push(`chain.jsonl line ${n + 1}: ${bad.reason}: ${bad.detail}`);
  });
  checked++;
  for (const c of load('bad-chains.json')) {
    checked++;
    const k = new ChainChecker();
    let bad = null;
    for (let n = 0; n < c.lines.length && !bad; n++) bad = k.check(Buffer.from(c.lines[n], 'utf8'), n);
    if (!bad || bad.index !== c.fails_at || bad.reason !== c.reason) {
      findings.push(`bad chain "${c.name}": expected ${c.reason} at ${c.fails_at}, got ${bad ? `${bad.reason} at ${bad.index}` : 'no failure'}`);
    }
  }
  const v = load('checkpoint.json');
  const cp = parseCheckpoint(v.line);
  const keys = loadKeys([join(dir, 'checkpoint-test-key.pub.pem')]);
  checked++;
  if (!keys.has(v.key_id)) findings.push('checkpoint: key id of the public key differs');
  const bad = checkSignature(cp, keys);
  if (bad) findings.push(`checkpoint: ${bad}`);
  if (cp.message.toString('utf8') !== v.signed_message) findings.push('checkpoint: signed message differs');
  if (cp.id !== v.checkpoint_id) findings.push('checkpoint: id differs');
  for (const [cid, stream, seq, hash] of cp.chains) {
    const head = checker.heads.get(JSON.stringify([cid, stream]));
    if (!head || head.seq !== seq || head.hash !== hash) findings.push(`checkpoint: head of ${cid}/${stream} differs from chain.jsonl`);
  }
  return { findings, checked };
}

// --- command line ---------------------------------------------------------------------------

function usage(message) {
  process.stderr.write(`error: ${message}\n`);
  process.exit(2);
}

function main(argv) {
  const [mode, dir, ...rest] = argv;
  if (!mode || !dir || !['archive', 'vectors'].includes(mode)) usage('usage: verify.mjs archive DIR [--checkpoints FILE --public-key PEM] | vectors DIR');
  const checkpoints = [];
  const keys = [];
  for (let i = 0; i < rest.length; i += 2) {
    if (rest[i] === '--checkpoints' && rest[i + 1]) checkpoints.push(rest[i + 1]);
    else if (rest[i] === '--public-key' && rest[i + 1]) keys.push(rest[i + 1]);
    else usage(`${rest[i]}: unknown option or missing value`);
  }
  if ((checkpoints.length === 0) !== (keys.length === 0)) usage('--checkpoints/--public-key: give both');
  let result;
  try {
    result = mode === 'vectors' ? verifyVectors(dir) : verifyArchive(dir, checkpoints, keys);
  } catch (err) {
    if (err instanceof Malformed || err.code === 'ENOENT' || err.code === 'Z_DATA_ERROR') usage(`${dir}: ${err.message}`);
    throw err;
  }
  for (const f of result.findings) process.stderr.write(`FAIL ${f}\n`);
  if (!result.findings.length) {
    process.stderr.write(mode === 'vectors'
      ? `OK: ${result.checked} vectors\n`
      : `OK: ${result.events} events in ${result.chains} chains` + (checkpoints.length ? `; extends ${result.signedHeads} signed chain heads\n` : '\n'));
  }
  process.exit(result.findings.length ? 1 : 0);
}

main(process.argv.slice(2));
