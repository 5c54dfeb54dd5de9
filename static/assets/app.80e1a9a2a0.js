// flashgate sale page: one ES module, no dependencies, no build step.
// It polls GET /api/events/{id} (edge-cached, ~1 s stale at most), enters a signed-in shopper
// in the sale with POST /api/events/{id}/entry (behind a Turnstile check when the sale names a
// site key), and places orders with POST /api/events/{id}/orders, one Idempotency-Key per
// purchase intent, carrying the entry ticket (header Flashgate-Entry; the HttpOnly cookie too).

const EVENT_ID = new URLSearchParams(location.search).get('event') || 'demo';
const EVENT_URL = `/api/events/${encodeURIComponent(EVENT_ID)}`;
const STATE_LABELS = { scheduled: 'Upcoming', live: 'Live', paused: 'Paused', ended: 'Ended' };
const STATE_NEWS = {
  live: 'The sale is live!',
  paused: 'The sale is paused. Buying resumes when the organiser restarts it.',
  ended: 'The sale has ended.',
};
// Refusals that prove no order was placed; anything unknown keeps the key so a retry cannot double-buy.
const FINAL_ERRORS = new Set(['invalid_request', 'invalid_json', 'unknown_event', 'unknown_item',
  'order_qty_limit', 'idempotency_key_reused']);
const SECOND = 1000;
const TURNSTILE_SCRIPT = 'https://challenges.cloudflare.com/turnstile/v0/api.js?render=explicit';
const dateRange = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });

const app = {
  event: null,          // last good event body
  clockSamples: [],     // recent (server − client) clock offsets in ms
  user: undefined,      // undefined = not known yet, null = signed out
  signinAvailable: false,
  totalLimitReached: false,
  eventProblem: false,
  cards: new Map(),     // sku → { root, name, price, button, status, progress, remaining, intent }
  loading: null,
  pollTimer: 0,
  startTimer: 0,
  // The shopper's entry: phase 'none' | 'check' (waiting for Turnstile) | 'entering' | 'in' | 'retry' | 'closed'.
  entry: { phase: 'none', user: null, ticket: null, early: false, problem: '', timer: 0, widget: null, waiting: [] },
};

// ---------------------------------------------------------------- small helpers
const $ = (id) => document.getElementById(id);
const byTestId = (id) => document.querySelector(`[data-testid="${id}"]`);
const jitter = (ms) => Math.random() * ms;
const say = (text) => setText(byTestId('global-status'), text);
const newKey = () => crypto.randomUUID?.()
  ?? Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, '0')).join('');

function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
}

function duration(ms) {
  let s = Math.max(0, Math.ceil(ms / SECOND));
  const days = Math.floor(s / 86400);
  s %= 86400;
  const parts = [Math.floor(s / 3600), Math.floor(s / 60) % 60, s % 60];
  const shown = days || parts[0] ? parts : parts.slice(1);
  const clock = shown.map((n, i) => (i ? String(n).padStart(2, '0') : String(n))).join(':');
  return days ? `${days}d ${clock}` : clock;
}

function money({ amount, currency }) {
  try {
    const fmt = new Intl.NumberFormat(undefined, { style: 'currency', currency });
    return fmt.format(amount / 10 ** fmt.resolvedOptions().maximumFractionDigits);
  } catch {
    return `${amount} ${currency}`;
  }
}

function retryAfterMs(value) {
  if (!value) return null;
  const ms = /^\d+$/.test(value) ? Number(value) * SECOND : Date.parse(value) - Date.now();
  return Number.isFinite(ms) ? Math.max(0, ms) : null;
}

async function api(path, { method = 'GET', body, headers = {} } = {}) {
  const init = { method, credentials: 'same-origin', headers: { Accept: 'application/json', ...headers } };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  try {
    const res = await fetch(path, init);
    const data = await res.json().catch(() => null);
    return { status: res.status, ok: res.ok, data, retryAfter: retryAfterMs(res.headers.get('Retry-After')) };
  } catch {
    return { status: 0, ok: false, data: null, retryAfter: null };
  }
}

const errorCode = (res) => res.data?.error?.code ?? (res.status ? `http_${res.status}` : 'network');

// ---------------------------------------------------------------- server clock
function noteClock(serverTime, sent, received) {
  const sample = Date.parse(serverTime) + (received - sent) / 2 - received;
  if (Number.isFinite(sample)) app.clockSamples = [...app.clockSamples.slice(-4), sample];
}

// An edge-cached answer can only make server_time look older, so the largest recent sample wins.
const serverNow = () => Date.now() + (app.clockSamples.length ? Math.max(...app.clockSamples) : 0);
const untilStart = (ev) => Date.parse(ev.starts_at) - serverNow();

// ---------------------------------------------------------------- event polling
function loadEvent() {
  app.loading ??= fetchEvent().finally(() => { app.loading = null; });
  return app.loading;
}

async function fetchEvent() {
  clearTimeout(app.pollTimer);
  const sent = Date.now();
  const res = await api(EVENT_URL);
  if (res.ok && res.data) {
    noteClock(res.data.server_time, sent, Date.now());
    applyEvent(res.data);
  } else {
    reportEventProblem(res);
  }
  schedulePoll(pollDelay(res));
}

function schedulePoll(ms) {
  clearTimeout(app.pollTimer);
  if (!document.hidden) app.pollTimer = setTimeout(loadEvent, ms);
}

function pollDelay(res) {
  if (!res.ok) return (res.retryAfter ?? 5 * SECOND) + jitter(2 * SECOND);
  const { state } = app.event;
  if (state === 'ended') return 30 * SECOND + jitter(5 * SECOND);
  const busy = state !== 'scheduled' || untilStart(app.event) < 120 * SECOND;
  return busy ? 2 * SECOND + jitter(SECOND) : 5 * SECOND + jitter(2 * SECOND);
}

// Re-fetch just after the countdown ends; jitter spreads the crowd over a second.
function armStartTimer(ev) {
  clearTimeout(app.startTimer);
  const wait = untilStart(ev);
  if (ev.state === 'scheduled' && wait > 0 && wait < 600 * SECOND) {
    app.startTimer = setTimeout(loadEvent, wait + jitter(SECOND));
  }
}

// After an order: wait out the ~1 s edge cache so the stock bar shows the new count.
const refreshSoon = () => setTimeout(loadEvent, 1200 + jitter(800));

function applyEvent(ev) {
  const previous = app.event?.state;
  app.event = ev;
  if (app.eventProblem) say('');
  app.eventProblem = false;
  if (previous && previous !== ev.state) say(STATE_NEWS[ev.state] ?? '');
  document.title = `${ev.name} · flash sale`;
  setText(byTestId('event-name'), ev.name);
  setText($('sale-window'), `Sale runs ${dateRange.formatRange(new Date(ev.starts_at), new Date(ev.ends_at))} (your time).`);
  const { per_item_per_day: perDay, total, per_order_qty: perOrder } = ev.caps;
  setText($('sale-caps'), `Limits: ${perDay} of each item per day, ${total} items in total, ${perOrder} per order.`);
  for (const item of ev.items) describeItem(app.cards.get(item.sku) ?? addCard(item.sku), item);
  armStartTimer(ev);
  maybeEnter();
  renderEntry();
  render();
}

function reportEventProblem(res) {
  app.eventProblem = true;
  const code = errorCode(res);
  if (code === 'unknown_event') {
    say(`There is no sale called “${EVENT_ID}”. Check the link you followed.`);
    if (!app.event) setText(byTestId('event-name'), 'Sale not found');
  } else if (code === 'network') {
    say('You seem to be offline. Reconnecting…');
  } else {
    say(`The sale is temporarily unavailable. Retrying in ${Math.ceil((res.retryAfter ?? 5 * SECOND) / SECOND)} s…`);
  }
}

// ---------------------------------------------------------------- rendering
function addCard(sku) {
  const root = $('item-template').content.firstElementChild.cloneNode(true);
  const part = (selector, testid) => {
    const el = root.querySelector(selector);
    if (testid) el.dataset.testid = `${testid}-${sku}`;
    return el;
  };
  const card = {
    root,
    name: part('.item-name'),
    price: part('.price'),
    progress: part('progress'),
    remaining: part('.remaining', 'remaining'),
    button: part('.buy', 'buy'),
    status: part('.status', 'status'),
    intent: freshIntent(),
  };
  root.dataset.testid = `item-${sku}`;
  card.status.id = `status-${sku}`;
  card.button.setAttribute('aria-describedby', card.status.id);
  card.button.addEventListener('click', () => buy(sku));
  $('items').append(root);
  app.cards.set(sku, card);
  return card;
}

// The parts of a card that change only with the event data, not with the clock.
function describeItem(card, item) {
  setText(card.name, item.name);
  setText(card.price, money(item.price));
  card.progress.setAttribute('aria-label', `${item.name}: stock remaining`);
}

function render() {
  const ev = app.event;
  if (!ev) return;
  const badge = byTestId('event-state');
  setText(badge, STATE_LABELS[ev.state] ?? ev.state);
  badge.dataset.state = ev.state;
  setText(byTestId('countdown'), countdownText(ev));
  for (const item of ev.items) renderCard(app.cards.get(item.sku), item, ev);
}

function countdownText(ev) {
  if (ev.state === 'scheduled') return startsInText(ev);
  if (ev.state === 'paused') return 'Paused by the organiser, check back shortly';
  if (ev.state === 'ended') return 'This sale has ended';
  const left = Date.parse(ev.ends_at) - serverNow();
  return left > 0 ? `Ends in ${duration(left)}` : 'Ending…';
}

function startsInText(ev) {
  const left = untilStart(ev);
  return left > 0 ? `Starts in ${duration(left)}` : 'Starting…';
}

function renderCard(card, item, ev) {
  const view = itemView(item, ev, card.intent);
  card.root.dataset.state = view.state;
  setText(card.button, view.label);
  card.button.setAttribute('aria-disabled', String(view.disabled));
  setText(card.status, view.status);
  card.progress.max = Math.max(1, item.stock);
  card.progress.value = Math.max(0, item.remaining);
  const soldOut = item.sold_out || item.remaining <= 0;
  setText(card.remaining, soldOut ? `Sold out (0 of ${item.stock} left)` : `${item.remaining} of ${item.stock} left`);
}

// What one item's button and status say, from the event, the item and this shopper's purchase intent.
function itemView(item, ev, intent) {
  const view = (state, label, disabled, status = intent.note) => ({ state, label, disabled, status });
  const { phase } = intent;
  if (phase === 'inflight') return view('inflight', 'Buying…', true);
  if (item.sold_out || phase === 'sold_out') return view('sold-out', 'Sold out', true, intent.note || 'This item is sold out.');
  if (ev.state === 'ended') return view('ended', 'Sale ended', true, intent.orderId ? `Your order: ${intent.orderId}` : '');
  const retryIn = () => Math.ceil(Math.max(0, intent.retryAt - Date.now()) / SECOND);
  if (phase === 'rate_limited') return view('rate-limited', `Busy, retrying in ${retryIn()} s`, true);
  if (phase === 'in_line') return view('in-line', `In line, retrying in ${retryIn()} s`, true);
  if (phase === 'entering') return view('entering', 'Entering…', true);
  if (phase === 'unavailable' || phase === 'error') return view(phase, 'Retry', false);
  if (phase === 'item_limit') return view('item-limit', 'Daily limit reached', true);
  if (app.totalLimitReached) {
    return view('total-limit', 'Sale limit reached', true, intent.note || `You have bought the most this sale allows (${ev.caps.total} items).`);
  }
  if (ev.state === 'scheduled') return view('upcoming', startsInText(ev), true);
  if (ev.state === 'paused') return view('paused', 'Paused', true);
  return phase === 'purchased' ? view('purchased', 'Buy again', false) : view('live', 'Buy', false);
}

// ---------------------------------------------------------------- buying
function freshIntent() {
  return { phase: 'idle', note: '', key: null, orderId: null, retryAt: 0, timer: 0 };
}

function buy(sku) {
  const item = app.event?.items.find((i) => i.sku === sku);
  const { intent } = app.cards.get(sku);
  if (item && !itemView(item, app.event, intent).disabled) placeOrder(sku);
}

async function placeOrder(sku) {
  const { intent } = app.cards.get(sku);
  clearTimeout(intent.timer);
  intent.key ??= newKey();   // kept until a final answer, so retries and replays reuse it
  Object.assign(intent, { phase: 'inflight', note: 'Placing your order…' });
  render();
  const headers = { 'Idempotency-Key': intent.key };
  if (app.entry.ticket && app.entry.user === app.user) headers['Flashgate-Entry'] = app.entry.ticket;
  const res = await api(`${EVENT_URL}/orders`, { method: 'POST', headers, body: { items: [{ sku, qty: 1 }] } });
  settle(sku, intent, outcome(res, intent));
}

function settle(sku, intent, result) {
  if (result.final) intent.key = null;
  if (!result.reenter) intent.reentries = 0;
  Object.assign(intent, { phase: result.phase, note: result.note });
  if (result.reenter) {
    // Enter (again), then retry the same order with the same key.
    app.entry.ticket = null;
    app.entry.waiting.push(() => placeOrder(sku));
    enter();
  } else if (result.retryIn != null) {
    intent.retryAt = Date.now() + result.retryIn;
    intent.timer = setTimeout(() => placeOrder(sku), result.retryIn);
  } else if (result.resetIn != null) {
    intent.timer = setTimeout(() => { Object.assign(intent, { phase: 'idle', note: '' }); render(); }, result.resetIn);
  }
  if (result.totalLimit) app.totalLimitReached = true;
  if (result.signin) promptSignin();
  if (result.refresh) refreshSoon();
  render();
}

// Maps one order answer to the item's next phase and message.
function outcome(res, intent) {
  if (res.status === 201 && res.data?.order) {
    intent.orderId = res.data.order.id;
    return { phase: 'purchased', final: true, refresh: true, note: `Purchased! Order ID: ${intent.orderId}` };
  }
  const code = errorCode(res);
  const caps = app.event.caps;
  const yours = intent.orderId ? ` Your order: ${intent.orderId}` : '';
  switch (code) {
    case 'rate_limited':
      return { phase: 'rate_limited', retryIn: (res.retryAfter ?? SECOND) + jitter(SECOND / 2),
        note: 'Lots of shoppers right now. We will retry automatically and keep your place.' };
    case 'busy':
      // Not admitted yet: the shopper's place in line and the wait, from the answer; same key,
      // after Retry-After (already jittered).
      return { phase: 'in_line', retryIn: (res.retryAfter ?? SECOND) + jitter(SECOND / 4), note: lineNote(res.data?.error) };
    case 'entry_required':
    case 'bad_ticket':
      // No (good) entry ticket: enter, then retry with the same key (twice at most in a row).
      intent.reentries = (intent.reentries ?? 0) + 1;
      if (intent.reentries > 2) {
        return { phase: 'error', note: 'Could not enter you in the sale. Reload the page and try again.' };
      }
      return { phase: 'entering', reenter: true, note: 'Entering you in the sale…' };
    case 'origin_unavailable':
      return { phase: 'unavailable', note: 'The store is briefly unavailable. Press Retry; you will not be charged twice.' };
    case 'order_expired':
      return { phase: 'idle', final: true, refresh: true,
        note: `Your order ${res.data?.error?.order?.id ?? ''} was not paid in time and has expired; the item went back on sale.` };
    case 'network':
      return { phase: 'unavailable', note: 'Could not reach the store. Check your connection and press Retry; you will not be charged twice.' };
    case 'item_limit_reached':
      return { phase: 'item_limit', final: true, resetIn: res.retryAfter,
        note: `You have reached today's limit for this item (${caps.per_item_per_day} per day). Try again tomorrow.${yours}` };
    case 'total_limit_reached':
      return { phase: 'idle', final: true, totalLimit: true, note: `You have reached this sale's limit of ${caps.total} items.${yours}` };
    case 'sold_out':
      return { phase: 'sold_out', final: true, refresh: true, note: `Sorry, this item just sold out.${yours}` };
    case 'unauthenticated':
      return { phase: 'signin', final: true, signin: true, note: 'Please sign in to buy.' };
    case 'not_started':
      return { phase: 'idle', final: true, refresh: true, note: 'The sale has not started yet.' };
    case 'paused':
      return { phase: 'idle', final: true, refresh: true, note: 'The sale is paused right now. Try again when it resumes.' };
    case 'ended':
      return { phase: 'idle', final: true, refresh: true, note: 'The sale has ended.' };
    default:
      return { phase: 'error', final: FINAL_ERRORS.has(code),
        note: `Something went wrong (${res.data?.error?.message ?? code}). Press Retry.` };
  }
}

// What a 503 busy says about the shopper's place: "About N shoppers ahead of you; about S s".
function lineNote(error) {
  const ahead = Number(error?.place ?? error?.ahead);
  const wait = Number(error?.wait_s);
  const retry = 'We will keep your place and retry automatically with the same order.';
  if (!Number.isFinite(ahead) || ahead < 0) return `You're in line. ${retry}`;
  const who = ahead === 0 ? 'You are next' : `About ${ahead} shopper${ahead === 1 ? '' : 's'} ahead of you`;
  const when = Number.isFinite(wait) && wait >= 0 ? `; about ${waitText(wait)}` : '';
  return `${who}${when}. ${retry}`;
}

const waitText = (s) => (s < 120 ? `${Math.max(1, Math.round(s))} s` : `${Math.round(s / 60)} min`);

// ---------------------------------------------------------------- entry
// A signed-in shopper enters the sale on opening the page: before the start they join the
// draw ("early"); after it, the line behind. The ticket is kept in memory only (the worker
// also sets it as an HttpOnly cookie); re-entering with it keeps the place.
function maybeEnter() {
  const ev = app.event;
  if (!ev || !app.user || ev.state === 'ended') return;
  if (app.entry.user === app.user && app.entry.phase !== 'none') return;
  enter();
}

function resetEntry() {
  const { entry } = app;
  clearTimeout(entry.timer);
  if (entry.widget != null) window.turnstile?.remove(entry.widget);
  Object.assign(entry, { phase: 'none', user: null, ticket: null, early: false, problem: '', widget: null, waiting: [] });
  $('entry-check').hidden = true;
  renderEntry();
}

async function enter() {
  const { entry } = app;
  if (!app.user || !app.event || entry.phase === 'entering' || entry.phase === 'check') return;
  clearTimeout(entry.timer);
  entry.user = app.user;
  const siteKey = app.event.turnstile_site_key;
  if (siteKey) {
    entry.phase = 'check';
    renderEntry();
    return showCheck(siteKey);
  }
  return sendEntry({});
}

async function sendEntry(body) {
  const { entry } = app;
  const user = app.user;
  entry.phase = 'entering';
  renderEntry();
  const headers = entry.ticket ? { 'Flashgate-Entry': entry.ticket } : {};
  const res = await api(`${EVENT_URL}/entry`, { method: 'POST', body, headers });
  if (user !== app.user) return;   // signed out or switched meanwhile
  if (res.ok && res.data?.ticket) {
    Object.assign(entry, { phase: 'in', ticket: res.data.ticket, early: res.data.early === true, problem: '' });
    $('entry-check').hidden = true;
    renderEntry();
    const waiting = entry.waiting.splice(0);
    for (const go of waiting) go();
    return;
  }
  const code = errorCode(res);
  if (code === 'unauthenticated') {
    resetEntry();
    return promptSignin();
  }
  if (code === 'ended' || code === 'unknown_event') {
    entry.phase = 'closed';
    return renderEntry();
  }
  entry.phase = 'retry';
  entry.problem = code === 'turnstile_failed'
    ? 'The check did not pass. Please try it again.'
    : 'Could not enter the sale just now. Retrying…';
  renderEntry();
  if (code === 'turnstile_failed') {
    entry.phase = 'check';
    return showCheck(app.event.turnstile_site_key);
  }
  entry.timer = setTimeout(() => { entry.phase = 'none'; enter(); }, (res.retryAfter ?? 3 * SECOND) + jitter(SECOND));
}

// Cloudflare Turnstile, loaded and shown only when the sale names a site key.
let turnstileLoading = null;
function loadTurnstile() {
  turnstileLoading ??= new Promise((ok, fail) => {
    const script = document.createElement('script');
    script.src = TURNSTILE_SCRIPT;
    script.async = true;
    script.onload = () => ok(window.turnstile);
    script.onerror = () => { turnstileLoading = null; fail(new Error('turnstile')); };
    document.head.append(script);
  });
  return turnstileLoading;
}

async function showCheck(siteKey) {
  const { entry } = app;
  const box = $('entry-check');
  box.hidden = false;
  let turnstile;
  try {
    turnstile = await loadTurnstile();
  } catch {
    entry.phase = 'retry';
    entry.problem = 'Could not load the check. Retrying…';
    renderEntry();
    entry.timer = setTimeout(() => { entry.phase = 'none'; enter(); }, 5 * SECOND + jitter(SECOND));
    return;
  }
  if (entry.widget != null) return turnstile.reset(entry.widget);
  entry.widget = turnstile.render(box, {
    sitekey: siteKey,
    callback: (token) => sendEntry({ turnstile: token }),
    'expired-callback': () => turnstile.reset(entry.widget),
  });
}

function renderEntry() {
  const { entry } = app;
  const ev = app.event;
  let text = '';
  if (entry.phase === 'in') {
    text = entry.early && ev?.state === 'scheduled'
      ? "You're in. The line is drawn when the sale opens."
      : entry.early ? "You're in: your place was drawn with the shoppers who entered before the start."
        : "You're in line for this sale.";
  } else if (entry.phase === 'check') {
    text = entry.problem || 'Please complete the check below to enter the sale.';
  } else if (entry.phase === 'entering') {
    text = 'Entering the sale…';
  } else if (entry.phase === 'retry') {
    text = entry.problem;
  }
  setText(byTestId('entry-status'), app.user ? text : '');
}

// ---------------------------------------------------------------- session
async function loadSession() {
  const res = await api('/api/session');
  if (res.ok) return setUser(res.data.user);
  if (res.status === 401) return signedOut(res.data?.error?.dev_signin === true);
  setText(byTestId('whoami'), 'Could not check your sign-in. Reload to try again.');
}

// Dev sign-in is a worker setting; the 401 from /api/session says whether it is on.
function signedOut(devSignin = app.signinAvailable) {
  app.signinAvailable = devSignin;
  setUser(null);
}

function setUser(user) {
  if (app.user !== undefined && user !== app.user) {   // another shopper: forget the last one's purchases
    for (const card of app.cards.values()) {
      clearTimeout(card.intent.timer);
      card.intent = freshIntent();
    }
    app.totalLimitReached = false;
  }
  if (user !== app.entry.user) resetEntry();
  app.user = user;
  setText(byTestId('whoami'), user ? `Signed in as ${user}` : 'Not signed in. Sign in to buy.');
  $('signout').hidden = !user;
  $('signin').hidden = Boolean(user) || !app.signinAvailable;
  maybeEnter();
  renderEntry();
  render();
}

async function promptSignin() {
  if (app.user !== null) await signedOut();   // the session expired, or was never checked
  say('Please sign in to buy.');
  if (app.signinAvailable) $('signin-user').focus();
}

async function signIn(event) {
  event.preventDefault();
  const user = $('signin-user').value.trim();
  if (!user) return;
  const submit = byTestId('signin-submit');
  submit.disabled = true;
  const res = await api('/api/dev/session', { method: 'POST', body: { user } });
  submit.disabled = false;
  if (res.ok) {
    setUser(res.data.user ?? user);
    say(`Signed in as ${app.user}.`);
    return;
  }
  if (res.status === 404) {
    app.signinAvailable = false;
    setUser(null);
  }
  say(`Sign-in failed: ${res.data?.error?.message ?? errorCode(res)}`);
}

async function signOut() {
  await api('/api/session', { method: 'DELETE' });
  await signedOut();
  say('Signed out.');
}

// ---------------------------------------------------------------- start
$('signin').addEventListener('submit', signIn);
$('signout').addEventListener('click', signOut);
document.addEventListener('visibilitychange', () => {
  if (document.hidden) clearTimeout(app.pollTimer);
  else schedulePoll(jitter(SECOND / 2));
});
setInterval(render, SECOND / 4);
loadSession();
loadEvent();
