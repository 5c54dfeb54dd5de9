// Writes BENCHMARKS.md from the raw results of one .ci/bench.sh run, and the numbers the chart
// draws. Pure bookkeeping: every figure comes from a file in the results directory.
//
//   node tests/bench/report.mjs RESULTS_DIR OUT.md CHART.json
//
// RESULTS_DIR holds: meta.env (KEY=value lines); r<round>-<scenario>.json (`flashgate load --json`
// reports) with .stats0.json/.stats1.json (the worker's GET /api/stats before and after) for
// runs against flashgate; crowd-1/crowd-2 likewise and crowd-status.json; rb<round>-<seed|purchase|callsonly|seedso|purchaseso>.rps
// (redis-benchmark requests/s); rb-<seed|purchase>-sold; sink-<db>.json; sim-<isolates>-<off|on>.json
// (`flashgate simulate --json` reports); sim-<long|fair>-<attempt|line>.json (the line, sections
// 7b and 7c, tests/bench/line.mjs); ack<round>-<0|1>.json and sink-ack<round>-<0|1>.json
// (section 8, tests/bench/acks.mjs).
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { acks } from './acks.mjs';
import { line } from './line.mjs';

const [dir, outPath, chartPath] = process.argv.slice(2);
if (!dir || !outPath || !chartPath) {
  console.error('usage: node report.mjs RESULTS_DIR OUT.md CHART.json');
  process.exit(2);
}

const read = (name) => readFileSync(join(dir, name), 'utf8');
const json = (name) => JSON.parse(read(name));
const meta = Object.fromEntries(read('meta.env').split('\n').filter((l) => l.includes('=')).map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
const num = (k) => Number(meta[k]);
const smoke = meta.smoke === '1';
const rounds = num('rounds');

// ------------------------------------------------------------------ helpers
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const n = s.length;
  return n === 0 ? NaN : n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
};
const sum = (xs) => xs.reduce((a, b) => a + b, 0);
const int = (x) => (Number.isFinite(x) ? Math.round(x).toLocaleString('en-US') : 'n/a');
const fix = (x, d = 2) => (Number.isFinite(x) ? x.toFixed(d) : 'n/a');
const pct = (x, d = 2) => (Number.isFinite(x) ? `${(x * 100).toFixed(d)} %` : 'n/a');
const times = (x) => (Number.isFinite(x) ? `${x.toFixed(2)}×` : 'n/a');
const kib = (b) => `${(b / 1024).toFixed(0)} KiB`;
const goal = (ok) => (ok ? 'met' : '**missed**');
const plural = (n, one, many = `${one}s`) => `${int(n)} ${n === 1 ? one : many}`;
/** A Markdown table; `align` has one letter per column, l or r. */
const table = (head, rows, align = 'l'.repeat(head.length)) =>
  [`| ${head.join(' | ')} |`, `|${[...align].map((a) => (a === 'r' ? '---:' : '---')).join('|')}|`, ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n');

/** One scenario over all rounds. */
function scenario(name, expected, withStats = true) {
  const runs = [];
  for (let r = 1; r <= rounds; r++) {
    const f = `r${r}-${name}.json`;
    if (!existsSync(join(dir, f))) continue;
    const rep = json(f);
    const run = { rep, rps: rep.throughput_rps };
    if (withStats) {
      const [a, b] = [json(`r${r}-${name}.stats0.json`), json(`r${r}-${name}.stats1.json`)];
      run.views = b.view_reads - a.view_reads;
      run.forwarded = b.forwarded - a.forwarded;
      run.edge = b.edge_rejected - a.edge_rejected;
    }
    runs.push(run);
  }
  if (runs.length === 0) return null;
  const requests = sum(runs.map((r) => r.rep.requests));
  const hits = sum(runs.map((r) => r.rep.codes[expected] ?? 0));
  const origin = runs.every((r) => r.rep.origin);
  const cmds = origin ? sum(runs.map((r) => r.rep.origin.commands)) : NaN;
  return {
    name, expected, runs, requests,
    status: Object.keys(runs[0].rep.statuses).join('/'),
    share: hits / requests,
    others: mergeCodes(runs.map((r) => r.rep.codes), expected),
    rps: median(runs.map((r) => r.rps)),
    p50: median(runs.map((r) => r.rep.latency.p50_ms)),
    p99: median(runs.map((r) => r.rep.latency.p99_ms)),
    cmds,
    evalsha: origin ? sum(runs.map((r) => r.rep.origin.evalsha)) : NaN,
    views: sum(runs.map((r) => r.views ?? 0)),
    forwarded: sum(runs.map((r) => r.forwarded ?? 0)),
    edge: sum(runs.map((r) => r.edge ?? 0)),
  };
}
function mergeCodes(list, except) {
  const m = {};
  for (const codes of list) for (const [k, n] of Object.entries(codes)) if (k !== except) m[k] = (m[k] ?? 0) + n;
  return Object.entries(m).map(([k, n]) => `${k} ${n}`).join(', ');
}

// ------------------------------------------------------------------ 1+2. edge throughput, origin commands
const empty = scenario('empty', 'ok', false);
const emptyLog = scenario('empty_log', 'ok', false);
if (emptyLog) emptyLog.ratio = emptyLog.rps / empty.rps;
// The empty worker behind an [assets] router (the one-worker deployment flashgate left): what
// the asset router alone would cost every API request.
const emptyAssets = scenario('empty_assets', 'ok', false);
if (emptyAssets) emptyAssets.ratio = emptyAssets.rps / empty.rps;
const edgeNames = [
  ['not_started', 'not_started', 'event created with a start tomorrow'],
  ['sold_out', 'sold_out', 'its only unit sold before the run'],
  ['capped', 'item_limit_reached', 'users who each bought their 1 unit/day of the item'],
];
const edge = edgeNames.map(([name, code, setup]) => ({ ...scenario(name, code), setup }));
const fwd = { ...scenario('forwarded', 'placed'), setup: 'a live event, every attempt a new user buying 1 unit' };
for (const s of [...edge, fwd]) {
  s.ratio = empty ? s.rps / empty.rps : NaN;
  s.ratioLog = emptyLog ? s.rps / emptyLog.rps : NaN;
  s.ratioAssets = emptyAssets ? s.rps / emptyAssets.rps : NaN;
}

// Exact top-level commands per scenario from MONITOR (section TAB command TAB count).
const mon = {};
for (const line of read('monitor.tsv').split('\n').filter(Boolean)) {
  const [section, cmd, n] = line.split('\t');
  (mon[section] ??= {})[cmd] = Number(n);
}
const monitored = [
  ['forwarded', 'bench-mon, every attempt a new user buying 1 unit', 'placed', num('mon_requests')],
  ['capped', 'bench-mon again, the same users', 'item_limit_reached', num('mon_edge_requests')],
  ['not_started', 'bench-ns', 'not_started', num('mon_edge_requests')],
  ['sold_out', 'bench-so', 'sold_out', num('mon_edge_requests')],
].map(([name, setup, expected, attempts]) => {
  const m = mon[name] ?? {};
  const rep = json(`mon-${name}.json`);
  const top = Object.entries(m).filter(([c]) => c !== 'lua');
  const views = m['EVALSHA view.lua'] ?? 0;
  const ownTop = sum(top.map(([, n]) => n)) - views;
  return {
    name, setup, expected, attempts,
    share: (rep.codes[expected] ?? 0) / rep.requests,
    top: top.map(([c, n]) => `${c} ${n}`).join(', ') || 'none',
    views, lua: m.lua ?? 0, ownTop,
    perAttempt: ownTop / attempts,
  };
});
const monFwd = monitored[0];
const monEdge = monitored.slice(1);
const fwdPerAttempt = monFwd.perAttempt;
const edgePerReject = sum(monEdge.map((s) => s.ownTop)) / sum(monEdge.map((s) => s.attempts));
const fwdServerCmds = fwd.cmds / fwd.forwarded;

// ------------------------------------------------------------------ 3. flash crowd
const phase = (n) => {
  const rep = json(`crowd-${n}.json`);
  const [a, b] = [json(`crowd-${n}.stats0.json`), json(`crowd-${n}.stats1.json`)];
  const o = rep.origin ?? { evalsha: NaN, commands: NaN };
  return {
    rep,
    views: b.view_reads - a.view_reads,
    forwarded: b.forwarded - a.forwarded,
    evalsha: o.evalsha,
    cmds: o.commands,
    share: o.evalsha / rep.requests,
    purchaseShare: (b.forwarded - a.forwarded) / rep.requests,
  };
};
const crowd = [phase(1), phase(2)];
const crowdStatus = json('crowd-status.json');
const crowdItem = crowdStatus.items[0];
const crowdPlaced = sum(crowd.map((p) => p.rep.codes.placed ?? 0));
const crowdDemand = sum(crowd.map((p) => p.rep.requests));

// ------------------------------------------------------------------ 4. redis-benchmark
const rbRounds = num('rb_rounds');
const rbList = (kind) => Array.from({ length: rbRounds }, (_, i) => Number(read(`rb${i + 1}-${kind}.rps`).trim()));
const seedRps = rbList('seed');
const purchaseRps = rbList('purchase');
const rbRatio = median(purchaseRps) / median(seedRps);
const callsOnlyRps = rbList('callsonly');
const callsOnlyRatio = median(callsOnlyRps) / median(seedRps);
// The sold-out path: a fresh attempt for a sold-out item against the seed's sold-out path.
const seedSoRps = rbList('seedso');
const purchaseSoRps = rbList('purchaseso');
const rbSoRatio = median(purchaseSoRps) / median(seedSoRps);
const rbCalls = rbRounds * num('rb_requests');
const purchaseOk = Number(read('rb-purchase-sold').trim()) / rbCalls;
const seedOk = Number(read('rb-seed-sold').trim()) / rbCalls;

// ------------------------------------------------------------------ 6. the fleet simulator
// The Done-when of the simulator's runs: origin attempts ≤ 1.2× budget in every second (admission
// on), origin p99 in every second of the sale ≤ 3× the idle p99, sold = stock and none oversold,
// the sellout within 1.5 × stock ÷ budget plus one refresh interval, and no purchase of the
// sold-out item forwarded later than 2 refresh intervals after the sellout.
const simIsolates = (meta.sim_isolates ?? '').split(' ').filter(Boolean).map(Number);
const sim = simIsolates.flatMap((n) => ['off', 'on'].map((adm) => {
  const r = json(`sim-${n}-${adm}.json`);
  const secs = r.per_second;
  const attempts = secs.map((x) => x.origin_attempts);
  const p99s = secs.map((x) => x.origin_p99_ms);
  const refresh = r.edge_cache_ms;
  return {
    r, n, adm,
    name: `${plural(n, 'isolate')}, admission ${adm}`,
    maxAttempts: Math.max(...attempts),
    overSeconds: attempts.filter((a) => a > 1.2 * r.budget).length,
    worstP99: Math.max(...p99s),
    p99Ratio: Math.max(...p99s) / r.idle_p99_ms,
    saleRatio: r.sale_p99_ms / r.idle_p99_ms,
    selloutLimit: 1.5 * (r.stock / r.budget) * 1000 + refresh,
    forwardLimit: 2 * refresh,
    forwardingSeconds: secs.filter((x) => (x.forwarding_isolates_after_sellout ?? 0) > 0).length,
    maxForwarding: Math.max(0, ...secs.map((x) => x.forwarding_isolates_after_sellout ?? 0)),
  };
}));
const simGoals = (s) => ({
  budget: s.overSeconds === 0,
  p99: s.p99Ratio <= 3,
  sold: s.r.sold === s.r.stock && s.r.oversold === 0,
  sellout: s.r.sellout_ms !== null && s.r.sellout_ms <= s.selloutLimit,
  forwarding: (s.r.last_forward_after_sellout_ms ?? 0) <= s.forwardLimit,
});
const simTop = Math.max(0, ...simIsolates);
const simOn = sim.find((s) => s.n === simTop && s.adm === 'on');
const simOff = sim.find((s) => s.n === simTop && s.adm === 'off');

// ------------------------------------------------------------------ 7b, 7c. the line
// A long sale and a mixed crowd, fairness = attempt and line; null in a results directory without them.
const lineSection = line(dir);

// ------------------------------------------------------------------ 8. replicated acknowledgements
const ackSection = acks(dir, meta);

// ------------------------------------------------------------------ the document
const roundsNote = rounds > 1 ? `median of ${rounds} interleaved rounds` : 'one round';
const noBaseline = 'n/a (smoke run: no baseline)';
const md = [];
md.push(`# flashgate benchmarks

Measured by \`make bench\` (\`.ci/bench.sh\`) on ${meta.date}, commit ${meta.commit}${smoke ? ' — **SMOKE RUN: tiny counts, the numbers mean nothing**' : ''}.
Machine: ${meta.cpu}, **${meta.cores} cores**, ${meta.mem_gb} GB RAM, ${meta.os}. Software: redis-server ${meta.redis}, wrangler ${meta.wrangler} (local workerd), Node ${meta.node}, rustc ${meta.rustc}; load from \`flashgate load\` (${meta.cli} build).

Everything ran at once on this one machine: the load generator, \`wrangler dev\` (workerd) and redis-server share the ${meta.cores} cores, so absolute numbers are far below what Cloudflare's edge serves. What carries over is each figure set against its baseline, measured in the same run: the empty worker on the same workerd for throughput, the minimal seed script on the same redis-server for the Lua cost, the request count for origin traffic. The worker ran with its default settings (\`EDGE_CACHE_MS\` ${meta.edge_cache_ms} ms; \`LOG_SAMPLE_RATE\` ${meta.log_sample_rate ?? '0.01'}: a \`console.log\` decision line for that share of refusals, and always for placed orders and 5xx answers) except \`RATE_LIMIT_PER_SEC=0\`, which turns off the per-user token bucket so that a few thousand synthetic users can hammer it.`);

const summary = [
  ...edge.map((s) => [`edge rejection throughput, ${s.name}`, empty ? `${times(s.ratio)} the empty worker (${int(s.rps)} vs ${int(empty.rps)} req/s)` : `${int(s.rps)} req/s; ${noBaseline}`, '≥ 0.9×', empty ? goal(s.ratio >= 0.9) : '']),
  ['forwarded purchase throughput', empty ? `${times(fwd.ratio)} the empty worker (${int(fwd.rps)} req/s)` : `${int(fwd.rps)} req/s; ${noBaseline}`, '—', ''],
  ...(emptyLog ? [['reference: the empty worker plus one console.log line per request', `${times(emptyLog.ratio)} the empty worker (${int(emptyLog.rps)} req/s)`, '—', '']] : []),
  ...(emptyAssets ? [
    ['reference: the empty worker behind an `[assets]` router (the one-worker deployment)', `${times(emptyAssets.ratio)} the empty worker (${int(emptyAssets.rps)} req/s)`, '—', ''],
    ['edge rejections against the empty worker behind an `[assets]` router', edge.map((s) => `${s.name} ${times(s.ratioAssets)}`).join(', '), '—', ''],
  ] : []),
  ['origin commands per forwarded attempt (MONITOR, edge cache refreshes aside)', `${fix(fwdPerAttempt, 3)}: ${monFwd.top}`, '1', goal(fwdPerAttempt === 1)],
  ['origin commands per edge rejection (MONITOR, edge cache refreshes aside)', fix(edgePerReject, 3), '0', goal(edgePerReject === 0)],
  ['flash crowd: requests reaching the origin, burst that sells out', pct(crowd[0].share), '—', ''],
  ['flash crowd: requests reaching the origin after sell-out', pct(crowd[1].share), '≤ 1 %', goal(crowd[1].share <= 0.01)],
  ['flash crowd: units sold / stock', `${crowdItem.sold} / ${crowdItem.stock}${crowdItem.sold > crowdItem.stock ? ' **OVERSOLD**' : ''}`, `= ${crowdItem.stock}`, goal(crowdItem.sold === crowdItem.stock && crowdPlaced === crowdItem.stock)],
  ['purchase.lua vs seed script, success path (redis-benchmark EVALSHA)', `${times(rbRatio)} (${int(median(purchaseRps))} vs ${int(median(seedRps))} calls/s)`, '≥ 0.42× (aim 0.6×)', goal(rbRatio >= 0.42)],
  ['reference: purchase.lua\'s five calls without its decisions (tests/bench/calls-only.lua) vs seed script', `${times(callsOnlyRatio)} (${int(median(callsOnlyRps))} calls/s)`, '—', ''],
  ...['sqlite', 'postgres'].map((db) => { const r = JSON.parse(read(`sink-${db}.json`)); return [`order writer into ${db} (orders/s, against a plain batched INSERT)`, `${times(r.sink_vs_plain)} (${int(r.sink.orders_per_s)} vs ${int(r.plain_insert.rows_per_s)}/s)`, '—', '']; }),
  ['purchase.lua vs seed script, sold-out path', `${times(rbSoRatio)} (${int(median(purchaseSoRps))} vs ${int(median(seedSoRps))} calls/s; 2 \`redis.call\`s (the event, and the key's record) against the seed's 1)`, '—', ''],
  ...(simOn ? (() => {
    const g = simGoals(simOn);
    const at = `simulator, ${int(simTop)} isolates, admission on`;
    return [
      [`${at}: origin attempts per second, most`, `${int(simOn.maxAttempts)} (budget ${int(simOn.r.budget)}/s; ${plural(simOn.overSeconds, 'second')} over 1.2×); admission off: ${int(simOff.maxAttempts)}`, `≤ ${int(1.2 * simOn.r.budget)} every second`, goal(g.budget)],
      [`${at}: origin p99 in the sale's worst second against idle`, `${times(simOn.p99Ratio)} (${fix(simOn.worstP99, 3)} vs ${fix(simOn.r.idle_p99_ms, 3)} ms); admission off: ${times(simOff.p99Ratio)} (${fix(simOff.worstP99, 3)} ms)`, '≤ 3×', goal(g.p99)],
      [`${at}: sold / stock, oversold`, `${simOn.r.sold} / ${simOn.r.stock}, ${simOn.r.oversold}`, `= ${simOn.r.stock}, 0`, goal(g.sold)],
      [`${at}: sellout`, simOn.r.sellout_ms === null ? 'never' : `${int(simOn.r.sellout_ms)} ms`, `≤ ${int(simOn.selloutLimit)} ms`, goal(g.sellout)],
      [`${at}: last purchase of the item forwarded after the sellout`, simOn.r.last_forward_after_sellout_ms === null ? 'none' : `${int(simOn.r.last_forward_after_sellout_ms)} ms after (${plural(simOn.r.isolates_forwarding_after_sellout, 'isolate')} forwarded ${int(simOn.r.forwarded_after_sellout)})`, `≤ ${int(simOn.forwardLimit)} ms`, goal(g.forwarding)],
    ];
  })() : []),
  ...(lineSection ? lineSection.summary : []),
  ...(ackSection ? ackSection.summary : []),
  ['worker wasm (build/index_bg.wasm)', `${kib(num('wasm_raw'))} raw, ${kib(num('wasm_gzip'))} gzip`, '—', ''],
];
md.push(`## Summary

${table(['measure', 'result', 'goal', ''], summary)}`);

md.push(`## 1. Edge throughput against an empty worker

All workers ran side by side under \`wrangler dev\` on the same workerd build: flashgate, and \`tests/bench/empty-worker\`, a workers-rs worker (same \`worker\` and \`wasm-bindgen\` versions, same release profile, built with \`worker-build --release\`) that answers every request with \`{"ok":true}\`; a second instance of it (\`LOG=1\`) also writes one \`console.log\` line per request, the size of flashgate's decision line; a third runs behind an \`[assets]\` block (the pages' \`static/\` with \`run_worker_first = ["/api/*"]\`), the one-worker deployment flashgate no longer uses. flashgate runs as \`make dev\` runs it: the gate (\`wrangler.toml\`) and the pages worker (\`wrangler.pages.toml\`) in one \`wrangler dev\`. Each run is \`flashgate load\` with ${meta.concurrency} attempts in flight: ${int(num('edge_requests'))} \`POST /api/events/<id>/orders\` from ${int(num('edge_users'))} users with fresh tokens, Idempotency-Keys and bodies (the empty workers get the very same requests), except "forwarded", which sends ${int(num('forward_requests'))}, one per user. Rounds interleave the scenarios; req/s and latencies are the ${roundsNote}. "Answer" is the share of attempts that got the scenario's expected answer.

${table(['scenario', 'set-up', 'answer', 'req/s', '× empty', '× empty that logs', 'p50 ms', 'p99 ms', '× empty behind `[assets]`'], [
  empty ? ['empty worker (baseline)', 'answers 200 {"ok":true}', `ok ${pct(empty.share, 1)}`, int(empty.rps), '1.00×', emptyLog ? times(empty.rps / emptyLog.rps) : 'n/a', fix(empty.p50), fix(empty.p99), emptyAssets ? times(empty.rps / emptyAssets.rps) : 'n/a'] : ['empty worker (baseline)', 'not run in a smoke run', 'n/a', 'n/a', 'n/a', 'n/a', 'n/a', 'n/a', 'n/a'],
  ...(emptyLog ? [['empty worker that logs (reference)', 'the same plus one console.log line', `ok ${pct(emptyLog.share, 1)}`, int(emptyLog.rps), times(emptyLog.ratio), '1.00×', fix(emptyLog.p50), fix(emptyLog.p99), emptyAssets ? times(emptyLog.rps / emptyAssets.rps) : 'n/a']] : []),
  ...(emptyAssets ? [['empty worker behind `[assets]` (reference)', 'the same behind an asset router', `ok ${pct(emptyAssets.share, 1)}`, int(emptyAssets.rps), times(emptyAssets.ratio), emptyLog ? times(emptyAssets.rps / emptyLog.rps) : 'n/a', fix(emptyAssets.p50), fix(emptyAssets.p99), '1.00×']] : []),
  ...[...edge, fwd].map((s) => [s.name, s.setup, `${s.expected} ${pct(s.share, 1)}${s.others ? ` (also ${s.others})` : ''}`, int(s.rps), empty ? times(s.ratio) : 'n/a', emptyLog ? times(s.ratioLog) : 'n/a', fix(s.p50), fix(s.p99), emptyAssets ? times(s.ratioAssets) : 'n/a']),
], 'lllrrrrrr')}

Per round, req/s: ${[...(empty ? [empty] : []), ...(emptyLog ? [emptyLog] : []), ...(emptyAssets ? [emptyAssets] : []), ...edge, fwd].map((s) => `${s.name} ${s.runs.map((r) => int(r.rps)).join(' / ')}`).join('; ')}.${emptyLog ? `

Under \`wrangler dev\` a single \`console.log\` per request costs the empty worker ${pct(1 - emptyLog.ratio, 0)} of its throughput: each line travels from workerd to wrangler's log pipeline on the same 2 cores. flashgate writes such a line only for a sample of refusals (\`LOG_SAMPLE_RATE\`, 1 in 100 by default) and for every placed order, 5xx answer and origin error, so edge refusals compare with the empty worker that does not log; what a log line costs on Cloudflare's own edge is not measured here.` : ''}${emptyAssets ? `

flashgate's pages are a worker of their own (\`wrangler.pages.toml\`, Workers Static Assets from \`static/\`), so no asset router stands in front of \`/api/*\`: a worker with an \`[assets]\` block meets that router on every request, \`/api/*\` included (\`run_worker_first\` hands it on), and under \`wrangler dev\` the router is another worker in the same workerd; the hop costs the empty worker ${pct(1 - emptyAssets.ratio, 0)} of its throughput. The "× empty behind \`[assets]\`" column is for comparison with that deployment.` : ''}`);

md.push(`## 2. Origin commands per attempt

**Exact count (MONITOR).** Redis counts the \`redis.call()\`s a script makes in \`INFO commandstats\` too, so INFO cannot tell the worker's own commands from Lua's. MONITOR can: it tags Lua's calls \`[0 lua]\`. Because MONITOR slows the server, it watched separate, smaller runs after the throughput rounds (same worker, same settings; each run opened by an ECHO marker). "Edge cache refreshes" are view.lua EVALSHAs: the edge keeps one event snapshot per isolate and rereads it once per \`EDGE_CACHE_MS\` (${meta.edge_cache_ms} ms) whatever the traffic, so they are a rate, not a per-attempt cost.

${table(['scenario', 'set-up', 'answer', 'attempts', 'top-level commands', 'Lua\'s own calls', 'per attempt, refreshes aside', 'goal'], monitored.map((s) => [
  s.name, s.setup, `${s.expected} ${pct(s.share, 1)}`, int(s.attempts), s.top, int(s.lua), fix(s.perAttempt, 3),
  s.name === 'forwarded' ? `1: ${goal(s.perAttempt === 1)}` : `0: ${goal(s.perAttempt === 0)}`,
]), 'lllrlrrl')}

**Server-side work in the throughput runs (INFO commandstats deltas, Lua's calls included).** EVALSHA cannot be called from Lua, so its count is exact; "all commands" is what redis-server executed in total.

${table(['scenario', 'attempts', 'EVALSHA', 'view.lua refreshes (worker\'s /api/stats)', 'purchases forwarded (/api/stats)', 'all commands', 'all commands per attempt'], [...edge, fwd].map((s) => [
  s.name, int(s.requests), int(s.evalsha), int(s.views), int(s.forwarded), int(s.cmds), fix(s.cmds / s.requests, 3),
]), 'lrrrrrr')}

A forwarded purchase costs the server ${fix(fwdServerCmds, 1)} commands in total, yet a single round trip (the EVALSHA); the rest are purchase.lua's own \`redis.call()\`s (MONITOR saw ${fix(monFwd.lua / monFwd.attempts, 1)} Lua calls per forwarded attempt, edge cache refreshes included).`);

md.push(`## 3. Flash crowd

One item with stock ${crowdItem.stock}, caps 1 per user per day; ${int(num('crowd_users'))} users (\`load-0\` … \`load-${num('crowd_users') - 1}\`). The event was created \`scheduled\` with \`starts_at\` a few seconds ahead, and \`flashgate load --start-at\` fired the first burst at that instant; a second burst followed as soon as the first had been answered. Demand: ${int(crowdDemand)} attempts, ${fix(crowdDemand / crowdItem.stock, 0)}× the stock, ${meta.concurrency} in flight. "Reaching the origin" counts EVALSHA calls (purchases and view.lua refreshes alike) per attempt.

${table(['phase', 'attempts', 'placed', 'answers', 'EVALSHA', 'of which view.lua', 'reaching the origin', 'goal'], crowd.map((p, i) => [
  i === 0 ? 'burst that sells out' : 'after sell-out',
  int(p.rep.requests),
  int(p.rep.codes.placed ?? 0),
  Object.entries(p.rep.codes).map(([k, n]) => `${k} ${n}`).join(', '),
  int(p.evalsha),
  int(p.views),
  pct(p.share),
  i === 0 ? '—' : `≤ 1 %: ${goal(p.share <= 0.01)}`,
]), 'lrrlrrrl')}

At the end the origin said: stock ${crowdItem.stock}, sold ${crowdItem.sold}, ${crowdStatus.orders_pending} orders awaiting payment; the load generator saw ${crowdPlaced} placed orders.`);

md.push(`## 4. purchase.lua against a minimal seed script

\`redis-benchmark\` on the same redis-server, one after the other in ${rbRounds} interleaved rounds of ${int(num('rb_requests'))} calls with ${meta.rb_clients} clients each; both scripts SCRIPT LOADed first, then called with EVALSHA. The seed (\`tests/bench/seed.lua\`) is the minimal flash-sale script: HMGET inventory/purchased on one hash, HINCRBY if purchased < inventory. purchase.lua (\`crates/core/src/lua/purchase.lua\`) ran on a live event with a huge stock and caps, a random user key (\`fg:{rb}:user:__rand_int__\`) and Idempotency-Key (\`k__rand_int__\`) per call and a realistic order document, so that nearly every call takes its full success path (a one-line order, as nearly all are): one HMGET each of the event (state, caps, stock and sold) and the user (idempotency record and state, total, earliest deadline and today's count in one read); one HSET each of the event (sold) and the user (counters, the deadline and the idempotency record, the order document); and the XADD of the order to the stream: 5 \`redis.call\`s against the seed's 2. The order index, the pending set and the user hash's expiry are not in this step: track.lua derives them from the stream, off the hot path (\`flashgate orders sink\`, \`orders pay\` and \`orders expire\` track before they act).

The sold-out path: the same call for an event whose item has no stock left (a fresh key, as the edge sends most attempts), against the seed on a hash with nothing left. purchase.lua refuses it after one read (the event, which holds sold) and one \`HEXISTS\` of the key's record (a key that holds an order is answered with it), and never reads the user's counters.

${table(['script', 'calls/s (median)', 'per round', 'calls that bought'], [
  ['seed.lua', int(median(seedRps)), seedRps.map(int).join(' / '), pct(seedOk, 1)],
  ['purchase.lua', int(median(purchaseRps)), purchaseRps.map(int).join(' / '), pct(purchaseOk, 1)],
  ['seed.lua, sold out', int(median(seedSoRps)), seedSoRps.map(int).join(' / '), '—'],
  ['purchase.lua, sold out', int(median(purchaseSoRps)), purchaseSoRps.map(int).join(' / '), '—'],
], 'lrrr')}

For reference, \`tests/bench/calls-only.lua\` makes the same five calls with the same arguments and values of the same sizes, on an event of its own, but none of purchase.lua's checks, parsing or arithmetic: **${int(median(callsOnlyRps))} calls/s, ${times(callsOnlyRatio)} the seed**. That is the most purchase.lua could reach while it writes what it writes; the gap between the two is what its decisions cost in Lua.

Ratio purchase.lua / seed.lua, success path: **${times(rbRatio)}** (floor 0.42×, the ratio before orders went to a stream: ${goal(rbRatio >= 0.42)}; aim 0.6×). Sold-out path: **${times(rbSoRatio)}**.`);

const sinks = ['sqlite', 'postgres'].map((db) => JSON.parse(read(`sink-${db}.json`)));
md.push(`## 5. The order writer against a plain batched INSERT

\`flashgate orders sink-bench\` appends ${int(num('sink_orders'))} placed orders to an event's stream at the same redis-server, times \`flashgate orders sink\` (its real code path, batches of ${sinks[0].batch}: one transaction per batch; a batch of fresh placements goes set-wise, as one multi-row insert of the orders and one of their lines with the exactly-once \`ON CONFLICT DO NOTHING\`, and one guarded inventory update per item; XACK after COMMIT, then trimming) draining them into the database, then times a plain batched INSERT of the same rows (orders and lines, ${sinks[0].batch} rows per statement, no guard, no stream) into fresh tables of the same database. SQLite is a file in WAL mode; Postgres ${meta.postgres} is a throwaway server on this machine with \`fsync=off\`, so its figures say nothing about durable throughput.

${table(['database', 'sink orders/s', 'plain INSERT rows/s', 'sink ÷ plain'], sinks.map((r) => [r.db, int(r.sink.orders_per_s), int(r.plain_insert.rows_per_s), times(r.sink_vs_plain)]), 'lrrr')}`);

md.push(`## 6. Wasm size

${table(['bundle', 'raw', 'gzip -9'], [
  ['flashgate (build/index_bg.wasm)', `${int(num('wasm_raw'))} B (${kib(num('wasm_raw'))})`, `${int(num('wasm_gzip'))} B (${kib(num('wasm_gzip'))})`],
  ...(meta.empty_wasm_raw ? [['empty worker (baseline)', `${int(num('empty_wasm_raw'))} B (${kib(num('empty_wasm_raw'))})`, `${int(num('empty_wasm_gzip'))} B (${kib(num('empty_wasm_gzip'))})`]] : []),
], 'lrr')}`);

if (sim.length) {
  const r0 = sim[0].r;
  const onScale = Math.max(...sim.map((s) => s.r.time_scale ?? 1));
  const perSecond = (s, f, d) => s.r.per_second.map((x) => (d === undefined ? int(x[f]) : fix(x[f], d))).join(' / ');
  md.push(`## 7. Fleet simulator: origin load and latency at CDN scale

\`flashgate simulate\` runs N isolates in one native process, each the worker's own gate with its own edge state (snapshot, admission share, cap marks), called as the Workers shell calls it, against a real redis-server with the real purchase.lua and view.lua. Each run is a fresh event with one item of ${int(r0.stock)} units, an origin budget of ${int(r0.budget)} purchase attempts/s and a crowd of ${int(r0.attempts)} purchase intents (${fix(r0.attempts / r0.budget, 0)}× the budget) from ${int(r0.users)} users, arriving mostly in the first second (exponential, mean 300 ms) and retrying 503s and 429s after Retry-After with the same Idempotency-Key; every isolate refreshes its snapshot every ${int(r0.edge_cache_ms)} ms (\`EDGE_CACHE_MS\`). Admission off is the gate without admission control; on is the event's default, the fleet-wide line (fairness = line, docs/admission.md).${onScale > 1 ? ` The admission-on runs ran on a sale clock ${fix(onScale, 0)}× slower than the wall clock (\`--time-scale\`, docs/simulator.md): at real time the one-thread fleet of ${int(Math.max(...sim.map((s) => s.n)))} isolates decides the first second's crowd over a tenth of a second late, and the line, which waits until a window's crowd is counted, then sells out that much later. Every figure is on the sale's clock except the origin's latency, in real ms, under a load that many times lighter per real second; admission off ran at real time.` : ''}

How it is measured, at the origin: purchase attempts per second are \`INFO commandstats\` deltas at each second's edge (EVALSHA less view.lua's EXISTS); latency is a PING every ${int(r0.probe_ms)} ms on a connection of its own, sent and timed (monotonic clock) by an OS thread of its own blocking on its socket, at \`SCHED_FIFO\` priority (here: ${r0.probe_priority}), so that the crowd's generator on the same cores cannot delay its wake-up; "idle" is the second before the isolates warm up, "sale" every second from the start. The origin redis-server had scheduling \`${meta.sim_origin_sched === 'fifo' ? 'SCHED_FIFO (chrt -f)' : 'SCHED_OTHER (chrt was not permitted)'}\`: it shares ${meta.cores} cores with the generator, and real-time priority lets it run whenever it has work, as an origin on a machine of its own would; without it, its latency measures the generator's CPU use. Units sold and the sellout are read by the same probe (\`HGET\` every 10 ms); which isolates forwarded what, and when, is noted at each isolate's origin boundary. "Late p99" is how far behind its planned time the crowd's first attempts reached their isolates: one thread decides every attempt, so on ${meta.cores} cores the crowd arrives gentler than planned.

${table(['run', 'origin attempts/s, most', 'seconds over 1.2× budget', 'reached the origin', 'sold / stock (oversold)', 'sellout', 'origin p99 idle → worst second (×)', 'sale p99 (×)', 'forwarded after sellout', 'late p99', 'sale clock'], sim.map((s) => [
  s.name, int(s.maxAttempts), `${s.overSeconds}${s.adm === 'on' ? (s.overSeconds === 0 ? ' (met)' : ' (**missed**)') : ''}`, `${fix(s.r.reached_origin_pct)} %`,
  `${s.r.sold} / ${s.r.stock} (${s.r.oversold})`,
  s.r.sellout_ms === null ? 'never' : `${int(s.r.sellout_ms)} ms (limit ${int(s.selloutLimit)})`,
  `${fix(s.r.idle_p99_ms, 3)} → ${fix(s.worstP99, 3)} ms (${times(s.p99Ratio)})`,
  `${fix(s.r.sale_p99_ms, 3)} ms (${times(s.saleRatio)})`,
  s.r.last_forward_after_sellout_ms === null ? 'none' : `${int(s.r.forwarded_after_sellout)} by ${plural(s.r.isolates_forwarding_after_sellout, 'isolate')}, the last ${int(s.r.last_forward_after_sellout_ms)} ms after (limit ${int(s.forwardLimit)})`,
  `${int(s.r.late_p99_ms)} ms`,
  (s.r.time_scale ?? 1) > 1 ? `${fix(s.r.time_scale, 0)}× slower` : 'real time',
]), 'lrrrrrrrlll')}

Admission off, the crowd comes from one generator thread (see "late p99") through 64 connections. Once the stock is gone, nearly every attempt that reaches the origin takes purchase.lua's sold-out path, which the origin sustains at a higher rate than this crowd reaches it (section 4), so the origin is never saturated here: the off runs' latency is a lower bound of what a real crowd of this size does to an origin it saturates. The contrast that does not depend on this machine is in the origin attempts.

Per second from the start (second 0, 1, …):

${table(['run', 'origin attempts', 'origin p99 ms', 'origin p50 ms', 'sold', 'isolates forwarding after sellout'], sim.map((s) => [
  s.name, perSecond(s, 'origin_attempts'), perSecond(s, 'origin_p99_ms', 3), perSecond(s, 'origin_p50_ms', 3), perSecond(s, 'sold'),
  s.r.per_second.map((x) => (x.forwarding_isolates_after_sellout === null ? '–' : int(x.forwarding_isolates_after_sellout))).join(' / '),
]))}`);
}

if (lineSection) md.push(...lineSection.md);

if (ackSection) md.push(ackSection.md);

if (!smoke) md.push(`## Chart

![Throughput ratios, and the fleet simulator's origin attempts and p99 per second](tests/bench/benchmarks.png)`);

md.push(`## Reproduce

\`make bench\` (about 4 minutes on 2 cores once the tools are set up and target/release/flashgate is built; the first run also builds the release CLI and the empty worker and installs matplotlib into a venv under ~/.cache/flashgate, a few minutes more; the fleet simulator's runs take about ten seconds each). \`make test\` runs the same harness with tiny counts (\`.ci/bench.sh --smoke\`, from \`tests/bench_smoke.rs\`) so that it keeps working.
`);

writeFileSync(outPath, md.join('\n\n') + '\n');
writeFileSync(chartPath, JSON.stringify({
  title: `flashgate, ${meta.date}, ${meta.cores} cores`,
  edge: [...(emptyLog ? [{ ...emptyLog, name: 'empty worker that logs' }] : []), ...edge, fwd].map((s) => ({ name: s.name, ratio: s.ratio, rps: s.rps })),
  empty_rps: empty ? empty.rps : null,
  rb: { ratio: rbRatio, goal: 0.42, seed: median(seedRps), purchase: median(purchaseRps), calls_only: median(callsOnlyRps), calls_only_ratio: callsOnlyRatio, soldout_ratio: rbSoRatio },
  crowd: crowd.map((p) => p.share),
  sim: sim.map((s) => ({
    name: s.name,
    isolates: s.n,
    admission: s.adm,
    budget: s.r.budget,
    idle_p99_ms: s.r.idle_p99_ms,
    t: s.r.per_second.map((x) => x.t),
    origin_attempts: s.r.per_second.map((x) => x.origin_attempts),
    origin_p99_ms: s.r.per_second.map((x) => x.origin_p99_ms),
  })),
}, null, 2));
