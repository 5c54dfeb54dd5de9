// The shopper's journey from a placed order to a paid (or cancelled) one, in a real browser
// against the real worker (`wrangler dev`), a real redis-server and the shop's signed payment
// API (issue 20): buy; "Your orders" shows the order pending with a live pay-by countdown and
// a "Pay now" link; the shop pays it and the page shows it paid; another order is cancelled
// and its unit is bought again at once. Then a retry whose first answer was lost: the page
// finds the placed order by its Idempotency-Key instead of saying "sold out".
// Run: node --test --test-concurrency=1 tests/browser/
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { eventually, expectText, rfc3339, shopSignature, Stack, text } from './harness.mjs';

const SHOP_TOKEN = randomBytes(24).toString('hex');
const CHECKOUT = 'https://shop.example/checkout?order={id}&ref={ref}';

const fixture = (id, items) => ({
  id,
  name: 'Journey test sale',
  utc_offset: '+00:00',
  starts_at: rfc3339(Date.now() + 3600_000),
  ends_at: rfc3339(Date.now() + 4 * 3600_000),
  caps: { per_item_per_day: 1, total: 5, per_order_qty: 1 },
  items,
});

const pathOf = (r) => new URL(r.url()).pathname;
const PHONE = { viewport: { width: 360, height: 740 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true };

async function signIn(page, user) {
  await page.getByTestId('signin-user').fill(user);
  await page.getByTestId('signin-submit').click();
  await expectText(page, 'whoami', new RegExp(`Signed in as ${user}`));
}

async function expectButton(page, sku, label, enabled) {
  await eventually(async () => {
    const button = page.getByTestId(`buy-${sku}`);
    assert.match(await button.innerText(), label);
    assert.equal(await button.isEnabled(), enabled, `buy-${sku} should be ${enabled ? 'enabled' : 'disabled'}`);
  });
}

describe('the journey: orders, the shop pays and cancels, a retry finds its order', { timeout: 300_000 }, () => {
  const stack = new Stack({ SHOP_API_TOKEN: SHOP_TOKEN, CHECKOUT_URL: CHECKOUT });
  const EVENT = 'journey';
  const PAGE = `/?event=${EVENT}`;
  const ORDERS = `/api/events/${EVENT}/orders`;
  const isPurchase = (r) => pathOf(r) === ORDERS && r.request().method() === 'POST';
  let alice;
  let aliceOrder;

  before(async () => {
    await stack.up();
    await stack.createEvent(fixture(EVENT, [
      { sku: 'KB', name: 'Keyboard', price: 4999, currency: 'USD', stock: 2 },
      { sku: 'MS', name: 'Mouse', price: 1999, currency: 'USD', stock: 5 },
    ]));
    await stack.cli('event', 'start', EVENT);
  }, { timeout: 120_000 });

  after(() => stack.down());

  test('1-2 buy; "Your orders" shows it pending with a countdown and Pay now; the button tells the truth', async () => {
    alice = await stack.page();
    await alice.goto(PAGE);
    await expectText(alice, 'event-state', /^Live$/i);
    await signIn(alice, 'alice');
    await expectText(alice, 'orders-note', /^No orders yet\.$/);
    await sleep(300);
    const body = await alice.locator('body').innerText();
    assert.equal(body.match(/Signed in as alice/g)?.length, 1, `"Signed in as alice" shows once:\n${body}`);

    const answer = alice.waitForResponse(isPurchase);
    await alice.getByTestId('buy-KB').click();
    const response = await answer;
    assert.equal(response.status(), 201, await response.text());
    const { order } = await response.json();
    aliceOrder = order.id;
    await expectText(alice, 'status-KB', new RegExp(`Order ID: ${order.id}\\. Please pay by `));
    await expectButton(alice, 'KB', /^Bought: 1 of 1 today$/, false);

    await expectText(alice, `order-state-${order.id}`, /^Awaiting payment$/);
    await expectText(alice, `order-lines-${order.id}`, /^1 × Keyboard \(\$49\.99\)$/);
    const due = () => text(alice, `order-due-${order.id}`);
    await eventually(async () => assert.match(await due(), /^Pay within 1?\d:\d\d \(by \d{1,2}:\d\d\s[AP]M\)$/));
    const first = await due();
    await eventually(async () => assert.notEqual(await due(), first, 'the countdown ticks'), 3000);
    const pay = alice.getByTestId(`order-pay-${order.id}`);
    assert.ok(await pay.isVisible());
    const href = await pay.getAttribute('href');
    assert.match(href, new RegExp(`^https://shop\\.example/checkout\\?order=${order.id}&ref=[^&]+$`));
    // Screen readers hear state changes, not the countdown.
    const live = await alice.evaluate((id) => ({
      due: document.querySelector(`[data-testid="order-due-${id}"]`).closest('[aria-live]') !== null,
      news: document.querySelector('[data-testid="orders-news"]').getAttribute('aria-live'),
    }), order.id);
    assert.deepEqual(live, { due: false, news: 'polite' });
    await stack.screenshot(alice, 'journey-01-pending');
  });

  test('3 the shop\'s API pays it (signed); the open page shows it paid', async () => {
    const refused = await stack.shopCall('wrong-token-wrong-token', EVENT, aliceOrder, 'pay');
    assert.equal(refused.status, 401);
    assert.equal((await refused.json()).error.code, 'unauthenticated');
    const t = Math.floor(Date.now() / 1000);
    const nonce = randomBytes(12).toString('base64url');
    const paid = await stack.shopCall(SHOP_TOKEN, EVENT, aliceOrder, 'pay', { t, nonce });
    const paidAt = Date.now();
    assert.equal(paid.status, 200, await paid.clone().text());
    assert.deepEqual(await paid.json(), { order: aliceOrder, state: 'paid', changed: true });
    const replayed = await stack.shopCall(SHOP_TOKEN, EVENT, aliceOrder, 'pay', { t, nonce });
    assert.equal(replayed.status, 401, 'a replayed signature is refused');

    await expectText(alice, `order-state-${aliceOrder}`, /^Paid$/, 10_000);
    const seenAfter = Date.now() - paidAt;
    await expectText(alice, 'orders-news', new RegExp(`Order ${aliceOrder} is paid`));
    await expectText(alice, 'status-KB', new RegExp(`^Paid\\. Order ID: ${aliceOrder}\\.$`));
    assert.equal(await alice.getByTestId(`order-pay-${aliceOrder}`).isVisible(), false, 'no Pay now for a paid order');
    assert.equal(await alice.getByTestId(`order-due-${aliceOrder}`).isVisible(), false, 'no countdown for a paid order');
    console.log(`# paid order shown as paid on the open page after ${seenAfter} ms`);

    const again = await stack.shopCall(SHOP_TOKEN, EVENT, aliceOrder, 'pay');
    assert.deepEqual(await again.json(), { order: aliceOrder, state: 'paid', changed: false });
    const cancelPaid = await stack.shopCall(SHOP_TOKEN, EVENT, aliceOrder, 'cancel');
    assert.equal(cancelPaid.status, 409);
    assert.equal((await cancelPaid.json()).error.code, 'order_paid');
    await stack.screenshot(alice, 'journey-02-paid');
  });

  test('3b nothing pending: no polling; coming back to the page (visibilitychange) shows an order placed elsewhere', async () => {
    const gets = [];
    alice.on('request', (r) => { if (pathOf(r) === ORDERS && r.method() === 'GET') gets.push(Date.now()); });
    await sleep(6000);
    assert.equal(gets.length, 0, 'no orders polling while no order awaits payment');
    const elsewhere = await stack.buy('alice', 'MS', { event: EVENT });   // another device
    assert.equal(elsewhere.status, 201, await elsewhere.clone().text());
    const { order } = await elsewhere.json();
    await alice.evaluate(() => document.dispatchEvent(new Event('visibilitychange')));
    await expectText(alice, `order-state-${order.id}`, /^Awaiting payment$/, 5000);
    assert.equal(gets.length, 1);
    const first = await alice.getByTestId('orders-list').locator('li').first().getAttribute('data-testid');
    assert.equal(first, `order-${order.id}`, 'newest first');
  });

  test('4 a second order is cancelled through the API; another shopper buys its unit again within 2 s', async () => {
    const bob = await stack.page(PHONE);
    await bob.goto(PAGE);
    await signIn(bob, 'bob');
    const answer = bob.waitForResponse(isPurchase);
    await bob.getByTestId('buy-KB').click();
    const response = await answer;
    assert.equal(response.status(), 201, await response.text());
    const { order } = await response.json();
    await expectText(bob, `order-state-${order.id}`, /^Awaiting payment$/);
    const width = await bob.evaluate(() => document.documentElement.scrollWidth);
    assert.ok(width <= 360, `no sideways scrolling at 360 px with an order shown (content is ${width} px wide)`);
    await stack.screenshot(bob, 'journey-03-pending-phone');

    const soldOut = await stack.buy('carol', 'KB', { event: EVENT });
    assert.equal(soldOut.status, 410, 'the last unit is bob\'s');

    const cancelled = await stack.shopCall(SHOP_TOKEN, EVENT, order.id, 'cancel');
    const cancelledAt = Date.now();
    assert.equal(cancelled.status, 200, await cancelled.clone().text());
    assert.deepEqual(await cancelled.json(), { order: order.id, state: 'cancelled', changed: true });
    let rebought = null;
    let attempts = 0;
    while (!rebought && Date.now() - cancelledAt < 5000) {
      attempts++;
      const res = await stack.buy('carol', 'KB', { event: EVENT });
      if (res.status === 201) rebought = Date.now() - cancelledAt;
      else await sleep(150);
    }
    console.log(`# cancelled unit bought again after ${rebought} ms (${attempts} attempts)`);
    assert.ok(rebought !== null && rebought <= 2000, `bought again after ${rebought} ms`);

    await expectText(bob, `order-state-${order.id}`, /^Cancelled$/, 10_000);
    await expectText(bob, 'orders-news', /was cancelled/);
    await expectText(bob, 'status-KB', new RegExp(`^Your order ${order.id} was cancelled\\.$`));
    assert.equal(await bob.getByTestId(`order-pay-${order.id}`).isVisible(), false);
    const again = await stack.shopCall(SHOP_TOKEN, EVENT, order.id, 'cancel');
    assert.deepEqual(await again.json(), { order: order.id, state: 'cancelled', changed: false });
    const payCancelled = await stack.shopCall(SHOP_TOKEN, EVENT, order.id, 'pay');
    assert.equal(payCancelled.status, 410);
    assert.equal((await payCancelled.json()).error.code, 'order_cancelled');
    await stack.screenshot(bob, 'journey-03-cancelled');
    for (const page of [alice, bob]) assert.deepEqual(page.errors, [], 'no uncaught page errors');
    await bob.context().close();
  });

  describe('a retry whose first answer was lost finds its order', () => {
    const LOST = 'lost';
    const LOST_ORDERS = `/api/events/${LOST}/orders`;
    const isLostPurchase = (r) => pathOf(r) === LOST_ORDERS && r.method() === 'POST';
    let other;   // a second `wrangler dev` on the same origin: another isolate, which never saw the key

    before(async () => {
      await stack.createEvent({ ...fixture(LOST, [
        { sku: 'GP', name: 'Gamepad', price: 2999, currency: 'USD', stock: 2 },
        { sku: 'HD', name: 'Headset', price: 5999, currency: 'USD', stock: 5 },
        { sku: 'CM', name: 'Camera', price: 8999, currency: 'USD', stock: 5 },
      ]) });
      await stack.cli('event', 'start', LOST);
      other = await stack.addWorker();
    }, { timeout: 120_000 });

    /** dave's page; its order POSTs are handed to `handle(route, n)` (n = 0, 1, …); every
     * order POST and orders GET is recorded in order. */
    async function davePage(user, handle) {
      const page = await stack.page();
      const seen = [];
      page.on('request', (r) => {
        if (pathOf(r) === LOST_ORDERS) seen.push({ method: r.method(), key: r.headers()['idempotency-key'] });
      });
      await page.goto(`/?event=${LOST}`);
      await expectText(page, 'event-state', /^Live$/i);
      await signIn(page, user);
      let n = 0;
      await page.route(`**${LOST_ORDERS}`, (route) => (route.request().method() === 'POST' ? handle(route, n++) : route.continue()));
      return { page, seen };
    }

    test('sold out meanwhile, the retry reaches another isolate: the page shows the placed order', async () => {
      let placed = null;
      let retryStatus = null;
      const { page, seen } = await davePage('dave', async (route, n) => {
        if (n === 0) {
          // The request reaches the worker and is placed; its answer is lost on the way back.
          const response = await route.fetch();
          placed = { status: response.status(), body: await response.json() };
          return route.abort('connectionreset');
        }
        // The retry goes to the other worker (same origin, fresh isolate).
        const response = await route.fetch({ url: `${other}${LOST_ORDERS}` });
        retryStatus = response.status();
        return route.fulfill({ response });
      });
      await page.getByTestId('buy-GP').click();
      await expectText(page, 'status-GP', /Could not reach the store.*Retry/);
      await expectButton(page, 'GP', /^Retry$/, true);
      assert.equal(placed?.status, 201, JSON.stringify(placed));
      const orderId = placed.body.order.id;

      // The rest sells out, and the other worker's isolate knows it.
      const last = await stack.buy('erin', 'GP', { event: LOST, baseURL: other });
      assert.equal(last.status, 201, await last.text());
      await eventually(async () => {
        const ev = await (await fetch(`${other}/api/events/${LOST}`)).json();
        assert.equal(ev.items.find((i) => i.sku === 'GP').sold_out, true);
      });

      const retried = page.waitForResponse((r) => isLostPurchase(r.request()));
      await page.getByTestId('buy-GP').click();
      await retried;
      await expectText(page, 'status-GP', new RegExp(`Purchased! Order ID: ${orderId}\\. Please pay by `));
      assert.doesNotMatch(await text(page, 'status-GP'), /sold out/i);
      await expectText(page, `order-state-${orderId}`, /^Awaiting payment$/);
      const posts = seen.filter((s) => s.method === 'POST');
      assert.equal(posts.length, 2);
      assert.equal(posts[0].key, posts[1].key, 'the retry reuses the Idempotency-Key');
      assert.equal(placed.body.order.idempotency_key, posts[0].key);
      console.log(`# uncertain retry: the other isolate answered ${retryStatus}; the page shows order ${orderId} as placed`);
      if (retryStatus === 410) {
        const retry = seen.findLastIndex((s) => s.method === 'POST');
        assert.ok(seen.slice(retry + 1).some((s) => s.method === 'GET'), 'the page looked the key up in GET orders');
      }
      await stack.screenshot(page, 'journey-04-retry-found');
      assert.deepEqual(page.errors, []);
      await page.context().close();
    });

    test('a cap refusal of such a retry: the order is found, and the button says "Bought: 1 of 1 today"', async () => {
      let placedId = null;
      const { page } = await davePage('fay', async (route, n) => {
        if (n === 0) {
          const response = await route.fetch();
          placedId = (await response.json()).order?.id;
          return route.abort('timedout');
        }
        // The refusal an isolate that knows fay's cap (but not her key) would answer.
        return route.fulfill({ status: 403, contentType: 'application/json',
          body: JSON.stringify({ error: { code: 'item_limit_reached', message: 'daily limit for this item reached' } }) });
      });
      await page.getByTestId('buy-HD').click();
      await expectButton(page, 'HD', /^Retry$/, true);
      assert.ok(placedId);
      await page.getByTestId('buy-HD').click();
      await expectText(page, 'status-HD', new RegExp(`Purchased! Order ID: ${placedId}\\.`));
      await expectButton(page, 'HD', /^Bought: 1 of 1 today$/, false);
      await page.context().close();
    });

    test('control: a lost attempt that never reached the worker, then sold out, says sold out', async () => {
      const { page, seen } = await davePage('gus', async (route, n) => {
        if (n === 0) return route.abort('connectionreset');   // never reached the worker
        return route.fulfill({ status: 410, contentType: 'application/json',
          body: JSON.stringify({ error: { code: 'sold_out', message: 'sold out', sku: 'CM', remaining: 0 } }) });
      });
      await page.getByTestId('buy-CM').click();
      await expectButton(page, 'CM', /^Retry$/, true);
      await page.getByTestId('buy-CM').click();
      await expectText(page, 'status-CM', /^Sorry, this item just sold out\.$/);
      const retry = seen.findLastIndex((s) => s.method === 'POST');
      assert.ok(seen.slice(retry + 1).some((s) => s.method === 'GET'), 'the page looked the key up first');
      await page.context().close();
    });
  });
});
