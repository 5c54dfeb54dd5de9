// flashgate sale page: one ES module, no dependencies, no build step.
// It polls GET /api/events/{id} (edge-cached, ~1 s stale at most), enters a signed-in shopper
// in the sale with POST /api/events/{id}/entry (behind a Turnstile check when the sale names a
// site key), and places orders with POST /api/events/{id}/orders, one Idempotency-Key per
// purchase intent, carrying the entry ticket (header Flashgate-Entry; the HttpOnly cookie too).
// A signed-in shopper's orders come from GET /api/events/{id}/orders ("Your orders": state,
// pay-by countdown, "Pay now"); a retry whose first attempt had no known outcome looks its key
// up there before it reports a refusal (the first attempt may have been placed).

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
// Refusals that a retry of an attempt with an unknown outcome checks against the shopper's
// orders first: the lost first attempt may have taken the last unit, or the cap.
const LOOKUP_ERRORS = new Set(['sold_out', 'item_limit_reached', 'total_limit_reached']);
const ORDER_LABELS = { pending: 'Awaiting payment', paid: 'Paid', expired: 'Expired', cancelled: 'Cancelled' };
const ORDER_NEWS = {
  paid: (id) => `Order ${id} is paid. Thank you!`,
  cancelled: (id) => `Order ${id} was cancelled; its items went back on sale.`,
  expired: (id) => `Order ${id} was not paid in time and has expired.`,
};
const CARD_NOTES = {
  paid: (id) => `Paid. Order ID: ${id}.`,
  cancelled: (id) => `Your order ${id} was cancelled.`,
  expired: (id) => `Your order ${id} was not paid in time and has expired.`,
};
const SECOND = 1000;
const PURCHASE_TIMEOUT = 15 * SECOND;   // then the outcome is unknown: Retry reuses the key
const ORDERS_POLL = 4 * SECOND;         // while a pending order is shown
const TURNSTILE_SCRIPT = 'https://challenges.cloudflare.com/turnstile/v0/api.js?render=explicit';
const dateRange = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });
const clockTime = new Intl.DateTimeFormat(undefined, { timeStyle: 'short' });

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
  // The shopper's orders: list = null until the first answer; rows: id → row elements.
  orders: { user: null, list: null, loading: null, next: null, timer: 0, failed: false, rows: new Map() },
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

async function api(path, { method = 'GET', body, headers = {}, timeoutMs } = {}) {
  const init = { method, credentials: 'same-origin', headers: { Accept: 'application/json', ...headers } };
  if (timeoutMs && AbortSignal.timeout) init.signal = AbortSignal.timeout(timeoutMs);
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
  if (app.orders.list) renderOrders();   // item names for the order lines
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
  renderOrderClocks();
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
  const bought = boughtToday(item.sku, ev, intent);
  if ((phase === 'purchased' || phase === 'idle') && bought >= ev.caps.per_item_per_day) {
    return view('purchased', `Bought: ${bought} of ${ev.caps.per_item_per_day} today`, true);
  }
  if (app.totalLimitReached) {
    return view('total-limit', 'Sale limit reached', true, intent.note || `You have bought the most this sale allows (${ev.caps.total} items).`);
  }
  if (ev.state === 'scheduled') return view('upcoming', startsInText(ev), true);
  if (ev.state === 'paused') return view('paused', 'Paused', true);
  return phase === 'purchased' ? view('purchased', 'Buy again', false) : view('live', 'Buy', false);
}

// The sale's calendar day (its utc_offset) of a time: caps count per such day.
function eventDay(ev, ms) {
  const m = /^([+-])(\d\d):(\d\d)$/.exec(ev.utc_offset ?? '');
  const offset = m ? (m[1] === '-' ? -1 : 1) * (Number(m[2]) * 60 + Number(m[3])) * 60 * SECOND : 0;
  return Math.floor((ms + offset) / (86400 * SECOND));
}

// Units of `sku` this shopper holds from today (pending or paid orders: a cancel or an expiry
// gives the cap back): from "Your orders", and from the last 201's counters until the list
// has caught up with that order.
function boughtToday(sku, ev, intent) {
  const today = eventDay(ev, serverNow());
  const list = app.orders.list ?? [];
  const fromList = list
    .filter((o) => (o.state === 'pending' || o.state === 'paid') && eventDay(ev, Date.parse(o.created_at)) === today)
    .reduce((n, o) => n + o.lines.filter((l) => l.sku === sku).reduce((m, l) => m + l.qty, 0), 0);
  const fresh = intent.day === today && intent.orderId && !list.some((o) => o.id === intent.orderId);
  return fresh ? Math.max(fromList, intent.today ?? 0) : fromList;
}

// ---------------------------------------------------------------- buying
// key: the Idempotency-Key, kept until a final answer; uncertain: an attempt with this key got
// no known outcome (so it may have been placed); lookupKey: a key whose order could not be
// looked up yet (each orders answer is checked for it); today/day: the item's count on that
// sale day, from the 201 (until "Your orders" lists the order).
function freshIntent() {
  return { phase: 'idle', note: '', key: null, orderId: null, retryAt: 0, timer: 0,
    uncertain: false, lookupKey: null, today: null, day: null, shown: null };
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
  const key = intent.key;
  const user = app.user;
  const res = await api(`${EVENT_URL}/orders`, { method: 'POST', headers, body: { items: [{ sku, qty: 1 }] }, timeoutMs: PURCHASE_TIMEOUT });
  let result = outcome(res, intent, sku);
  if (intent.uncertain && LOOKUP_ERRORS.has(errorCode(res))) result = await checkOrders(sku, intent, key, result);
  if (user !== app.user || app.cards.get(sku).intent !== intent) return;   // signed out or switched meanwhile
  if (unknownOutcome(res)) intent.uncertain = true;
  else if (result.final) intent.uncertain = false;
  settle(sku, intent, result);
}

// No answer, or one that does not say whether the order was placed (it may have run at the
// origin): the next attempt with the same key must not trust a refusal blindly.
function unknownOutcome(res) {
  const code = errorCode(res);
  return res.status === 0 || (res.status >= 500 && code !== 'busy');
}

// A refusal of a retry whose earlier attempt had no known outcome: the shopper's orders say
// whether that attempt was placed. Found: the order as placed. Not found: the refusal. The
// orders could not be read: the refusal, with a caveat; later orders answers are still checked.
async function checkOrders(sku, intent, key, refusal) {
  const list = await loadOrders();
  if (!list) {
    intent.lookupKey = key;
    return { ...refusal, note: `${refusal.note} We could not yet check whether your earlier attempt went through; “Your orders” below will show it if it did.` };
  }
  const order = list.find((o) => o.idempotency_key === key);
  return order ? foundOrder(sku, intent, order, refusal) : refusal;
}

// What a card shows for an order found by its key after a refusal. Its units of the item count
// towards today's cap (a lower bound: other orders of today may count too; a cap refusal says
// the cap is reached).
function foundOrder(sku, intent, order, refusal) {
  const ended = order.state === 'cancelled' || order.state === 'expired';
  Object.assign(intent, { orderId: order.id, shown: order.state === 'pending' ? null : order.state, lookupKey: null });
  if (ended) return { phase: 'idle', final: true, refresh: true, note: CARD_NOTES[order.state](order.id) };
  const cap = app.event.caps.per_item_per_day;
  const units = order.lines.filter((l) => l.sku === sku).reduce((n, l) => n + l.qty, 0);
  Object.assign(intent, { day: eventDay(app.event, serverNow()),
    today: refusal.code === 'item_limit_reached' ? cap : Math.min(cap, units) });
  if (refusal.code === 'total_limit_reached') app.totalLimitReached = true;
  return { phase: 'purchased', final: true, refresh: true,
    note: order.state === 'paid' ? CARD_NOTES.paid(order.id) : placedNote(order) };
}

function placedNote(order) {
  const due = order.pay_by ? ` Please pay by ${clockTime.format(new Date(order.pay_by))}.` : '';
  return `Purchased! Order ID: ${order.id}.${due}`;
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
  if (result.orders) loadOrders();
  render();
}

// Maps one order answer to the item's next phase and message.
function outcome(res, intent, sku) {
  if (res.status === 201 && res.data?.order) {
    const { order, counters } = res.data;
    Object.assign(intent, { orderId: order.id, shown: null });
    const mine = counters?.items?.find((c) => c.sku === sku);
    Object.assign(intent, { today: mine?.today ?? null, day: eventDay(app.event, serverNow()), lookupKey: null });
    if (counters?.total_cap && counters.total >= counters.total_cap) app.totalLimitReached = true;
    return { phase: 'purchased', final: true, refresh: true, orders: true, note: placedNote(order) };
  }
  const code = errorCode(res);
  const refusal = (result) => ({ code, ...result });
  const caps = app.event.caps;
  const yours = intent.orderId ? ` Your order: ${intent.orderId}` : '';
  switch (code) {
    case 'rate_limited':
      return { phase: 'rate_limited', retryIn: (res.retryAfter ?? SECOND) + jitter(SECOND / 2),
        note: 'Lots of shoppers right now. We will retry automatically and keep your place.' };
    case 'busy':
      // Not admitted yet: the shopper's place in line and the wait, from the answer; same key,
      // after the answer's retry_ms (already jittered: when the place is due, if soon), or
      // after Retry-After.
      return { phase: 'in_line', note: lineNote(res.data?.error),
        retryIn: Number.isFinite(res.data?.error?.retry_ms) ? res.data.error.retry_ms
          : (res.retryAfter ?? SECOND) + jitter(SECOND / 4) };
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
      return refusal({ phase: 'item_limit', final: true, resetIn: res.retryAfter,
        note: `You have reached today's limit for this item (${caps.per_item_per_day} per day). Try again tomorrow.${yours}` });
    case 'total_limit_reached':
      return refusal({ phase: 'idle', final: true, totalLimit: true, note: `You have reached this sale's limit of ${caps.total} items.${yours}` });
    case 'sold_out':
      return refusal({ phase: 'sold_out', final: true, refresh: true, note: `Sorry, this item just sold out.${yours}` });
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

// ---------------------------------------------------------------- the shopper's orders
// GET /api/events/{id}/orders: one origin command, never cached. Loaded on sign-in, after a
// purchase, when the page becomes visible again, and every few seconds while an order awaits
// payment (so a payment or a cancel made by the shop shows up). Loads never overlap: a load
// asked for during another starts after it, so it sees everything done before it was asked.
function loadOrders() {
  const o = app.orders;
  if (!app.user) return Promise.resolve(null);
  o.next ??= (o.loading ?? Promise.resolve()).then(() => {
    o.next = null;
    o.loading = fetchOrders().finally(() => { o.loading = null; });
    return o.loading;
  });
  return o.next;
}

// Resolves to the list, or null when it could not be read.
async function fetchOrders() {
  const o = app.orders;
  const user = app.user;
  if (!user) return null;
  clearTimeout(o.timer);
  const sent = Date.now();
  const res = await api(`${EVENT_URL}/orders`, { timeoutMs: 10 * SECOND });
  if (user !== app.user) return null;
  if (res.ok && Array.isArray(res.data?.orders)) {
    if (res.data.server_time) noteClock(res.data.server_time, sent, Date.now());
    applyOrders(res.data.orders);
  } else if (res.status === 401) {
    promptSignin();
    return null;
  } else {
    o.failed = true;
    renderOrders();
  }
  scheduleOrders(res);
  return res.ok ? o.list : null;
}

function scheduleOrders(res) {
  const o = app.orders;
  clearTimeout(o.timer);
  if (document.hidden || !app.user) return;
  if (!res.ok) o.timer = setTimeout(loadOrders, (res.retryAfter ?? 5 * SECOND) + jitter(2 * SECOND));
  else if (o.list.some((order) => order.state === 'pending')) o.timer = setTimeout(loadOrders, ORDERS_POLL + jitter(SECOND));
}

function resetOrders(user) {
  const o = app.orders;
  clearTimeout(o.timer);
  for (const row of o.rows.values()) row.root.remove();
  Object.assign(o, { user, list: null, failed: false, rows: new Map() });
  setText(byTestId('orders-news'), '');
  renderOrders();
  if (user) loadOrders();
}

function applyOrders(list) {
  const o = app.orders;
  const before = new Map((o.list ?? []).map((order) => [order.id, order.state]));
  const news = [];
  for (const order of list) {
    const was = before.get(order.id);
    if (was && was !== order.state && ORDER_NEWS[order.state]) news.push(ORDER_NEWS[order.state](order.id));
  }
  o.list = list;
  o.failed = false;
  // A refusal that could not be checked against the orders earlier: check it now.
  for (const [sku, { intent }] of app.cards) {
    const order = intent.lookupKey && list.find((x) => x.idempotency_key === intent.lookupKey);
    if (order) {
      const result = foundOrder(sku, intent, order, { code: intent.phase === 'item_limit' ? 'item_limit_reached' : '' });
      Object.assign(intent, { phase: result.phase, note: result.note });
    }
  }
  // A card that reports an order follows its state (the shop paid or cancelled it, it expired).
  for (const { intent } of app.cards.values()) {
    const order = intent.orderId && list.find((x) => x.id === intent.orderId);
    if (order && order.state !== 'pending' && intent.shown !== order.state) {
      intent.shown = order.state;
      intent.note = CARD_NOTES[order.state](order.id);
      if (intent.phase === 'purchased' && order.state !== 'paid') intent.phase = 'idle';
    }
  }
  // Only state changes are announced (the countdowns are not in a live region).
  if (news.length) setText(byTestId('orders-news'), news.join(' '));
  renderOrders();
  render();
}

function renderOrders() {
  const o = app.orders;
  const panel = $('orders');
  panel.hidden = !app.user;
  if (!app.user) return;
  const list = o.list ?? [];
  const note = o.list === null ? (o.failed ? 'Could not load your orders. Retrying…' : 'Loading your orders…')
    : o.failed ? 'Could not refresh your orders. Retrying…'
      : list.length ? '' : 'No orders yet.';
  setText(byTestId('orders-note'), note);
  const keep = new Set(list.map((order) => order.id));
  for (const [id, row] of o.rows) {
    if (!keep.has(id)) {
      row.root.remove();
      o.rows.delete(id);
    }
  }
  const ul = $('orders-list');
  list.forEach((order, i) => {   // newest first, as listed; rows in place stay (and keep focus)
    const row = o.rows.get(order.id) ?? addOrderRow(order.id);
    describeOrder(row, order);
    if (ul.children[i] !== row.root) ul.insertBefore(row.root, ul.children[i] ?? null);
  });
  renderOrderClocks();
}

function addOrderRow(id) {
  const root = $('order-template').content.firstElementChild.cloneNode(true);
  const part = (selector, testid) => {
    const el = root.querySelector(selector);
    el.dataset.testid = `${testid}-${id}`;
    return el;
  };
  const row = {
    root,
    id: part('.order-id', 'order-id'),
    state: part('.order-state', 'order-state'),
    lines: part('.order-lines', 'order-lines'),
    due: part('.order-due', 'order-due'),
    pay: part('.pay', 'order-pay'),
    order: null,
  };
  root.dataset.testid = `order-${id}`;
  setText(row.id, `Order ${id}`);
  app.orders.rows.set(id, row);
  return row;
}

function describeOrder(row, order) {
  row.order = order;
  row.root.dataset.state = order.state;
  setText(row.state, ORDER_LABELS[order.state] ?? order.state);
  const names = new Map((app.event?.items ?? []).map((i) => [i.sku, i.name]));
  setText(row.lines, order.lines.map((l) => `${l.qty} × ${names.get(l.sku) ?? l.sku} (${money({ amount: l.unit_price, currency: l.currency })})`).join(', '));
  const payable = order.state === 'pending' && typeof order.checkout_url === 'string' && /^https?:/i.test(order.checkout_url);
  row.pay.hidden = !payable;
  if (payable && row.pay.getAttribute('href') !== order.checkout_url) row.pay.href = order.checkout_url;
  if (payable) row.pay.setAttribute('aria-label', `Pay now for order ${order.id}`);
}

// The pay-by countdowns, on every render tick. Not a live region: a screen reader hears the
// state changes (orders-news), not every second.
function renderOrderClocks() {
  let due = false;
  for (const row of app.orders.rows.values()) {
    const { order } = row;
    let text = '';
    if (order.state === 'pending' && order.pay_by) {
      const left = Date.parse(order.pay_by) - serverNow();
      text = left > 0 ? `Pay within ${duration(left)} (by ${clockTime.format(new Date(order.pay_by))})` : 'Payment time is up…';
      if (left <= 0) due = true;
    } else if (order.state === 'pending') {
      text = 'Awaiting payment';
    }
    setText(row.due, text);
    row.due.hidden = !text;
  }
  // A pay-by just passed: ask again soon (the sweep turns the order to expired).
  const o = app.orders;
  if (due && !o.loading && !o.next && !document.hidden && Date.now() - (o.dueAsked ?? 0) > 5 * SECOND) {
    o.dueAsked = Date.now();
    loadOrders();
  }
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
  // Said once, here (a live region, so signing in is announced); not repeated in the banner.
  setText(byTestId('whoami'), user ? `Signed in as ${user}` : 'Not signed in. Sign in to buy.');
  $('signout').hidden = !user;
  $('signin').hidden = Boolean(user) || !app.signinAvailable;
  if (user !== app.orders.user) resetOrders(user);
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
    if (!app.eventProblem) say('');
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
  if (document.hidden) {
    clearTimeout(app.pollTimer);
    clearTimeout(app.orders.timer);
  } else {
    schedulePoll(jitter(SECOND / 2));
    loadOrders();
  }
});
setInterval(render, SECOND / 4);
loadSession();
loadEvent();
