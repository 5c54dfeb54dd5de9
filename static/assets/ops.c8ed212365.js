// flashgate operator page: the live view of one sale across the whole fleet.
// One ES module, no framework; charts by uPlot (vendored from npm into /assets/ by
// .ci/fingerprint.mjs, loaded before this module). It polls GET /api/events/{id}/live about
// once a second with the operator token, which is kept in sessionStorage (this tab only), and
// stops polling while the tab is hidden.

const TOKEN_KEY = 'flashgate.operator-token';
const EVENT_KEY = 'flashgate.ops-event';
const POLL_MS = 1000;
const ABSENT_EVENT_POLL_MS = 5000;
const STATE_LABELS = { scheduled: 'Upcoming', live: 'Live', paused: 'Paused', ended: 'Ended' };
// Decision colours by code; the edge's share of a code is drawn lighter than the origin's.
const CODE_COLORS = {
  placed: '#1b7f3b', replayed: '#52b788', sold_out: '#8d96a3', busy: '#e67700',
  rate_limited: '#7b4fc4', origin_unavailable: '#c92a2a', not_started: '#3b8fd9',
  paused: '#74b3ec', ended: '#adb5bd', item_limit_reached: '#d9a406',
  total_limit_reached: '#b38600', order_expired: '#6c757d',
};
const OTHER_COLOR = '#d05ce3';
const ITEM_COLORS = ['#2f6fdf', '#e8590c', '#2b8a3e', '#ae3ec9', '#1098ad', '#c2255c', '#5c940d', '#364fc7'];
const clock = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' });
const tickTime = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false });
const count = new Intl.NumberFormat();

const ops = {
  token: sessionStorage.getItem(TOKEN_KEY) || '',
  tokenChecked: false,   // the worker has accepted the token in use
  event: '',
  minutes: 5,
  generation: 0,         // bumped when the event or window changes; older answers are dropped
  timer: 0,
  inflight: false,
  lastAnswerAt: 0,
  fleet: new Map(),      // Unix second → the API's per-second counts
  newest: 0,             // the newest whole second the API reported
  sold: { t: [], bySku: new Map() },   // this page's samples: server time (s) → sold per sku
  last: null,            // the last good body
  soldOutAt: null,
  charts: {},            // name → { plot, keys }
  x: [0, 1],             // the charts' common time range (Unix seconds)
  attempts: [],          // per decision key, the attempts each second (the stacked chart's legend)
  rows: new Map(),       // sku → table row cells
};

// ---------------------------------------------------------------- small helpers
const $ = (id) => document.getElementById(id);
const byTestId = (id) => document.querySelector(`[data-testid="${id}"]`);
const fmt = (n) => (n == null ? '–' : count.format(n));
const pct = (part, whole) => (whole ? `${Math.round((part * 100) / whole)}%` : '–');
const plural = (n, one, many) => `${fmt(n)} ${n === 1 ? one : many}`;

/** `hex` (#rrggbb) mixed with white by `share`: the edge's lighter shade of a code's colour. */
function lighter(hex, share) {
  const mix = (i) => Math.round(parseInt(hex.slice(i, i + 2), 16) * (1 - share) + 255 * share);
  return `rgb(${mix(1)}, ${mix(3)}, ${mix(5)})`;
}

function setText(el, text) {
  if (el && el.textContent !== text) el.textContent = text;
}

function show(el, visible) {
  if (el && el.hidden === visible) el.hidden = !visible;
}

const codeOf = (key) => key.slice(key.indexOf(':') + 1);
const placeOf = (key) => key.slice(0, key.indexOf(':'));

// ---------------------------------------------------------------- event and window picker
function readPicker() {
  const params = new URLSearchParams(location.search);
  ops.event = params.get('event') || localStorage.getItem(EVENT_KEY) || '';
  const minutes = Number(params.get('minutes'));
  if ([1, 5, 10].includes(minutes)) ops.minutes = minutes;
  if (ops.event) localStorage.setItem(EVENT_KEY, ops.event);
  $('event-id').value = ops.event;
  $('window').value = String(ops.minutes);
}

function choose(event, minutes) {
  ops.event = event;
  ops.minutes = minutes;
  localStorage.setItem(EVENT_KEY, event);
  const params = new URLSearchParams(location.search);
  params.set('event', event);
  if (minutes === 5) params.delete('minutes');
  else params.set('minutes', String(minutes));
  history.replaceState(null, '', `${location.pathname}?${params}`);
  reset();
  poll();
}

/** Forgets every figure of the previous event or window. */
function reset() {
  ops.generation += 1;
  ops.fleet.clear();
  ops.newest = 0;
  ops.sold = { t: [], bySku: new Map() };
  ops.last = null;
  ops.soldOutAt = null;
  for (const c of Object.values(ops.charts)) c.plot.destroy();
  ops.charts = {};
  ops.rows.clear();
  document.querySelector('[data-testid="items"] tbody').replaceChildren();
  show($('dash'), false);
}

// ---------------------------------------------------------------- the operator token
function askForToken(message) {
  ops.token = '';
  ops.tokenChecked = false;
  sessionStorage.removeItem(TOKEN_KEY);
  setText(byTestId('auth-status'), message);
  setText(byTestId('banner'), '');
  show($('auth'), true);
  show($('dash'), false);
  show($('forget'), false);
  $('token').value = '';
  $('token').focus();
}

// ---------------------------------------------------------------- polling
function schedule(ms = POLL_MS) {
  clearTimeout(ops.timer);
  if (!document.hidden) ops.timer = setTimeout(poll, ms);
}

async function poll() {
  clearTimeout(ops.timer);
  if (document.hidden || ops.inflight || !ops.token) return;
  if (!ops.event) {
    setText(byTestId('banner'), 'Enter the id of the event to watch.');
    $('event-id').focus();
    return;
  }
  ops.inflight = true;
  const generation = ops.generation;
  // After the first answer one minute is enough to stay current, unless the page was away.
  const away = Date.now() - ops.lastAnswerAt > 50_000;
  const minutes = ops.fleet.size && !away ? 1 : ops.minutes;
  let res = null;
  let body = null;
  try {
    res = await fetch(`/api/events/${encodeURIComponent(ops.event)}/live?minutes=${minutes}`, {
      headers: { Authorization: `Bearer ${ops.token}`, Accept: 'application/json' },
      cache: 'no-store',
    });
    body = await res.json().catch(() => null);
  } catch {
    res = null;
  } finally {
    ops.inflight = false;
  }
  if (generation !== ops.generation) return poll();
  const code = body?.error?.code;
  if (res?.status === 401) {
    return askForToken(ops.tokenChecked
      ? 'The operator token is no longer accepted (401). Enter the current OPERATOR_TOKEN.'
      : 'That operator token was refused (401 unauthenticated). Check the worker\u2019s OPERATOR_TOKEN.');
  }
  if (res?.status === 403) {
    return askForToken('Operator routes are off on this worker (403): set its OPERATOR_TOKEN secret first.');
  }
  if (res?.ok && body) {
    accept(body);
    return schedule();
  }
  if (res) enterDashboard(); // any answer but 401/403 means the token passed
  if (code === 'unknown_event') {
    setText(byTestId('banner'), `There is no event \u201c${ops.event}\u201d at this origin.`);
    return schedule(ABSENT_EVENT_POLL_MS);
  }
  const why = !res ? 'the worker did not answer' : code === 'origin_unavailable' ? 'the origin did not answer' : `HTTP ${res.status}${code ? ` ${code}` : ''}`;
  setText(byTestId('banner'), `Live figures are late: ${why}. Showing the last ones; retrying every second.`);
  return schedule();
}

function enterDashboard() {
  if (!ops.tokenChecked) {
    ops.tokenChecked = true;
    sessionStorage.setItem(TOKEN_KEY, ops.token);
  }
  show($('auth'), false);
  show($('forget'), true);
}

// ---------------------------------------------------------------- taking in an answer
function accept(body) {
  enterDashboard();
  setText(byTestId('banner'), '');
  ops.last = body;
  ops.lastAnswerAt = Date.now();
  for (const s of body.seconds) ops.fleet.set(s.second, s);
  ops.newest = Math.max(ops.newest, ...body.seconds.map((s) => s.second));
  const oldest = ops.newest - ops.minutes * 60 + 1;
  for (const second of ops.fleet.keys()) if (second < oldest) ops.fleet.delete(second);

  const t = Date.parse(body.event.server_time) / 1000;
  const { sold } = ops;
  sold.t.push(t);
  for (const item of body.items) {
    if (!sold.bySku.has(item.sku)) sold.bySku.set(item.sku, sold.t.slice(0, -1).map(() => null));
    sold.bySku.get(item.sku).push(item.sold);
  }
  while (sold.t.length && sold.t[0] < t - ops.minutes * 60) {
    sold.t.shift();
    for (const series of sold.bySku.values()) series.shift();
  }
  render(body);
}

/** The window's seconds, oldest first, with empty counts where nothing was reported. */
function windowSeconds() {
  const out = [];
  for (let s = ops.newest - ops.minutes * 60 + 1; s <= ops.newest; s += 1) {
    out.push(ops.fleet.get(s) ?? { second: s, isolates: 0, attempts: 0, candidates: 0, forwarded: 0, shed: 0, placed: 0, decisions: {} });
  }
  return out;
}

function sum(seconds, field) {
  return seconds.reduce((n, s) => n + s[field], 0);
}

// ---------------------------------------------------------------- rendering
function render(body) {
  show($('dash'), true);
  const { name, state } = body.event;
  setText(byTestId('event-name'), name);
  const badge = byTestId('event-state');
  badge.dataset.state = state;
  setText(badge, STATE_LABELS[state] ?? state);
  show(badge, true);
  document.title = `${name} · ${STATE_LABELS[state] ?? state} · flashgate`;
  setText(byTestId('updated'), `Updated ${clock.format(Date.parse(body.event.server_time))} · origin read ${body.read_ms} ms · refreshes every second`);

  const seconds = windowSeconds();
  renderTiles(body, seconds);
  renderItems(body);
  renderOrders(body);
  renderDecisions(seconds.slice(-60));
  renderSellout(body);
  renderCharts(seconds);
}

function tile(name, value, sub, level) {
  setText(byTestId(`kpi-${name}`), value);
  setText(byTestId(`kpi-${name}-sub`), sub);
  const el = byTestId(`kpi-${name}`).parentElement;
  if (level) el.dataset.level = level;
  else delete el.dataset.level;
}

function renderTiles(body, seconds) {
  const last = seconds.at(-1);
  const minute = seconds.slice(-60);
  const stock = body.items.reduce((n, i) => n + i.stock, 0);
  const sold = body.items.reduce((n, i) => n + i.sold, 0);
  tile('sold', fmt(sold), `of ${fmt(stock)} · ${fmt(stock - sold)} left`);
  tile('attempts', fmt(last.attempts), `${fmt(sum(minute, 'attempts'))} in the last minute · ${plural(last.isolates, 'isolate', 'isolates')}`);
  tile('placed', fmt(last.placed), `${fmt(sum(minute, 'placed'))} in the last minute`);
  tile('share', pct(last.forwarded, last.attempts), `${pct(sum(minute, 'forwarded'), sum(minute, 'attempts'))} over the last minute`);
  const errors = last.decisions['origin:origin_unavailable'] ?? 0;
  tile('forwarded', fmt(last.forwarded), `budget ${fmt(body.origin_budget)}/s · shed ${fmt(last.shed)}${errors ? ` · ${fmt(errors)} origin errors` : ''}`,
    errors ? 'bad' : last.forwarded > body.origin_budget ? 'warn' : null);
  tile('pending', fmt(body.orders.pending), `${fmt(body.orders.paid)} paid · ${fmt(body.orders.expired)} expired · ${fmt(body.orders.cancelled)} cancelled`);
  renderLine(body.line);
  const w = body.writer;
  if (!w) tile('writer', 'none', 'no order writer has started', body.stream_len ? 'warn' : null);
  else {
    const behind = (w.lag ?? 0) + w.pending;
    tile('writer', w.lag == null ? `≥ ${fmt(w.pending)}` : fmt(behind), `${fmt(w.lag)} unread · ${fmt(w.pending)} being written`, behind > 1000 ? 'warn' : null);
  }
}

/** The line of a `fairness = line` event (null otherwise): shoppers admitted of those who
 * entered, early and late, and how fast it moves. */
function renderLine(line) {
  show(byTestId('tile-line'), Boolean(line));
  if (!line) return;
  const pace = line.threshold == null ? 'drawn at the start' : line.open ? 'open: admitted as they arrive' : `${fmt(Math.round(line.rate))}/s`;
  tile('line', `${fmt(line.admitted)} of ${fmt(line.entered)}`,
    `entered · ${fmt(line.early)} early · ${fmt(line.late)} late · ${pace}`);
}

/** Units of `sku` sold (net of expiries) over the last minute of this page's samples, or
 * since its first sample when the page has seen less (null: fewer than two samples). */
function soldLastMinute(sku) {
  const { t } = ops.sold;
  const series = ops.sold.bySku.get(sku);
  const end = t.length - 1;
  let start = end;
  while (start > 0 && t[end] - t[start - 1] <= 60 && series[start - 1] != null) start -= 1;
  return start < end ? series[end] - series[start] : null;
}

function renderItems(body) {
  const names = new Map(body.event.items.map((i) => [i.sku, i.name]));
  const tbody = document.querySelector('[data-testid="items"] tbody');
  for (const item of body.items) {
    let row = ops.rows.get(item.sku);
    if (!row) {
      const tr = document.createElement('tr');
      tr.dataset.testid = `item-${item.sku}`;
      const cell = (cls, testid) => {
        const td = document.createElement('td');
        if (cls) td.className = cls;
        if (testid) td.dataset.testid = `${testid}-${item.sku}`;
        tr.append(td);
        return td;
      };
      row = {
        tr, sku: cell('sku'), name: cell('name'), stock: cell('num', 'stock'), sold: cell('num', 'sold'),
        left: cell('num left', 'remaining'), recent: cell('num', 'recent'), meter: cell('progress'),
      };
      row.meter.innerHTML = '<span class="meter"><span></span></span>';
      row.bar = row.meter.querySelector('.meter > span');
      setText(row.sku, item.sku);
      ops.rows.set(item.sku, row);
      tbody.append(tr);
    }
    setText(row.name, names.get(item.sku) ?? '');
    setText(row.stock, fmt(item.stock));
    setText(row.sold, fmt(item.sold));
    setText(row.left, item.remaining ? fmt(item.remaining) : 'Sold out');
    const recent = soldLastMinute(item.sku);
    setText(row.recent, recent == null ? '–' : fmt(recent));
    row.bar.style.width = `${item.stock ? (100 * item.sold) / item.stock : 0}%`;
    row.tr.toggleAttribute('data-sold-out', item.remaining === 0);
  }
}

function renderOrders(body) {
  setText(byTestId('orders-pending'), fmt(body.orders.pending));
  setText(byTestId('orders-paid'), fmt(body.orders.paid));
  setText(byTestId('orders-expired'), fmt(body.orders.expired));
  setText(byTestId('orders-cancelled'), fmt(body.orders.cancelled));
  const w = body.writer;
  setText(byTestId('writer-lag'), w ? (w.lag == null ? 'unknown' : fmt(w.lag)) : '–');
  setText(byTestId('writer-pending'), w ? fmt(w.pending) : '–');
  setText(byTestId('writer-stream'), fmt(body.stream_len));
  show($('writer-none'), !w);
  show($('writer-some'), Boolean(w));
}

function renderDecisions(minute) {
  const byCode = new Map();
  let attempts = 0;
  for (const s of minute) {
    attempts += s.attempts;
    for (const [key, n] of Object.entries(s.decisions)) {
      const row = byCode.get(codeOf(key)) ?? { edge: 0, origin: 0 };
      row[placeOf(key) === 'edge' ? 'edge' : 'origin'] += n;
      byCode.set(codeOf(key), row);
    }
  }
  const rows = [...byCode].sort(([a, x], [b, y]) => y.edge + y.origin - x.edge - x.origin || a.localeCompare(b));
  const tbody = document.querySelector('[data-testid="decisions"] tbody');
  tbody.replaceChildren(...(rows.length ? rows : [['', null]]).map(([code, n]) => {
    const tr = document.createElement('tr');
    if (!n) {
      tr.innerHTML = '<td colspan="4" class="muted">No attempts in the last minute.</td>';
      return tr;
    }
    tr.dataset.testid = `decision-${code}`;
    for (const [text, cls] of [[code, 'code'], [fmt(n.edge), 'num'], [fmt(n.origin), 'num'], [pct(n.edge + n.origin, attempts), 'num']]) {
      const td = document.createElement('td');
      td.className = cls;
      td.textContent = text;
      tr.append(td);
    }
    return tr;
  }));
}

function renderSellout(body) {
  const soldOut = body.items.length > 0 && body.items.every((i) => i.remaining === 0);
  if (soldOut && !ops.soldOutAt) ops.soldOutAt = Date.parse(body.event.server_time);
  if (!soldOut) ops.soldOutAt = null;
  const units = body.items.reduce((n, i) => n + i.stock, 0);
  setText(byTestId('sellout'), soldOut ? `Sold out: all ${fmt(units)} units of ${body.items.length} items are sold (seen at ${clock.format(ops.soldOutAt)}).` : '');
  show(byTestId('sellout'), soldOut);
}

// ---------------------------------------------------------------- charts (uPlot)
// Per-second counts as bars covering their second ([s, s + 1)).
const bars = uPlot.paths.bars({ size: [0.85, 40], align: 1 });

function chartSize(el) {
  return { width: Math.max(280, el.clientWidth), height: 230 };
}

/** Creates (or, when its series changed, recreates) a chart; then sets its data. */
function plot(name, keys, options, data) {
  const figure = byTestId(`chart-${name}`);
  const target = figure.querySelector('.plot');
  let chart = ops.charts[name];
  if (chart && chart.keys !== keys.join('\n')) {
    chart.plot.destroy();
    chart = null;
  }
  if (!chart) {
    const plotOptions = {
      ...chartSize(target),
      cursor: { sync: { key: 'ops' } },
      legend: { live: true },
      scales: { x: { time: true, range: () => ops.x }, ...options.scales },
      axes: [
        { stroke: '#5b6068', grid: { stroke: '#eceef1' }, ticks: { stroke: '#dde0e4' }, space: 72,
          values: (u, splits) => splits.map((v) => tickTime.format(v * 1000)) },
        { stroke: '#5b6068', grid: { stroke: '#eceef1' }, ticks: { stroke: '#dde0e4' }, size: 56, ...options.y },
      ],
      series: [{}, ...options.series],
    };
    chart = { plot: new uPlot(plotOptions, data, target), keys: keys.join('\n') };
    ops.charts[name] = chart;
  } else {
    chart.plot.setData(data);
  }
  return chart;
}

function renderCharts(seconds) {
  const xs = seconds.map((s) => s.second);
  ops.x = [xs[0], Math.max(xs.at(-1) + 1, ops.sold.t.at(-1) ?? 0)];

  // Sold per item: this page's samples.
  const skus = ops.last.items.map((i) => i.sku);
  const names = new Map(ops.last.event.items.map((i) => [i.sku, i.name]));
  plot('sold', skus, {
    scales: { y: { range: (u, min, max) => [0, Math.max(1, max)] } },
    // uPlot's default points: drawn while the samples are few (a page just opened), not later.
    series: skus.map((sku, i) => ({ label: `${sku} ${names.get(sku)}`, stroke: ITEM_COLORS[i % ITEM_COLORS.length], width: 2 })),
  }, [ops.sold.t, ...skus.map((sku) => ops.sold.bySku.get(sku))]);
  setChartFacts('sold', ops.sold.t.length, skus.reduce((n, sku) => n + (ops.sold.bySku.get(sku).at(-1) ?? 0), 0));

  // Attempts per second, stacked by decision: placed at the bottom, the origin's, then the edge's.
  const keys = [...new Set(seconds.flatMap((s) => Object.keys(s.decisions)))].sort((a, b) => {
    const rank = (k) => (k === 'origin:placed' ? 0 : placeOf(k) === 'origin' ? 1 : 2);
    return rank(a) - rank(b) || a.localeCompare(b);
  });
  const raw = keys.map((k) => seconds.map((s) => s.decisions[k] ?? 0));
  ops.attempts = raw;
  const stacked = raw.map((_, i) => seconds.map((__, j) => raw.slice(0, i + 1).reduce((n, r) => n + r[j], 0)));
  // Bars down to zero, drawn in order: the top of the stack first, each lower part over it.
  const order = keys.map((_, i) => keys.length - 1 - i);
  plot('attempts', keys, {
    scales: { y: { range: (u, min, max) => [0, Math.max(5, max)] } },
    series: order.map((i) => {
      const color = CODE_COLORS[codeOf(keys[i])] ?? OTHER_COLOR;
      const edge = placeOf(keys[i]) === 'edge';
      return {
        label: `${codeOf(keys[i])} (${placeOf(keys[i])})`,
        stroke: edge ? lighter(color, 0.25) : color,
        fill: edge ? lighter(color, 0.5) : color,
        width: 0,
        paths: bars,
        points: { show: false },
        value: (u, v, si, idx) => (idx == null ? '–' : fmt(ops.attempts[i]?.[idx])),
      };
    }),
  }, [xs, ...order.map((i) => stacked[i])]);
  setChartFacts('attempts', seconds.filter((s) => s.attempts > 0).length, sum(seconds, 'attempts'));

  // Origin share: forwarded ÷ attempts.
  const share = seconds.map((s) => (s.attempts ? (100 * s.forwarded) / s.attempts : null));
  plot('share', ['share'], {
    scales: { y: { range: [0, 100] } },
    y: { values: (u, ticks) => ticks.map((v) => `${v}%`) },
    series: [{ label: 'forwarded ÷ attempts', stroke: '#1550c8', fill: '#7fa3e6', width: 0, paths: bars,
      points: { show: false }, value: (u, v) => (v == null ? '–' : `${Math.round(v)}%`) }],
  }, [xs, share]);
  setChartFacts('share', share.filter((v) => v != null).length, sum(seconds, 'forwarded'));
}

/** What a chart shows, for people reading the page's source and for the browser tests. */
function setChartFacts(name, points, total) {
  const figure = byTestId(`chart-${name}`);
  figure.dataset.points = String(points);
  figure.dataset.total = String(total);
}

function resizeCharts() {
  for (const [name, chart] of Object.entries(ops.charts)) {
    chart.plot.setSize(chartSize(byTestId(`chart-${name}`).querySelector('.plot')));
  }
}

// ---------------------------------------------------------------- wiring
$('auth-form').addEventListener('submit', (e) => {
  e.preventDefault();
  ops.token = $('token').value.trim();
  ops.tokenChecked = false;
  setText(byTestId('auth-status'), '');
  poll();
});

$('event-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const event = $('event-id').value.trim();
  if (event) choose(event, Number($('window').value));
});

$('window').addEventListener('change', () => {
  if (ops.event) choose(ops.event, Number($('window').value));
});

$('forget').addEventListener('click', () => {
  reset();
  askForToken('');
});

document.addEventListener('visibilitychange', () => {
  if (document.hidden) clearTimeout(ops.timer);
  else poll();
});

new ResizeObserver(resizeCharts).observe($('dash'));

readPicker();
if (ops.token) poll();
else askForToken('');
