// The replicated-acknowledgements section of BENCHMARKS.md (.ci/bench.sh, section 8): the
// forwarded purchase through two workers side by side in front of one primary with one replica,
// ORIGIN_REPLICA_ACKS=0 and 1, and the order writer (sink-bench) with --replica-acks 0 and 1.
//
//   import { acks } from './acks.mjs'     report.mjs: its summary rows and its section
//   node tests/bench/acks.mjs RESULTS_DIR OUT.md
//                                          .ci/bench.sh --acks-only: a document of this section alone
//
// RESULTS_DIR holds ack<round>-<0|1>.json (`flashgate load --json`), sink-ack<round>-<0|1>.json
// (`flashgate orders sink-bench`) and meta.env (ack_rounds, ack_requests, ack_ms, concurrency).
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const n = s.length;
  return n === 0 ? NaN : n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
};
const int = (x) => (Number.isFinite(x) ? Math.round(x).toLocaleString('en-US') : 'n/a');
const fix = (x, d = 2) => (Number.isFinite(x) ? x.toFixed(d) : 'n/a');
const times = (x) => (Number.isFinite(x) ? `${x.toFixed(2)}×` : 'n/a');
const pct = (x, d = 1) => (Number.isFinite(x) ? `${(x * 100).toFixed(d)} %` : 'n/a');
const goal = (ok) => (ok ? 'met' : '**missed**');
const table = (head, rows, align = 'l'.repeat(head.length)) =>
  [`| ${head.join(' | ')} |`, `|${[...align].map((a) => (a === 'r' ? '---:' : '---')).join('|')}|`, ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n');

export const readMeta = (dir) =>
  Object.fromEntries(readFileSync(join(dir, 'meta.env'), 'utf8').split('\n').filter((l) => l.includes('=')).map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));

/** The section, or null when the run has no acks results. */
export function acks(dir, meta) {
  const rounds = Number(meta.ack_rounds);
  if (!rounds || !existsSync(join(dir, 'ack1-0.json'))) return null;
  const json = (f) => JSON.parse(readFileSync(join(dir, f), 'utf8'));
  const side = (n) => {
    const runs = Array.from({ length: rounds }, (_, i) => json(`ack${i + 1}-${n}.json`));
    const sinks = Array.from({ length: rounds }, (_, i) => json(`sink-ack${i + 1}-${n}.json`));
    const requests = runs.reduce((a, r) => a + r.requests, 0);
    const placed = runs.reduce((a, r) => a + (r.codes.placed ?? 0), 0);
    return {
      n, runs, requests, placed,
      others: runs.flatMap((r) => Object.entries(r.codes).filter(([k]) => k !== 'placed')).map(([k, v]) => `${k} ${v}`).join(', '),
      rps: median(runs.map((r) => r.throughput_rps)),
      p50: median(runs.map((r) => r.latency.p50_ms)),
      p99: median(runs.map((r) => r.latency.p99_ms)),
      sinkRps: median(sinks.map((s) => s.sink.orders_per_s)),
      sinkRounds: sinks.map((s) => s.sink.orders_per_s),
    };
  };
  const [off, on] = [side(0), side(1)];
  const ratio = on.rps / off.rps;
  const sinkRatio = on.sinkRps / off.sinkRps;
  const roundsNote = rounds > 1 ? `median of ${rounds} interleaved rounds` : 'one round';
  const summary = [
    ['forwarded purchase with `ORIGIN_REPLICA_ACKS=1` against 0 (a local primary and replica)', `${times(ratio)} (${int(on.rps)} vs ${int(off.rps)} req/s); p99 ${fix(on.p99)} vs ${fix(off.p99)} ms`, '≥ 0.7×', goal(ratio >= 0.7)],
    ['order writer with `--replica-acks 1` against 0 (SQLite)', `${times(sinkRatio)} (${int(on.sinkRps)} vs ${int(off.sinkRps)} orders/s)`, '—', ''],
  ];
  const md = `## 8. Replicated acknowledgements

A redis-server primary with one replica (\`--replicaof\`, both on this machine), and two flashgate workers under \`wrangler dev\` side by side in front of the primary, one with \`ORIGIN_REPLICA_ACKS=0\` and one with \`ORIGIN_REPLICA_ACKS=1\` (\`ORIGIN_REPLICA_ACK_MS=${meta.ack_ms}\`): with acks on, every forwarded purchase is \`EVALSHA purchase.lua\` and \`WAIT 1 ${meta.ack_ms}\` pipelined on one connection, one round trip, and a 201 only once the replica has acknowledged. Each run is \`flashgate load\`, ${int(Number(meta.ack_requests))} attempts from as many users (each a fresh event's new buyer of 1 unit, as "forwarded" in section 1), ${meta.concurrency} in flight; the two workers take turns, first one then the other, ${roundsNote}. The order writer is \`flashgate orders sink-bench\` into SQLite against the same primary, \`--replica-acks 0\` and \`1\` (with acks, \`WAIT\` follows each read of the stream, and the writer applies only entries the replica holds).

${table(['setting', 'answer', 'req/s', 'p50 ms', 'p99 ms', 'per round, req/s', 'order writer orders/s', 'per round'], [off, on].map((s) => [
  `\`ORIGIN_REPLICA_ACKS=${s.n}\``,
  `placed ${pct(s.placed / s.requests)}${s.others ? ` (also ${s.others})` : ''}`,
  int(s.rps), fix(s.p50), fix(s.p99),
  s.runs.map((r) => int(r.throughput_rps)).join(' / '),
  int(s.sinkRps), s.sinkRounds.map(int).join(' / '),
]), 'llrrrlrl')}

Throughput with acks on: **${times(ratio)}** that with acks off (goal ≥ 0.7×: ${goal(ratio >= 0.7)}); p50 ${fix(on.p50)} against ${fix(off.p50)} ms, **p99 ${fix(on.p99)} ms** against ${fix(off.p99)} ms. The order writer with acks on: ${times(sinkRatio)} its throughput without. On loopback the replica acknowledges within a fraction of a millisecond; across zones the cost is the replication round trip.`;
  return { summary, md, ratio, sinkRatio, on, off };
}

// Standalone: `node tests/bench/acks.mjs RESULTS_DIR OUT.md` (bench.sh --acks-only).
if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const [dir, out] = process.argv.slice(2);
  const meta = readMeta(dir);
  const a = acks(dir, meta);
  if (!a) {
    console.error('no acks results in', dir);
    process.exit(1);
  }
  writeFileSync(out, `# flashgate benchmarks: replicated acknowledgements only

Measured by \`.ci/bench.sh --acks-only\` on ${meta.date}, commit ${meta.commit}${meta.smoke === '1' ? ' — **SMOKE RUN: tiny counts, the numbers mean nothing**' : ''}. Machine: ${meta.cpu}, **${meta.cores} cores**, ${meta.os}; redis-server ${meta.redis}, wrangler ${meta.wrangler}. The load generator, workerd and both redis-servers share the cores.

${table(['measure', 'result', 'goal', ''], a.summary)}

${a.md}
`);
}
