// tests/bench/line.mjs: the line's sections of BENCHMARKS.md render what the reports measured.
//   node --test tests/bench/line.test.mjs
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { bar, consoleLine, fairness, lineSections, longSale, readRuns } from './line.mjs';

/** A `flashgate simulate --json` report with these origin attempts per second. */
function report({ budget = 100, stock = 300, sellout = null, attempts, groups = [{ name: 'late', users: 10, attempts: 20, won: 3, win_ratio: 1 }], mode = 'line' }) {
  let sold = 0;
  return {
    isolates: 10, users: 1000, attempts: 5000, budget, stock, oversold: 0,
    sold: sellout === null ? Math.min(stock, attempts.reduce((a, b) => a + b, 0) / 2) : stock,
    sellout_ms: sellout,
    patience: { mean_s: 60, gave_up: 7, hopeless: 2 },
    per_second: attempts.map((n, t) => {
      sold = sellout !== null && (t + 1) * 1000 > sellout ? stock : Math.min(stock, sold + Math.floor(n / 2));
      return { t, sent: 10 * n, origin_attempts: n, sold };
    }),
    fairness: { mode, groups },
  };
}

/** The chart row of second `t` in the text block that follows `heading`. */
function chartRow(md, heading, t) {
  const block = md.slice(md.indexOf(heading));
  return block.split('\n').find((l) => l.startsWith(`${String(t).padStart(3)}  `));
}

const cells = (md, first) => {
  const row = md.split('\n').find((l) => l.startsWith(`| ${first} |`));
  assert.ok(row, `a row ${first} in\n${md}`);
  return row.slice(2, -2).split(' | ');
};

test('a second at 1.5× the budget is out of band, and the count of seconds comes from the input', () => {
  // Whole seconds 0–2, the sell-out at 3.5 s inside second 3, second 4 after it.
  const r = report({ sellout: 3500, attempts: [100, 150, 85, 130, 40] });
  const a = longSale(r);
  assert.deepEqual(a.seconds.map((s) => s.part), ['whole', 'whole', 'whole', 'sellout', 'after']);
  assert.deepEqual(a.seconds.map((s) => s.ok), [true, false, true, false, null]);
  assert.equal(a.inBand, 2);
  assert.equal(a.bandOk, false);
  assert.equal(a.limitMs, 1.5 * 3 * 1000 + 1000);
  assert.equal(a.selloutOk, true);
  assert.equal(a.afterAttempts, 40);

  const { md, summary } = lineSections({ longAttempt: null, longLine: r, fairAttempt: null, fairLine: null });
  const text = md.join('\n\n');
  assert.deepEqual(cells(text, 'whole seconds to the sell-out with origin attempts in 0.8–1.2× the budget'), ['whole seconds to the sell-out with origin attempts in 0.8–1.2× the budget', 'not run', '2 of 3']);
  assert.equal(cells(text, 'goal: every second in the band')[2], '**missed**');
  assert.match(cells(text, 'the sell-out second (≤ 1.2× only)')[2], /^130 \(1\.30×\): over$/);
  assert.match(cells(text, 'sell-out (goal ≤ 1.5 × stock ÷ budget + 1 s)')[2], /^3,500 ms \(≤ 5,500 ms: met\)$/);

  const heading = 'fairness = line: origin attempts';
  const over = chartRow(text, heading, 1);
  assert.match(over, /1\.50×/);
  assert.match(over, /✗ above 1\.2×$/);
  assert.equal([...over].filter((c) => c === '█').length, 30, '1.5× is 30 columns at 20 to 1×');
  assert.match(chartRow(text, heading, 0), /✓ in band$/);
  assert.match(chartRow(text, heading, 2), /✓ in band$/);
  assert.match(chartRow(text, heading, 3), /✗ above 1\.2×$/);
  assert.equal(chartRow(text, heading, 4), undefined, 'the chart stops at the sell-out second');
  assert.match(text, /fairness = line: origin attempts per second against the budget 100\/s \(band 80–120\/s ░\)/);

  assert.equal(summary.length, 2, 'the long sale alone: its two summary rows');
  assert.deepEqual(summary[0].slice(2), ['every second', '**missed**']);
  assert.match(summary[0][1], /^2 of 3; the sell-out second 1\.30×/);
});

test('every second in band meets the goal; the sell-out second is held to the upper bound only', () => {
  const r = report({ sellout: 3200, attempts: [95, 110, 119, 30] });
  const a = longSale(r);
  assert.equal(a.last.ratio, 0.3);
  assert.equal(a.last.ok, true);
  assert.equal(a.bandOk, true);
  const text = lineSections({ longAttempt: r, longLine: r, fairAttempt: null, fairLine: null }).md.join('\n');
  assert.deepEqual(cells(text, 'goal: every second in the band').slice(1), ['met', 'met']);
  assert.match(chartRow(text, 'fairness = line: origin attempts', 3), /✓ sell-out second, ≤ 1\.2×$/);
});

test('a sale that never sold out: every second is judged and the sell-out goal is missed', () => {
  const r = report({ attempts: [100, 100, 100, 0] });
  const a = longSale(r);
  assert.equal(a.judged.length, 4);
  assert.equal(a.inBand, 3);
  assert.equal(a.selloutOk, false);
  const { md, summary } = lineSections({ longAttempt: null, longLine: r, fairAttempt: null, fairLine: null });
  assert.match(cells(md[0], 'sell-out (goal ≤ 1.5 × stock ÷ budget + 1 s)')[2], /^never .*\*\*missed\*\*/);
  assert.deepEqual(summary[1].slice(1), ['never', '≤ 5,500 ms', '**missed**']);
  assert.equal(cells(md[0], 'whole seconds to the sell-out with origin attempts in 0.8–1.2× the budget')[2], '3 of 4 (no sell-out: the whole run)');
  assert.match(md[0], /it did not sell out \(150 of 300 units sold\)/);
  assert.match(consoleLine(r, 'sim-long-line'), /in band 3\/4\), sold 150\/300, sellout never \(limit 5500 ms\)/);
});

test('fairness: the goals follow the win ratios given, and a null win ratio is shown as such', () => {
  const groups = (hammer, e600, e10) => [
    { name: 'late', users: 45, attempts: 90, won: 40, win_ratio: 0.9 },
    { name: 'early_10min', users: 22, attempts: 40, won: 20, win_ratio: e600 },
    { name: 'early_10s', users: 23, attempts: 40, won: 20, win_ratio: e10 },
    { name: 'hammer', users: 10, attempts: 400, won: 15, win_ratio: hammer },
  ];
  const fairLine = report({ attempts: [100], groups: groups(1.5, 1.1, 1.0) });
  const fairAttempt = report({ attempts: [100], groups: groups(1.2, 0.5, null), mode: 'attempt' });
  const f = fairness(fairLine);
  assert.equal(f.hammerOk, false, '1.5 is outside 0.8–1.25');
  assert.ok(Math.abs(f.early - 1.1) < 1e-9);
  assert.equal(f.earlyOk, true);
  assert.equal(fairness(fairAttempt).early, null);

  const { md, summary } = lineSections({ longAttempt: null, longLine: null, fairAttempt, fairLine });
  assert.equal(md.length, 1);
  const text = md[0];
  assert.deepEqual(cells(text, 'hammerers\' win ratio').slice(1), ['1.20', '1.50', '0.8–1.25 with the line', '**missed**']);
  assert.deepEqual(cells(text, 'early_10min ÷ early_10s win ratio').slice(1), ['n/a', '1.10', '0.8–1.25 with the line', 'met']);
  assert.deepEqual(cells(text, 'early_10s'), ['early_10s', '23', '40', '20', '– (nothing won)', '40', '20', '1.00']);
  assert.match(text, /hammerers \(10 %\)/);
  const hammerLine = text.split('\n').find((l) => /^ {13}line {6}/.test(l) && l.endsWith('1.50'));
  assert.ok(hammerLine, `the hammerers' line bar in\n${text}`);
  assert.equal([...hammerLine].filter((c) => c === '█').length, 30);
  assert.deepEqual(summary.map((r) => r[3]), ['**missed**', 'met']);
});

test('missing runs: no section without its runs, "not run" beside a run that was made', () => {
  assert.equal(lineSections({ longAttempt: null, longLine: null, fairAttempt: null, fairLine: null }), null);
  const r = report({ sellout: 2500, attempts: [100, 100, 100] });
  const { md, summary } = lineSections({ longAttempt: r, longLine: null, fairAttempt: null, fairLine: null });
  assert.equal(md.length, 1);
  assert.match(md[0], /^## 7b\. The line: a long sale/);
  assert.equal(cells(md[0], 'units sold / stock (oversold)')[2], 'not run');
  assert.match(md[0], /The run with fairness = line was not made\./);
  assert.match(md[0], /fairness = line: not run\./);
  assert.deepEqual(summary, [], 'the goals are the line\'s: no summary rows without its run');
});

test('readRuns reads the files there are and gives null for the others', () => {
  const dir = mkdtempSync(join(tmpdir(), 'flashgate-line-'));
  try {
    const r = report({ sellout: 1500, attempts: [100, 90] });
    writeFileSync(join(dir, 'sim-long-line.json'), JSON.stringify(r));
    const runs = readRuns(dir);
    assert.deepEqual(runs.longLine, r);
    assert.equal(runs.longAttempt, null);
    assert.equal(runs.fairAttempt, null);
    assert.equal(runs.fairLine, null);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a whole second that began with fewer units left than the floor is held to the units left', () => {
  // Stock 300, budget 100: 50 sold in each of seconds 0-4 (left 50 at the start of second 5),
  // then second 5 sends 45 attempts for them (0.45× the budget, 0.9× the units left).
  const per = [100, 100, 100, 100, 100, 45, 10];
  const r = report({ stock: 300, sellout: 6200, attempts: per });
  // report() sells half the attempts: 50 a second, so 250 by the end of second 4.
  const a = longSale(r);
  assert.deepEqual(a.seconds.map((s) => s.left), [300, 250, 200, 150, 100, 50, 300 - r.per_second[5].sold]);
  assert.deepEqual(a.seconds.map((s) => s.tail), [false, false, false, false, false, true, false]);
  assert.deepEqual(a.seconds.map((s) => s.ok), [true, true, true, true, true, true, true]);
  assert.match(a.seconds[5].verdict, /^tail: 50 units left at its start/);
  // The same second with 30 attempts (0.6× of 50) misses even the tail's floor.
  const short = longSale(report({ stock: 300, sellout: 6200, attempts: [100, 100, 100, 100, 100, 30, 10] }));
  assert.equal(short.seconds[5].ok, false);
  assert.equal(short.bandOk, false);
  const text = lineSections({ longAttempt: null, longLine: r, fairAttempt: null, fairLine: null }).md.join('\n\n');
  assert.match(cells(text, 'whole seconds to the sell-out with origin attempts in 0.8–1.2× the budget')[2], /^6 of 6; the tail \(fewer units left than 0\.8× the budget\): second 5, 45 attempts for 50 units left$/);
});

test('bars: whole blocks per twentieth, eighths, the band where the bar ends, ▶ past the width', () => {
  assert.equal(bar(1, [0.8, 1.2]), `${'█'.repeat(20)}${'░'.repeat(4)}${' '.repeat(26)}`);
  assert.equal(bar(0.5, [0.8, 1.2]), `${'█'.repeat(10)}${' '.repeat(6)}${'░'.repeat(8)}${' '.repeat(26)}`);
  assert.equal(bar(0.0125, [0.8, 1.2])[0], '▎', 'a quarter column is two eighths');
  assert.equal(bar(null, [0.8, 1.2]).trim(), '░'.repeat(8));
  const wide = bar(4, [0.8, 1.2]);
  assert.equal([...wide].length, 50);
  assert.equal(wide.at(-1), '▶');
});
