// Real-browser tests of the sale page against the real worker (`wrangler dev`), a real
// redis-server origin and the operator CLI. Run: node --test --test-concurrency=1 tests/browser/
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { eventually, expectText, rfc3339, Stack, text } from './harness.mjs';

const EVENT = 'e2e';
const PAGE = `/?event=${EVENT}`;
const ORDERS_PATH = `/api/events/${EVENT}/orders`;
const PHONE = { viewport: { width: 360, height: 740 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true };

// KB (2 in stock) gets sold out; MS stays purchasable for the origin-outage scenario.
const fixture = () => ({
  id: EVENT,
  name: 'Browser test sale',
  utc_offset: '+00:00',
  starts_at: rfc3339(Date.now() + 3600_000),
  ends_at: rfc3339(Date.now() + 4 * 3600_000),
  caps: { per_item_per_day: 1, total: 5, per_order_qty: 1 },
  items: [
    { sku: 'KB', name: 'Keyboard', price: 4999, currency: 'USD', stock: 2 },
    { sku: 'MS', name: 'Mouse', price: 1999, currency: 'USD', stock: 5 },
  ],
});

const isOrder = (r) => new URL(r.url()).pathname === ORDERS_PATH && r.request().method() === 'POST';
const nextOrderResponse = (page) => page.waitForResponse(isOrder);

async function expectButton(page, sku, label, enabled) {
  await eventually(async () => {
    const button = page.getByTestId(`buy-${sku}`);
    assert.match(await button.innerText(), label);
    assert.equal(await button.isEnabled(), enabled, `buy-${sku} should be ${enabled ? 'enabled' : 'disabled'}`);
  });
}

/** Every order POST the page sends, with its Idempotency-Key. */
function recordOrders(page) {
  const sent = [];
  page.on('request', (request) => {
    if (new URL(request.url()).pathname === ORDERS_PATH && request.method() === 'POST') {
      sent.push({ key: request.headers()['idempotency-key'], body: request.postDataJSON() });
    }
  });
  return sent;
}

async function signIn(page, user) {
  await page.getByTestId('signin-user').fill(user);
  await page.getByTestId('signin-submit').click();
  await expectText(page, 'whoami', new RegExp(`Signed in as ${user}`));
}

describe('sale page', { timeout: 240_000 }, () => {
  const stack = new Stack();
  let alice;        // the main shopper's page, kept open across the scenarios (never reloaded)
  let aliceOrders;  // order requests alice's page sent
  let carol;        // a phone-sized page
  let purchaseKey;  // the Idempotency-Key of alice's successful purchase
  let tab;          // alice's second tab, opened before her purchase

  before(async () => {
    await stack.up();
    await stack.createEvent(fixture());
  }, { timeout: 120_000 });

  after(async () => {
    await stack.down();
  });

  const untilLive = () => eventually(async () => {
    const res = await fetch(`${stack.baseURL}/api/events/${EVENT}`);
    assert.equal(res.ok && (await res.json()).state, 'live');
  });

  test('static files carry the caching headers from static/_headers', async () => {
    const page = await fetch(`${stack.baseURL}${PAGE}`);
    assert.equal(page.status, 200);
    assert.equal(page.headers.get('cache-control'), 'public, max-age=10, must-revalidate');
    const html = await page.text();
    const assets = [...html.matchAll(/\/assets\/[\w.-]+\.(?:js|css)/g)].map((m) => m[0]);
    assert.equal(assets.length, 2, 'index.html references one JS and one CSS file');
    for (const asset of assets) {
      const res = await fetch(`${stack.baseURL}${asset}`);
      assert.equal(res.status, 200, asset);
      assert.equal(res.headers.get('cache-control'), 'public, max-age=31536000, immutable', asset);
    }
  });

  test('01 upcoming: countdown shown, buy button disabled', async () => {
    alice = await stack.page();
    aliceOrders = recordOrders(alice);
    await alice.goto(PAGE);
    await expectText(alice, 'event-name', /^Browser test sale$/);
    await expectText(alice, 'event-state', /^Upcoming$/i);
    await expectText(alice, 'countdown', /^Starts in \d{1,2}(:\d\d){1,2}$/);
    await expectButton(alice, 'KB', /^Starts in /, false);
    await expectText(alice, 'remaining-KB', /2 of 2 left/);
    assert.match(await alice.getByTestId('item-KB').innerText(), /\$49\.99/);
    await eventually(async () => assert.ok(await alice.getByTestId('signin-user').isVisible(), 'sign-in box shown when signed out'));
    await alice.evaluate(() => { window.notReloaded = true; });
    await stack.screenshot(alice, '01-upcoming');
  });

  test('02 live: an early start by the operator reaches the open page without a reload', async () => {
    await stack.cli('event', 'start', EVENT);
    const started = Date.now();
    await expectText(alice, 'event-state', /^Live$/i, 12_000);
    assert.ok(Date.now() - started <= 10_000, `went live after ${Date.now() - started} ms`);
    await expectButton(alice, 'KB', /^Buy$/, true);
    await expectText(alice, 'countdown', /^Ends in /);
    assert.equal(await alice.evaluate(() => window.notReloaded), true, 'the page was not reloaded');
    await stack.screenshot(alice, '02-live');
  });

  test('03 paused and resumed by the operator', async () => {
    await stack.cli('event', 'pause', EVENT);
    await expectText(alice, 'event-state', /^Paused$/i, 12_000);
    await expectButton(alice, 'KB', /^Paused$/, false);
    await stack.screenshot(alice, '03-paused');
    await stack.cli('event', 'resume', EVENT);
    await expectText(alice, 'event-state', /^Live$/i, 12_000);
    await expectButton(alice, 'KB', /^Buy$/, true);
  });

  test('04 purchased: sign in with the page, double-click Buy, see the order id', async () => {
    const refused = nextOrderResponse(alice);
    await alice.getByTestId('buy-KB').click();
    assert.equal((await refused).status(), 401);
    await expectText(alice, 'status-KB', /Please sign in to buy/);
    await eventually(async () => assert.equal(await alice.evaluate(() => document.activeElement?.dataset.testid), 'signin-user'));

    await signIn(alice, 'alice');
    tab = await stack.page();
    await tab.goto(PAGE);
    await signIn(tab, 'alice');
    await expectText(tab, 'orders-note', /^No orders yet\.$/);
    const earlier = aliceOrders.length;
    const answer = nextOrderResponse(alice);
    await alice.getByTestId('buy-KB').dblclick();
    const response = await answer;
    assert.equal(response.status(), 201, await response.text());
    const { order } = await response.json();
    await expectText(alice, 'status-KB', new RegExp(`Order ID: ${order.id}`));
    await expectButton(alice, 'KB', /^Bought: 1 of 1 today$/, false);   // the daily cap is 1
    await expectText(alice, 'remaining-KB', /^1 of 2 left$/);
    await sleep(500); // a second request from the double click would have gone out by now
    const clicks = aliceOrders.slice(earlier);
    const keys = new Set(clicks.map((o) => o.key));
    assert.equal(keys.size, 1, `one Idempotency-Key for the double click, saw ${[...keys]}`);
    assert.match(clicks[0].key, /^[A-Za-z0-9_-]{8,64}$/);
    assert.notEqual(clicks[0].key, aliceOrders[0].key, 'the refused attempt\'s key was not kept');
    assert.deepEqual(clicks[0].body, { items: [{ sku: 'KB', qty: 1 }] });
    purchaseKey = clicks[0].key;
    await stack.screenshot(alice, '04-purchased');
  });

  test('05 item limit: buying the same item again (in a tab opened before) is refused; a fresh page knows', async () => {
    const tabOrders = recordOrders(tab);
    await expectButton(tab, 'KB', /^Buy$/, true);
    const answer = nextOrderResponse(tab);
    await tab.getByTestId('buy-KB').click();
    const response = await answer;
    assert.equal(response.status(), 403);
    assert.equal((await response.json()).error.code, 'item_limit_reached');
    await expectText(tab, 'status-KB', /today's limit for this item/);
    await expectButton(tab, 'KB', /^Daily limit reached$/, false);
    assert.notEqual(tabOrders.at(-1).key, purchaseKey, 'a new purchase intent gets a new key');
    await stack.screenshot(tab, '05-item-limit');
    assert.deepEqual(tab.errors, []);
    await tab.reload();
    await expectButton(tab, 'KB', /^Bought: 1 of 1 today$/, false);   // from "Your orders"
    await expectButton(tab, 'MS', /^Buy$/, true);
    await tab.context().close();
  });

  test('06 sold out: bob buys the last unit through the API, the pages show sold out', async () => {
    const token = await stack.mintToken('bob');
    const res = await fetch(`${stack.baseURL}${ORDERS_PATH}`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json', 'Idempotency-Key': 'bob-kb-000001' },
      body: JSON.stringify({ items: [{ sku: 'KB', qty: 1 }] }),
    });
    assert.equal(res.status, 201, await res.text());

    await expectButton(alice, 'KB', /^Sold out$/, false);
    await expectText(alice, 'remaining-KB', /Sold out \(0 of 2 left\)/);
    await stack.screenshot(alice, '06-sold-out');

    carol = await stack.page(PHONE);
    await carol.goto(PAGE);
    await expectText(carol, 'event-state', /^Live$/i);
    await expectButton(carol, 'KB', /^Sold out$/, false);
    await expectButton(carol, 'MS', /^Buy$/, true);
    const width = await carol.evaluate(() => document.documentElement.scrollWidth);
    assert.ok(width <= 360, `no sideways scrolling at 360 px (content is ${width} px wide)`);
    await stack.screenshot(carol, '06-sold-out-phone');
  });

  test('07 origin unavailable: Retry with the same key succeeds once redis is back', async () => {
    await stack.stopRedis();
    const failed = nextOrderResponse(alice);
    await alice.getByTestId('buy-MS').click();
    const first = await failed;
    assert.equal(first.status(), 503, await first.text());
    assert.equal((await first.json()).error.code, 'origin_unavailable');
    await expectText(alice, 'status-MS', /briefly unavailable.*Retry/);
    await expectButton(alice, 'MS', /^Retry$/, true);
    await expectText(alice, 'global-status', /temporarily unavailable/); // the event poll noticed too
    await stack.screenshot(alice, '07-origin-unavailable');

    await stack.startRedis();            // same port; redis kept nothing, so load the sale again
    await stack.createEvent(fixture());
    await stack.cli('event', 'start', EVENT);
    await untilLive();                   // the worker caches the sale for ~1 s; don't race a stale copy
    const retried = nextOrderResponse(alice);
    await alice.getByTestId('buy-MS').click();
    const second = await retried;
    assert.equal(second.status(), 201, await second.text());
    const { order } = await second.json();
    assert.equal(first.request().headers()['idempotency-key'], second.request().headers()['idempotency-key'],
      'Retry reuses the Idempotency-Key of the failed attempt');
    await expectText(alice, 'status-MS', new RegExp(`Order ID: ${order.id}`));
    await eventually(async () => assert.doesNotMatch(await text(alice, 'global-status'), /unavailable|no sale/));
    await stack.screenshot(alice, '08-recovered');
  });

  test('08 rate limited (429 stubbed in the browser): waits, then retries with the same key', async () => {
    await signIn(carol, 'carol');
    let stubbed = 0;
    await carol.route(`**${ORDERS_PATH}`, (route) => {
      if (route.request().method() !== 'POST' || stubbed++) return route.continue();   // GET is "Your orders"
      return route.fulfill({
        status: 429,
        headers: { 'Retry-After': '2', 'Content-Type': 'application/json' },
        body: JSON.stringify({ error: { code: 'rate_limited', message: 'too many attempts; slow down' } }),
      });
    });
    const carolOrders = recordOrders(carol);
    const placed = carol.waitForResponse((r) => isOrder(r) && r.status() === 201, { timeout: 15_000 });
    await carol.getByTestId('buy-MS').click();
    await expectButton(carol, 'MS', /^Busy, retrying in [1-3] s$/, false);
    await expectText(carol, 'status-MS', /retry automatically/);
    await stack.screenshot(carol, '09-rate-limited-phone');
    const { order } = await (await placed).json();
    await expectText(carol, 'status-MS', new RegExp(`Order ID: ${order.id}`));
    assert.equal(carolOrders.length, 2);
    assert.equal(carolOrders[0].key, carolOrders[1].key, 'the automatic retry reuses the key');
  });

  test('08 busy (shed by admission control at the worker): waits, then retries with the same key', async () => {
    // The fleet's figures say a million candidates a second against a budget of 1.
    const now = Math.floor(Date.now() / 1000);
    const fleet = "for i = 0, 40 do redis.call('HSET', 'fg:{e2e}:fleet:' .. (ARGV[1] + i), 'reports', 50, 'candidates', 1000000) end";
    const clear = "for i = 0, 40 do redis.call('DEL', 'fg:{e2e}:fleet:' .. (ARGV[1] + i)) end";
    await stack.redisCli('EVAL', fleet, '0', String(now - 2));
    await stack.cli('event', 'budget', EVENT, '1');
    const stats = async () => (await (await fetch(`${stack.baseURL}/api/stats`, {
      headers: { Authorization: `Bearer ${stack.operatorToken}` } })).json()).admission?.[EVENT];
    // The worker picks the figures up at its next snapshot refresh (the page's polling does it).
    await eventually(async () => assert.ok((await stats())?.p < 0.01, JSON.stringify(await stats())), 12_000);
    const erin = await stack.page(PHONE);
    await erin.goto(PAGE);
    await signIn(erin, 'erin');
    const erinOrders = recordOrders(erin);
    const shed = erin.waitForResponse((r) => isOrder(r) && r.status() === 503);
    await erin.getByTestId('buy-MS').click();
    const first = await shed;
    assert.equal((await first.json()).error.code, 'busy');
    await expectButton(erin, 'MS', /^In line, retrying in [1-3] s$/, false);
    await expectText(erin, 'status-MS', /in line.*retry automatically/i);
    assert.doesNotMatch(await text(erin, 'status-MS'), /^Busy/);
    await stack.screenshot(erin, '09b-busy-phone');
    // The crowd goes: the page's own retry gets through with the same key.
    const placed = erin.waitForResponse((r) => isOrder(r) && r.status() === 201, { timeout: 20_000 });
    await stack.redisCli('EVAL', clear, '0', String(now - 2));
    await stack.cli('event', 'budget', EVENT, '5000');
    const { order } = await (await placed).json();
    await expectText(erin, 'status-MS', new RegExp(`Order ID: ${order.id}`));
    assert.ok(erinOrders.length >= 2);
    assert.ok(erinOrders.every((o) => o.key === erinOrders[0].key), 'every retry reuses the key');
    assert.deepEqual(erin.errors, [], 'no uncaught page errors');
    await erin.context().close();
  });

  test('09 ended: every button says so', async () => {
    await stack.cli('event', 'end', EVENT);
    await expectText(alice, 'event-state', /^Ended$/i, 12_000);
    await expectButton(alice, 'MS', /^Sale ended$/, false);
    await stack.screenshot(alice, '10-ended');
    for (const page of [alice, carol].filter(Boolean)) assert.deepEqual(page.errors, [], 'no uncaught page errors');
  });
});
