// The line's sections of BENCHMARKS.md (.ci/bench.sh, section 6b): a long sale and a mixed
// crowd, each run by `flashgate simulate --json` once with fairness = attempt and once with
// fairness = line. Pure bookkeeping: every figure comes from those reports; a missing report is a
// run that was not made.
//
//   import { line } from './line.mjs'     report.mjs: its summary rows and its two sections
//   node tests/bench/line.mjs FILE NAME    .ci/bench.sh: one console line for one run
//
// RESULTS_DIR holds sim-long-<attempt|line>.json and sim-fair-<attempt|line>.json.
import { existsSync, readFileSync, realpathSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The goal's bands (issue 18): origin attempts against the budget, and win ratios. */
export const BUDGET_BAND = [0.8, 1.2];
export const WIN_BAND = [0.8, 1.25];
/** Sells out within 1.5 × stock ÷ budget plus this. */
export const SELLOUT_SLACK_MS = 1000;

const int = (x) => (Number.isFinite(x) ? Math.round(x).toLocaleString('en-US') : 'n/a');
const fix = (x, d = 2) => (Number.isFinite(x) ? x.toFixed(d) : 'n/a');
const times = (x) => (Number.isFinite(x) ? `${x.toFixed(2)}×` : 'n/a');
const goal = (ok) => (ok ? 'met' : '**missed**');
const within = (x, [lo, hi]) => Number.isFinite(x) && x >= lo && x <= hi;
const table = (head, rows, align = 'l'.repeat(head.length)) =>
  [`| ${head.join(' | ')} |`, `|${[...align].map((a) => (a === 'r' ? '---:' : '---')).join('|')}|`, ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n');
const padL = (s, n) => String(s).padStart(n);
const padR = (s, n) => String(s).padEnd(n);

// ------------------------------------------------------------------ text charts
/** Columns per 1.0 of a ratio, and the chart's width (2.5× fits; more ends in ▶). */
const UNIT = 20;
const WIDTH = 50;
const EIGHTHS = ['', '▏', '▎', '▍', '▌', '▋', '▊', '▉'];

/**
 * A horizontal bar of `x` (a ratio, UNIT columns per 1.0), exactly WIDTH wide: full blocks,
 * then an eighth block, with the band shaded `░` where the bar does not reach; a bar past the
 * chart's width ends in `▶`. `null` draws the band alone.
 */
export function bar(x, band) {
  const cols = Number.isFinite(x) ? Math.max(0, x) * UNIT : 0;
  const over = cols > WIDTH;
  const full = Math.floor(Math.min(cols, WIDTH));
  const eighth = over ? 0 : Math.round((cols - full) * 8);
  const out = [];
  for (let i = 0; i < WIDTH; i++) {
    const inBand = i + 0.5 >= band[0] * UNIT && i + 0.5 <= band[1] * UNIT;
    if (i < full) out.push('█');
    else if (i === full && eighth > 0) out.push(eighth === 8 ? '█' : EIGHTHS[eighth]);
    else out.push(inBand ? '░' : ' ');
  }
  if (over) out[WIDTH - 1] = '▶';
  return out.join('');
}

/** The scale above the bars: 0, the band's ends and 2, each at its column. */
export function ruler(band, suffix = '') {
  const row = Array(WIDTH + 6).fill(' ');
  const put = (x, label) => {
    const at = Math.round(x * UNIT);
    if (row.slice(at, at + label.length + 1).some((c) => c !== ' ')) return;
    [...label].forEach((c, i) => { row[at + i] = c; });
  };
  put(0, '0');
  put(band[0], `${band[0]}${suffix}`);
  put(band[1], `${band[1]}${suffix}`);
  put(2, `2${suffix}`);
  return row.join('').trimEnd();
}

// ------------------------------------------------------------------ a long sale
/**
 * The long sale's figures from one report. Each second `[t, t + 1)` s is `whole` (all of it
 * before the sell-out, or any second of a run that never sold out), `sellout` (the sell-out
 * fell inside it) or `after`. A whole second meets the goal when its origin attempts are within
 * BUDGET_BAND × budget; the sell-out second held less than a second of sale, so only the upper
 * bound applies to it; the seconds after are not judged. A whole second that began with fewer
 * units left than the band's floor (the tail) is held to that share of the units left.
 */
export function longSale(r) {
  const [lo, hi] = BUDGET_BAND;
  const sellout = r.sellout_ms ?? null;
  let soldBefore = 0;
  const seconds = r.per_second.map((s) => {
    const from = s.t * 1000;
    const part = sellout === null || from + 1000 <= sellout ? 'whole' : from < sellout ? 'sellout' : 'after';
    const ratio = s.origin_attempts / r.budget;
    // The tail: a whole second that began with fewer units left than the band's floor of
    // attempts. Even a line that spends no attempt in vain then cannot reach the floor, and
    // the line asks for at most a small multiple of the units left (the issue's "as fast as
    // the origin budget and the remaining stock allow"): the floor is that share of the units.
    const left = Math.max(0, r.stock - soldBefore);
    soldBefore = s.sold;
    const tail = part === 'whole' && left < lo * r.budget;
    const floor = tail ? lo * left : lo * r.budget;
    const ok = part === 'whole' ? s.origin_attempts >= floor && ratio <= hi : part === 'sellout' ? ratio <= hi : null;
    const verdict = part === 'after' ? 'after the sell-out'
      : ratio > hi ? `above ${hi}×`
      : part === 'sellout' ? `sell-out second, ≤ ${hi}×`
      : tail ? `tail: ${int(left)} units left at its start, ≥ ${lo}× of them${ok ? '' : ': missed'}`
      : ratio < lo ? `below ${lo}×` : 'in band';
    return { t: s.t, attempts: s.origin_attempts, ratio, sold: s.sold, left, tail, part, ok, verdict };
  });
  const judged = seconds.filter((s) => s.part !== 'after');
  const whole = judged.filter((s) => s.part === 'whole');
  const last = judged.find((s) => s.part === 'sellout') ?? null;
  const after = seconds.filter((s) => s.part === 'after');
  const attempts = judged.map((s) => s.attempts);
  const limitMs = (1.5 * r.stock / r.budget) * 1000 + SELLOUT_SLACK_MS;
  return {
    r, seconds, judged, whole, last, after,
    inBand: whole.filter((s) => s.ok).length,
    bandOk: judged.length > 0 && judged.every((s) => s.ok),
    least: attempts.length ? Math.min(...attempts) : NaN,
    most: attempts.length ? Math.max(...attempts) : NaN,
    afterAttempts: after.reduce((a, s) => a + s.attempts, 0),
    limitMs,
    selloutOk: sellout !== null && sellout <= limitMs,
    soldOk: r.sold === r.stock && r.oversold === 0,
  };
}

/** The per-second chart of one run: origin attempts against the budget's band, units sold. */
export function longChart(name, a) {
  const { r } = a;
  const [lo, hi] = BUDGET_BAND;
  const head = `${padL('s', 3)}  ${padL('attempts', 8)}  ${padL('× budget', 8)}  `;
  const lines = [
    `${name}: origin attempts per second against the budget ${int(r.budget)}/s (band ${int(lo * r.budget)}–${int(hi * r.budget)}/s ░), units sold of ${int(r.stock)}`,
    `${' '.repeat(head.length)}${padR(ruler(BUDGET_BAND, '×'), WIDTH)}  ${padL('sold', 12)}  goal`,
    ...a.judged.map((s) => `${padL(s.t, 3)}  ${padL(int(s.attempts), 8)}  ${padL(times(s.ratio), 8)}  ${bar(s.ratio, BUDGET_BAND)}  ${padL(`${int(s.sold)} ${padL(`${Math.floor((100 * s.sold) / r.stock)}%`, 4)}`, 12)}  ${s.ok ? '✓' : '✗'} ${s.verdict}`),
  ];
  if (a.judged.length === 0) lines.push('(no second before the sell-out)');
  return lines.join('\n');
}

/** Which of the whole seconds were the tail, held to the units left rather than the budget. */
const tailNote = (a) => {
  const tail = a.whole.filter((s) => s.tail);
  return tail.length ? `; the tail (fewer units left than ${BUDGET_BAND[0]}× the budget): ${tail.map((s) => `second ${s.t}, ${int(s.attempts)} attempts for ${int(s.left)} units left${s.ok ? '' : ' (**missed**)'}`).join('; ')}` : '';
};

const longRows = (runs) => {
  const cell = (f) => runs.map(({ a }) => (a ? f(a) : 'not run'));
  return [
    ['isolates; users; intents', ...cell((a) => `${int(a.r.isolates)}; ${int(a.r.users)}; ${int(a.r.attempts)}`)],
    ['units sold / stock (oversold)', ...cell((a) => `${int(a.r.sold)} / ${int(a.r.stock)} (${int(a.r.oversold)})`)],
    [`sell-out (goal ≤ 1.5 × stock ÷ budget + 1 s)`, ...cell((a) => `${a.r.sellout_ms === null ? 'never' : `${int(a.r.sellout_ms)} ms`} (≤ ${int(a.limitMs)} ms: ${goal(a.selloutOk)})`)],
    [`whole seconds to the sell-out with origin attempts in ${BUDGET_BAND[0]}–${BUDGET_BAND[1]}× the budget`, ...cell((a) => `${a.inBand} of ${a.whole.length}${a.r.sellout_ms === null ? ' (no sell-out: the whole run)' : ''}${tailNote(a)}`)],
    [`the sell-out second (≤ ${BUDGET_BAND[1]}× only)`, ...cell((a) => (a.last ? `${int(a.last.attempts)} (${times(a.last.ratio)}): ${a.last.ok ? 'within' : 'over'}` : '—'))],
    ['origin attempts per second to the sell-out: least, most', ...cell((a) => `${int(a.least)}, ${int(a.most)} (${times(a.least / a.r.budget)}, ${times(a.most / a.r.budget)})`)],
    ['goal: every second in the band', ...cell((a) => goal(a.bandOk))],
    ['origin attempts after the sell-out second', ...cell((a) => (a.r.sellout_ms === null ? '—' : `${int(a.afterAttempts)} over ${a.after.length} s`))],
    ['intents that gave up (of them on a hopeless place)', ...cell((a) => (a.r.patience ? `${int(a.r.patience.gave_up)} (${int(a.r.patience.hopeless)})` : 'n/a'))],
  ];
};

function longSection(attempt, lineRun) {
  const runs = [{ name: 'fairness = attempt', a: attempt && longSale(attempt) }, { name: 'fairness = line', a: lineRun && longSale(lineRun) }];
  const any = runs.find((x) => x.a).a.r;
  const [lo, hi] = BUDGET_BAND;
  const l = runs[1].a;
  const verdict = l
    ? `With the line, ${l.inBand} of ${l.whole.length} whole seconds from the start to ${l.r.sellout_ms === null ? 'the end of the run' : 'the sell-out'} had origin attempts within ${lo}–${hi}× the budget${l.last ? `, and the sell-out second ${l.last.ok ? 'stayed within' : 'went over'} ${hi}×` : ''} (goal: every second): ${goal(l.bandOk)}; ${l.r.sellout_ms === null ? `it did not sell out (${int(l.r.sold)} of ${int(l.r.stock)} units sold)` : `it sold out after ${int(l.r.sellout_ms)} ms`} (goal ≤ ${int(l.limitMs)} ms): ${goal(l.selloutOk)}.`
    : 'The run with fairness = line was not made.';
  return `## 7b. The line: a long sale

\`flashgate simulate\` as in section 7, on a longer sale: ${int(any.isolates)} isolates, one item of ${int(any.stock)} units, an origin budget of ${int(any.budget)} purchase attempts/s, ${int(any.attempts)} purchase intents from ${int(any.users)} patient users${any.patience?.mean_s ? ` (mean patience ${int(any.patience.mean_s)} s: each retries after its \`Retry-After\` until its patience runs out or its place is hopeless)` : ''}. One run with the event's fairness = attempt (each isolate forwards its share of the budget), one with fairness = line (the fleet-wide line, docs/admission.md). Origin attempts are measured at the origin as in section 7 (\`INFO commandstats\`); units sold are the probe's last reading in each second, cumulative.

The goal (issue 18): from the start to the sell-out, origin attempts stay between ${lo}× and ${hi}× the budget in every second; the item sells out within 1.5 × stock ÷ budget + 1 s. Every whole second before the sell-out is judged against both bounds; the second in which the item sold out held less than a second of sale, so it is judged against ${hi}× only; without a sell-out, every second of the run is judged.

${table(['measure', ...runs.map((x) => x.name)], longRows(runs), 'lrr')}

${verdict}

Per second from the start (second 0, 1, …) to the sell-out: origin attempts, their ratio to the budget as a bar (${UNIT} columns to 1×; the band shaded), and units sold.

${runs.map((x) => (x.a ? `\`\`\`text\n${longChart(x.name, x.a)}\n\`\`\`` : `${x.name}: not run.`)).join('\n\n')}`;
}

// ------------------------------------------------------------------ a mixed crowd
/** A report's groups by name (none when the report has no fairness block). */
const groups = (r) => new Map((r?.fairness?.groups ?? []).map((g) => [g.name, g]));

/** The fairness goals from one report: the hammerers' win ratio, early_10min ÷ early_10s. */
export function fairness(r) {
  const g = groups(r);
  const ratio = (name) => g.get(name)?.win_ratio ?? null;
  const hammer = ratio('hammer');
  const [e600, e10] = [ratio('early_10min'), ratio('early_10s')];
  const early = e600 !== null && e10 !== null && e10 > 0 ? e600 / e10 : null;
  return {
    r, groups: g, hammer, early,
    hammerOk: within(hammer, WIN_BAND),
    earlyOk: within(early, WIN_BAND),
    users: [...g.values()].reduce((a, x) => a + x.users, 0),
  };
}

/** The win ratios of both runs per group as bars against WIN_BAND. */
export function fairChart(runs) {
  const names = [...new Set(runs.flatMap((x) => (x.f ? [...x.f.groups.keys()] : [])))];
  const head = `${padR('group', 12)} ${padR('', 8)}  `;
  const lines = [
    `win ratio: the group's share of the units won over its share of users (1 = a fair share; band ${WIN_BAND[0]}–${WIN_BAND[1]} ░)`,
    `${' '.repeat(head.length)}${ruler(WIN_BAND)}`,
  ];
  for (const name of names) {
    runs.forEach((x, i) => {
      const g = x.f?.groups.get(name);
      const w = g?.win_ratio ?? null;
      const value = !x.f ? 'not run' : !g ? 'no such group' : w === null ? '– (nothing won)' : fix(w);
      lines.push(`${padR(i === 0 ? name : '', 12)} ${padR(x.short, 8)}  ${bar(w, WIN_BAND)}  ${value}`);
    });
  }
  return lines.join('\n');
}

function fairSection(attempt, lineRun) {
  const runs = [
    { name: 'fairness = attempt', short: 'attempt', f: attempt && fairness(attempt) },
    { name: 'fairness = line', short: 'line', f: lineRun && fairness(lineRun) },
  ];
  const any = runs.find((x) => x.f).f;
  const share = (name) => (any.groups.get(name) && any.users ? `${Math.round((100 * any.groups.get(name).users) / any.users)} %` : '0 %');
  const names = [...new Set(runs.flatMap((x) => (x.f ? [...x.f.groups.keys()] : [])))];
  const cells = (x, name) => {
    if (!x.f) return ['not run', '', ''];
    const g = x.f.groups.get(name);
    if (!g) return ['—', '—', '—'];
    return [int(g.attempts), int(g.won), g.win_ratio === null ? '– (nothing won)' : fix(g.win_ratio)];
  };
  const users = (name) => runs.map((x) => x.f?.groups.get(name)?.users).find((n) => n !== undefined);
  const [lo, hi] = WIN_BAND;
  const l = runs[1].f;
  const a = runs[0].f;
  const goalRows = [
    ['hammerers\' win ratio', a ? fix(a.hammer) : 'not run', l ? fix(l.hammer) : 'not run', `${lo}–${hi} with the line`, l ? goal(l.hammerOk) : ''],
    ['early_10min ÷ early_10s win ratio', a ? fix(a.early) : 'not run', l ? fix(l.early) : 'not run', `${lo}–${hi} with the line`, l ? goal(l.earlyOk) : ''],
  ];
  return `## 7c. Fairness: a mixed crowd

\`flashgate simulate\` on ${int(any.r.isolates)} isolates: ${int(any.r.attempts)} purchase intents from ${int(any.users)} users for ${int(any.r.stock)} units at a budget of ${int(any.r.budget)}/s, in four groups (share of users): hammerers (${share('hammer')}), who retry at the rate limit and ignore \`Retry-After\`; early entrants, who took their entry ticket 10 minutes (early_10min, ${share('early_10min')}) or 10 seconds (early_10s, ${share('early_10s')}) before the start; and the rest (late, ${share('late')}), who arrive after it. Hammerers enter early as often as anyone but count as hammerers. One run with fairness = attempt, one with fairness = line. A group's win ratio is its share of the units won over its share of users: 1 is a fair share.

The goal (issue 18): with the line, the hammerers' win ratio is within ${lo}–${hi}, and so is early_10min's win ratio over early_10s's.

${table(['group', 'users', ...runs.flatMap((x) => [`${x.short}: attempts`, `${x.short}: won`, `${x.short}: win ratio`])], names.map((name) => [name, int(users(name)), ...runs.flatMap((x) => cells(x, name))]), 'lrrrrrrr')}

${table(['measure', 'fairness = attempt', 'fairness = line', 'goal', ''], goalRows, 'lrrll')}

\`\`\`text
${fairChart(runs)}
\`\`\``;
}

// ------------------------------------------------------------------ the sections
const RUNS = { longAttempt: 'sim-long-attempt', longLine: 'sim-long-line', fairAttempt: 'sim-fair-attempt', fairLine: 'sim-fair-line' };

/** The four reports from a results directory, `null` for each one missing. */
export function readRuns(dir) {
  return Object.fromEntries(Object.entries(RUNS).map(([k, f]) => {
    const path = join(dir, `${f}.json`);
    return [k, existsSync(path) ? JSON.parse(readFileSync(path, 'utf8')) : null];
  }));
}

/**
 * The summary rows and the sections for the reports given, or null when none of the runs was
 * made (an older results directory). A section whose two runs are both missing is left out.
 */
export function lineSections({ longAttempt, longLine, fairAttempt, fairLine }) {
  const md = [];
  const summary = [];
  if (longAttempt || longLine) {
    md.push(longSection(longAttempt, longLine));
    if (longLine) {
      const l = longSale(longLine);
      summary.push(
        [`the line, long sale: whole seconds to the sell-out with origin attempts in ${BUDGET_BAND[0]}–${BUDGET_BAND[1]}× the budget`, `${l.inBand} of ${l.whole.length}${l.last ? `; the sell-out second ${times(l.last.ratio)}` : ''} (least ${int(l.least)}, most ${int(l.most)} against ${int(l.r.budget)}/s)`, 'every second', goal(l.bandOk)],
        ['the line, long sale: sell-out', l.r.sellout_ms === null ? 'never' : `${int(l.r.sellout_ms)} ms (${int(l.r.sold)} / ${int(l.r.stock)})`, `≤ ${int(l.limitMs)} ms`, goal(l.selloutOk)],
      );
    }
  }
  if (fairAttempt || fairLine) {
    md.push(fairSection(fairAttempt, fairLine));
    if (fairLine) {
      const f = fairness(fairLine);
      summary.push(
        ['the line, mixed crowd: hammerers\' win ratio', fix(f.hammer), `${WIN_BAND[0]}–${WIN_BAND[1]}`, goal(f.hammerOk)],
        ['the line, mixed crowd: early_10min ÷ early_10s win ratio', fix(f.early), `${WIN_BAND[0]}–${WIN_BAND[1]}`, goal(f.earlyOk)],
      );
    }
  }
  return md.length ? { summary, md } : null;
}

/** The sections from a results directory (see readRuns, lineSections). */
export const line = (dir) => lineSections(readRuns(dir));

/** One console line for .ci/bench.sh: attempts per second to the sell-out, the goal, win ratios. */
export function consoleLine(r, name) {
  const a = longSale(r);
  const ws = (r.fairness?.groups ?? []).map((g) => `${g.name} ${g.win_ratio === null ? '-' : g.win_ratio.toFixed(2)}`).join(', ');
  const sellout = r.sellout_ms === null ? 'never' : `${r.sellout_ms} ms`;
  return `           ${name.padEnd(18)} origin attempts/s ${a.judged.map((s) => s.attempts).join(' ')} (budget ${r.budget}; in band ${a.inBand}/${a.whole.length}), sold ${r.sold}/${r.stock}, sellout ${sellout} (limit ${Math.round(a.limitMs)} ms); win ratios: ${ws}`;
}

// Standalone: `node tests/bench/line.mjs FILE NAME` (bench.sh's console line for one run).
if (process.argv[1] && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const [file, name] = process.argv.slice(2);
  console.log(consoleLine(JSON.parse(readFileSync(file, 'utf8')), name ?? file));
}
