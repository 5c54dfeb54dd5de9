// The sale page's entry and line, in a real browser against the real worker (`wrangler dev`)
// and a real redis-server: shoppers enter before the start ("You're in. The line is drawn when
// the sale opens."), a crowd that entered too stands ahead of the one who buys, and after the
// start she waits in the real line (the place and wait from the worker's 503 `busy` answers,
// retried with the same Idempotency-Key and the entry ticket), then buys. With a Turnstile
// site key the page shows the check and enters only once it passes (the widget is a stand-in
// served in place of Cloudflare's script, and siteverify a stand-in on a local port).
// Run: node --test --test-concurrency=1 tests/browser/
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { eventually, expectText, rfc3339, Stack, text } from './harness.mjs';

const fixture = (id, { startsIn = 3600_000, stock = 5 } = {}) => ({
  id,
  name: 'Line test sale',
  utc_offset: '+00:00',
  starts_at: rfc3339(Date.now() + startsIn),
  ends_at: rfc3339(Date.now() + 4 * 3600_000),
  caps: { per_item_per_day: 1, total: 5, per_order_qty: 1 },
  items: [{ sku: 'KB', name: 'Keyboard', price: 4999, currency: 'USD', stock }],
});

const path = (r) => new URL(r.url()).pathname;
const sha256 = (bytes) => createHash('sha256').update(bytes).digest();

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

/** Where `user` falls among the shoppers who entered before the start, in [0, 1): the draw of
 * crates/core/src/line.rs (`draw`: SHA-256 of seed ‖ event ‖ 0 ‖ user, its first 8 bytes
 * big-endian) over 2^64. Anyone can compute it once the seed is revealed. */
function earlyPlace(seedHex, event, user) {
  const d = sha256(Buffer.concat([Buffer.from(seedHex, 'hex'), Buffer.from(event), Buffer.from([0]), Buffer.from(user)]));
  return Number(d.readBigUInt64BE(0)) / 2 ** 64;
}

/**
 * `n` shoppers enter `event` before its start over the API (the worker counts a sampled share
 * of them into the early window as they enter), and each tries to buy once: the attempt is
 * refused `not_started`. None of them comes back.
 */
async function earlyCrowd(stack, event, n, concurrency = 16) {
  let next = 0;
  const one = async (user) => {
    const auth = { Authorization: `Bearer ${stack.signToken(user)}`, 'Content-Type': 'application/json' };
    const e = await fetch(`${stack.baseURL}/api/events/${event}/entry`, { method: 'POST', headers: auth, body: '{}' });
    assert.equal(e.status, 200, `${user} enters: ${await e.clone().text()}`);
    const { ticket, early } = await e.json();
    assert.equal(early, true, `${user} enters before the start`);
    const b = await fetch(`${stack.baseURL}/api/events/${event}/orders`, {
      method: 'POST',
      headers: { ...auth, 'Idempotency-Key': randomBytes(9).toString('base64url'), 'Flashgate-Entry': ticket },
      body: JSON.stringify({ items: [{ sku: 'KB', qty: 1 }] }),
    });
    const body = await b.json();
    assert.deepEqual([b.status, body.error?.code], [409, 'not_started'], JSON.stringify(body));
  };
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next < n) await one(`crowd-${next++}`);
  }));
}

/** What the page shows for a busy answer's place and wait (static/assets/app.*.js `lineNote`). */
function lineText({ place, wait_s: wait }) {
  const who = place === 0 ? 'You are next' : `About ${place} shopper${place === 1 ? '' : 's'} ahead of you`;
  const when = wait < 120 ? `${Math.max(1, wait)} s` : `${Math.round(wait / 60)} min`;
  return new RegExp(`^${who}; about ${when}\\. .*retry automatically`);
}

/** One answer to a purchase attempt of `page`: its status, Retry-After and body, and, for a busy
 * answer with a place, whether the page showed that place and wait (`true`) or what it showed. */
async function answer(page, response) {
  const a = { status: response.status(), retryAfter: response.headers()['retry-after'], body: await response.json().catch(() => null) };
  const e = a.body?.error;
  if (a.status === 503 && e?.code === 'busy' && e.place != null) {
    // The page retries after Retry-After (at least a second): the note stays up that long.
    a.shown = await eventually(async () => assert.match(await text(page, 'status-KB'), lineText(e)), 900)
      .then(() => true, async () => text(page, 'status-KB'));
  }
  return a;
}

describe('entry and the line', { timeout: 240_000 }, () => {
  const EVENT = 'line';
  const PAGE = `/?event=${EVENT}`;
  const ORDERS = `/api/events/${EVENT}/orders`;
  const ENTRY = `/api/events/${EVENT}/entry`;
  // The crowd that enters before the start and never comes back. The line admits about
  // `threshold::line_allowed(budget, units left, lag)` = min(40, 2 × 20 / lag) = 40 shoppers a
  // second of those it counted, so the whole crowd is through in about 20 s: the longest the
  // buyer can wait.
  const CROWD = 800;
  const BUDGET = 40;
  const STOCK = 20;
  // Shoppers who open the page before the start. After it, the one drawn furthest back in the
  // early window is the one who buys, so that a good share of the crowd is ahead of her
  // whatever the seed.
  const SHOPPERS = ['dana', 'erin', 'finn', 'gail', 'hugo', 'ines'];
  const stack = new Stack();

  before(async () => {
    await stack.up();
    // Less than two minutes to the start, so the pages poll the event every 2 to 3 s and see
    // the operator's `event start` quickly; the test starts the sale well before `starts_at`.
    await stack.createEvent({ ...fixture(EVENT, { startsIn: 110_000, stock: STOCK }), fairness: 'line', origin_budget: BUDGET });
  }, { timeout: 120_000 });

  after(() => stack.down());

  test('entry before the start, the line after it, then the purchase', async (t) => {
    const shoppers = [];
    for (const user of SHOPPERS) {
      const page = await stack.page();
      const cloudflare = [];
      page.on('request', (r) => { if (r.url().includes('challenges.cloudflare.com')) cloudflare.push(r.url()); });
      const orders = record(page, ORDERS);
      await page.goto(PAGE);
      await expectText(page, 'event-state', /^Upcoming$/i);
      const entered = page.waitForResponse((r) => path(r) === ENTRY);
      await signIn(page, user);
      const entry = await entered;
      assert.equal(entry.status(), 200, await entry.text());
      const { ticket, early } = await entry.json();
      assert.equal(early, true);
      const cookie = (await entry.allHeaders())['set-cookie'];
      assert.match(cookie, new RegExp(`^fg_entry=e1\\.line\\.${user}\\.0\\.\\d+\\.[\\w-]+; Path=/api/events/line; HttpOnly; Secure; SameSite=Strict; Max-Age=\\d+$`));
      await expectText(page, 'entry-status', /^You're in\. The line is drawn when the sale opens\.$/);
      assert.equal(await page.getByTestId('entry-check').isVisible(), false, 'no check without a site key');
      shoppers.push({ user, page, ticket, orders, cloudflare });
    }
    await stack.screenshot(shoppers[0].page, 'line-01-entered-early');
    const { commitment } = await (await fetch(`${stack.baseURL}/api/events/${EVENT}`)).json();

    // The crowd enters and is counted at the origin (sampled sightings, which each isolate
    // reports with its next snapshot refresh; an event read makes one).
    await earlyCrowd(stack, EVENT, CROWD);
    await eventually(async () => {
      await fetch(`${stack.baseURL}/api/events/${EVENT}`);
      const { line } = JSON.parse(await stack.cli('event', 'status', EVENT, '--json'));
      assert.ok(line.early >= 0.7 * CROWD && line.early <= 1.3 * CROWD && line.late === 0, JSON.stringify(line));
    }, 20_000);

    // The sale opens: the seed is revealed, and with it everyone's place.
    await stack.cli('event', 'start', EVENT);
    let seed;
    await eventually(async () => {
      ({ seed } = await (await fetch(`${stack.baseURL}/api/events/${EVENT}`)).json());
      assert.match(seed ?? '', /^[0-9a-f]{64}$/);
    });
    assert.equal(sha256(Buffer.from(seed, 'hex')).toString('hex'), commitment, 'the seed is the one committed to');
    for (const s of shoppers) s.place = earlyPlace(seed, EVENT, s.user);
    const dana = shoppers.reduce((a, b) => (b.place > a.place ? b : a));
    for (const s of shoppers.filter((s) => s !== dana)) {
      assert.deepEqual([s.orders, s.page.errors], [[], []], `${s.user} sent no purchase, and no page errors`);
      await s.page.context().close();
    }
    // The crowd's pages still read the event (as open pages do): each read that finds the
    // isolate's snapshot older than EDGE_CACHE_MS refreshes it, and refreshes advance the line.
    const reading = new AbortController();
    const reads = (async () => {
      while (!reading.signal.aborted) {
        await fetch(`${stack.baseURL}/api/events/${EVENT}`, { signal: reading.signal }).then((r) => r.arrayBuffer()).catch(() => {});
        await sleep(250);
      }
    })();

    try {
      const { page } = dana;
      await expectText(page, 'event-state', /^Live$/i, 12_000);
      await expectText(page, 'entry-status', /^You're in: your place was drawn/);
      const answers = [];
      page.on('response', (r) => {
        if (path(r) === ORDERS && r.request().method() === 'POST') answers.push(answer(page, r));
      });
      const placed = page.waitForResponse((r) => path(r) === ORDERS && r.status() === 201, { timeout: 60_000 });
      const clicked = Date.now();
      await page.getByTestId('buy-KB').click();
      await expectText(page, 'status-KB', /^About \d+ shoppers? ahead of you; about \d+ s\. .*retry automatically/, 10_000);
      assert.match(await page.getByTestId('buy-KB').innerText(), /^In line, retrying in [1-6] s$/);
      await stack.screenshot(page, 'line-02-in-line');
      const { order } = await (await placed).json();
      const waited = Date.now() - clicked;
      await expectText(page, 'status-KB', new RegExp(`Order ID: ${order.id}`));

      // The real answers: busy (each with its Retry-After) until the line reached her place,
      // then the order. The page showed each place and wait, and the place came down.
      const seen = await Promise.all(answers);
      const last = seen.pop();
      assert.equal(last.status, 201);
      assert.ok(seen.length >= 1, 'she waited in line');
      for (const a of seen) {
        assert.deepEqual([a.status, a.body?.error?.code], [503, 'busy'], JSON.stringify(a.body));
        assert.equal(a.retryAfter, String(a.body.error.retry_after));
      }
      const inLine = seen.filter((a) => a.body.error.place != null).map((a) => ({ ...a.body.error, shown: a.shown }));
      const trail = JSON.stringify(inLine.map(({ place, wait_s, remaining, shown }) => ({ place, wait_s, remaining, shown })));
      assert.ok(inLine.length >= 1 && inLine[0].place > 0, `shoppers ahead of her at first: ${trail}`);
      assert.ok(inLine.every((e) => e.shown === true), `the page showed every place and wait: ${trail}`);
      assert.ok(inLine.every((e) => Number.isInteger(e.wait_s) && e.remaining === STOCK), trail);
      assert.ok(inLine[0].place <= 1.3 * CROWD, `no more ahead than entered: ${trail}`);
      assert.ok(inLine.every((e, i) => i === 0 || e.place <= inLine[i - 1].place), `the place only comes down: ${trail}`);
      assert.ok(inLine.length === 1 || inLine.at(-1).place < inLine[0].place, trail);
      t.diagnostic(`${dana.user} drawn at ${dana.place.toFixed(3)} of the early window; ${seen.length} busy answers, places ${inLine.map((e) => e.place).join(' → ')}; admitted after ${(waited / 1000).toFixed(1)} s`);

      const { orders, ticket, cloudflare } = dana;
      assert.equal(orders.length, seen.length + 1, 'the busy answers, then the purchase');
      assert.ok(orders.every((h) => h['idempotency-key'] === orders[0]['idempotency-key']), 'one key throughout');
      assert.ok(orders.every((h) => h['flashgate-entry'] === ticket), 'every attempt carries the entry ticket');
      assert.deepEqual(cloudflare, [], 'nothing loaded from Cloudflare without a site key');
      assert.deepEqual(page.errors, [], 'no uncaught page errors');
      await stack.screenshot(page, 'line-03-purchased');

      // At the origin: the line has passed her place, so it admitted at least the share of the
      // early crowd drawn ahead of her.
      const { line } = JSON.parse(await stack.cli('event', 'status', EVENT, '--json'));
      assert.ok(line.threshold >= dana.place - 0.001, `${JSON.stringify(line)} against ${dana.place}`);
      assert.ok(line.admitted >= Math.floor(dana.place * line.early) - 1, `${JSON.stringify(line)} against ${dana.place}`);
    } finally {
      reading.abort();
      await reads;
    }

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
