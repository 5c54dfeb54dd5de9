// The sale page's entry and line, in a real browser against the real worker (`wrangler dev`)
// and a real redis-server: a shopper enters before the start ("You're in. The line is drawn
// when the sale opens."), waits in line after it (the place and wait from 503 `busy`
// answers, retried with the same Idempotency-Key and the entry ticket), then buys. With a
// Turnstile site key the page shows the check and enters only once it passes (the widget is a
// stand-in served in place of Cloudflare's script, and siteverify a stand-in on a local port).
// Run: node --test --test-concurrency=1 tests/browser/
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { after, before, describe, test } from 'node:test';
import { eventually, expectText, rfc3339, Stack, text } from './harness.mjs';

const fixture = (id) => ({
  id,
  name: 'Line test sale',
  utc_offset: '+00:00',
  starts_at: rfc3339(Date.now() + 3600_000),
  ends_at: rfc3339(Date.now() + 4 * 3600_000),
  caps: { per_item_per_day: 1, total: 5, per_order_qty: 1 },
  items: [{ sku: 'KB', name: 'Keyboard', price: 4999, currency: 'USD', stock: 5 }],
});

const path = (r) => new URL(r.url()).pathname;

async function signIn(page, user) {
  await page.getByTestId('signin-user').fill(user);
  await page.getByTestId('signin-submit').click();
  await expectText(page, 'whoami', new RegExp(`Signed in as ${user}`));
}

/** Every request to `pathname` the page sends: its headers. */
function record(page, pathname) {
  const sent = [];
  page.on('request', (r) => { if (path(r) === pathname && r.method() === 'POST') sent.push(r.headers()); });
  return sent;
}

describe('entry and the line', { timeout: 240_000 }, () => {
  const EVENT = 'line';
  const PAGE = `/?event=${EVENT}`;
  const ORDERS = `/api/events/${EVENT}/orders`;
  const ENTRY = `/api/events/${EVENT}/entry`;
  const stack = new Stack();

  before(async () => {
    await stack.up();
    await stack.createEvent({ ...fixture(EVENT), fairness: 'line' });
  }, { timeout: 120_000 });

  after(() => stack.down());

  test('entry before the start, the line after it, then the purchase', async () => {
    const dana = await stack.page();
    const cloudflare = [];
    dana.on('request', (r) => { if (r.url().includes('challenges.cloudflare.com')) cloudflare.push(r.url()); });
    const orders = record(dana, ORDERS);
    await dana.goto(PAGE);
    await expectText(dana, 'event-state', /^Upcoming$/i);
    const entered = dana.waitForResponse((r) => path(r) === ENTRY);
    await signIn(dana, 'dana');
    const entry = await entered;
    assert.equal(entry.status(), 200, await entry.text());
    const { ticket, early } = await entry.json();
    assert.equal(early, true);
    const cookie = (await entry.allHeaders())['set-cookie'];
    assert.match(cookie, /^fg_entry=e1\.line\.dana\.0\.\d+\.[\w-]+; Path=\/api\/events\/line; HttpOnly; Secure; SameSite=Strict; Max-Age=\d+$/);
    await expectText(dana, 'entry-status', /^You're in\. The line is drawn when the sale opens\.$/);
    assert.equal(await dana.getByTestId('entry-check').isVisible(), false, 'no check without a site key');
    await stack.screenshot(dana, 'line-01-entered-early');

    // The sale opens; the worker answers busy twice (stubbed: the place and the wait), then
    // lets the real purchase through.
    let busy = 0;
    const places = [[42, 7], [3, 1]];
    await dana.route(`**${ORDERS}`, (route) => {
      if (route.request().method() !== 'POST' || busy >= places.length) return route.continue();   // GET is "Your orders"
      const [place, wait] = places[busy++];
      return route.fulfill({
        status: 503,
        headers: { 'Retry-After': '1', 'Content-Type': 'application/json' },
        body: JSON.stringify({ error: { code: 'busy', message: 'the sale is very busy', retry_after: 1, place, wait_s: wait } }),
      });
    });
    await stack.cli('event', 'start', EVENT);
    await expectText(dana, 'event-state', /^Live$/i, 12_000);
    await expectText(dana, 'entry-status', /^You're in: your place was drawn/);
    const placed = dana.waitForResponse((r) => path(r) === ORDERS && r.status() === 201, { timeout: 20_000 });
    await dana.getByTestId('buy-KB').click();
    await expectText(dana, 'status-KB', /^About 42 shoppers ahead of you; about 7 s\. .*retry automatically/);
    assert.match(await dana.getByTestId('buy-KB').innerText(), /^In line, retrying in [1-2] s$/);
    await stack.screenshot(dana, 'line-02-in-line');
    await expectText(dana, 'status-KB', /^About 3 shoppers ahead of you; about 1 s\./, 5_000);
    const { order } = await (await placed).json();
    await expectText(dana, 'status-KB', new RegExp(`Order ID: ${order.id}`));
    assert.equal(orders.length, 3, 'two busy answers, then the purchase');
    assert.ok(orders.every((h) => h['idempotency-key'] === orders[0]['idempotency-key']), 'one key throughout');
    assert.ok(orders.every((h) => h['flashgate-entry'] === ticket), 'every attempt carries the entry ticket');
    assert.deepEqual(cloudflare, [], 'nothing loaded from Cloudflare without a site key');
    assert.deepEqual(dana.errors, [], 'no uncaught page errors');
    await stack.screenshot(dana, 'line-03-purchased');

    // A shopper who opens the page after the start enters late.
    const eve = await stack.page();
    await eve.goto(PAGE);
    const late = eve.waitForResponse((r) => path(r) === ENTRY);
    await signIn(eve, 'eve');
    assert.equal((await (await late).json()).early, false);
    await expectText(eve, 'entry-status', /^You're in line for this sale\.$/);
  });
});

describe('entry with Turnstile', { timeout: 240_000 }, () => {
  const EVENT = 'checked';
  const PAGE = `/?event=${EVENT}`;
  const ENTRY = `/api/events/${EVENT}/entry`;
  const seen = [];
  // A stand-in siteverify: `pass…` tokens pass, anything else fails.
  const siteverify = createServer((req, res) => {
    let body = '';
    req.on('data', (c) => { body += c; });
    req.on('end', () => {
      const v = JSON.parse(body);
      seen.push(v);
      const pass = v.secret === 'browser-secret' && String(v.response).startsWith('pass');
      res.writeHead(200, { 'content-type': 'application/json', connection: 'close' });
      res.end(JSON.stringify(pass ? { success: true, 'error-codes': [] } : { success: false, 'error-codes': ['invalid-input-response'] }));
    });
  });
  let stack;

  before(async () => {
    await new Promise((ok) => siteverify.listen(0, '127.0.0.1', ok));
    stack = new Stack({
      TURNSTILE_SECRET: 'browser-secret',
      TURNSTILE_SITE_KEY: '1x00000000000000000000AA',
      TURNSTILE_VERIFY_URL: `http://127.0.0.1:${siteverify.address().port}/turnstile/v0/siteverify`,
    });
    await stack.up();
    await stack.createEvent({ ...fixture(EVENT), fairness: 'line' });
  }, { timeout: 120_000 });

  after(async () => {
    await stack?.down();
    siteverify.close();
  });

  test('the check is shown, a failed check is retried, a passed one enters', async () => {
    const page = await stack.page();
    // Cloudflare's script cannot be fetched here: a stand-in widget with the same API.
    await page.route('https://challenges.cloudflare.com/turnstile/v0/api.js*', (route) => route.fulfill({
      status: 200,
      headers: { 'Content-Type': 'text/javascript' },
      body: `window.turnstile = {
        render(el, o) {
          const b = document.createElement('button');
          b.type = 'button'; b.textContent = 'Verify you are human'; b.dataset.testid = 'fake-turnstile';
          b.onclick = () => o.callback(window.nextToken);
          el.append(b);
          if (o.sitekey !== '1x00000000000000000000AA') throw new Error('site key ' + o.sitekey);
          return 'w1';
        },
        reset() {}, remove() {},
      };`,
    }));
    await page.goto(PAGE);
    await signIn(page, 'frank');
    await expectText(page, 'entry-status', /complete the check below/);
    assert.ok(await page.getByTestId('entry-check').isVisible());

    await page.evaluate(() => { window.nextToken = 'fail-token'; });
    const failed = page.waitForResponse((r) => path(r) === ENTRY);
    await page.getByTestId('fake-turnstile').click();
    const f = await failed;
    assert.equal(f.status(), 403);
    assert.equal((await f.json()).error.code, 'turnstile_failed');
    await expectText(page, 'entry-status', /did not pass/);

    await page.evaluate(() => { window.nextToken = 'pass-token'; });
    const passed = page.waitForResponse((r) => path(r) === ENTRY);
    await page.getByTestId('fake-turnstile').click();
    assert.equal((await passed).status(), 200);
    await expectText(page, 'entry-status', /^You're in\. The line is drawn when the sale opens\.$/);
    await eventually(async () => assert.equal(await page.getByTestId('entry-check').isVisible(), false));
    assert.deepEqual(seen.map((v) => v.response), ['fail-token', 'pass-token']);

    await stack.cli('event', 'start', EVENT);
    await expectText(page, 'event-state', /^Live$/i, 12_000);
    const placed = page.waitForResponse((r) => path(r) === `/api/events/${EVENT}/orders`);
    await page.getByTestId('buy-KB').click();
    const p = await placed;
    assert.equal(p.status(), 201, await p.text());
    assert.match(await text(page, 'status-KB'), /Order ID/);
    assert.deepEqual(page.errors, [], 'no uncaught page errors');
    await stack.screenshot(page, 'line-04-turnstile');
  });
});
