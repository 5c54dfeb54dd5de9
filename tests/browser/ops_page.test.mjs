// Real-browser tests of the operator's page (/ops/) against the real worker (`wrangler dev`),
// a real redis-server origin, the operator CLI and `flashgate load` crowds: the token, the
// live charts during a sale, their numbers against `flashgate event status --json`, the
// line's progress, a cancelled order, the sell-out, and no polling while the tab is hidden.
// Run: node --test --test-concurrency=1 tests/browser/ops_page.test.mjs
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { eventually, expectText, Stack, text } from './harness.mjs';

const EVENT = 'ops-e2e';
const PAGE = `/ops/?event=${EVENT}`;
const SKUS = ['KB', 'MS'];
const UNITS = 120;
const DESKTOP = { viewport: { width: 1440, height: 1000 } };

const number = async (page, testid) => Number((await text(page, testid)).replace(/[^\d]/g, ''));
const isLive = (r) => new URL(r.url()).pathname === `/api/events/${EVENT}/live`;

/** What a chart draws: its data points and their total (data-points, data-total). */
const facts = (page, chart) => page.getByTestId(`chart-${chart}`)
  .evaluate((el) => ({ points: Number(el.dataset.points), total: Number(el.dataset.total) }));

describe('operator page', { timeout: 300_000 }, () => {
  const stack = new Stack();
  let ops; // the operator's page, kept open across the scenarios

  before(async () => {
    await stack.up();
    // 60 keyboards and 60 mice, an hour from now; one of each item, two units, per buyer.
    await stack.cli('event', 'create', '--id', EVENT, '--name', 'Ops test sale', '--starts-in', '3600',
      '--item', 'KB:Keyboard:4999:USD:60', '--item', 'MS:Mouse:1999:USD:60', '--cap-item', '1', '--cap-total', '2');
  }, { timeout: 120_000 });

  after(async () => {
    await stack.down();
  });

  const soldByCli = async () => Object.fromEntries(
    JSON.parse(await stack.cli('event', 'status', EVENT, '--json')).items.map((i) => [i.sku, i.sold]));
  const soldOnPage = async () => Object.fromEntries(
    await Promise.all(SKUS.map(async (sku) => [sku, await number(ops, `sold-${sku}`)])));
  // An isolate reports its counts to the fleet with its next snapshot refresh, which any
  // request for the event makes (shoppers' pages poll it every second).
  const shopperPoll = () => fetch(`${stack.baseURL}/api/events/${EVENT}`);
  const crowd = async (requests, users) => JSON.parse(await stack.cli('load', '--base-url', stack.baseURL,
    '--event', EVENT, '--secret', stack.identitySecret, '--requests', String(requests), '--users', String(users),
    '--concurrency', '8', '--no-progress', '--json'));

  test('01 a wrong operator token is refused, and not kept', async () => {
    ops = await stack.page(DESKTOP);
    await ops.goto(PAGE);
    assert.equal(await ops.getByTestId('event-id').inputValue(), EVENT, 'the event from ?event=');
    await eventually(async () => assert.ok(await ops.getByTestId('token').isVisible(), 'asks for the token'));
    await ops.getByTestId('token').fill('not-the-operator-token');
    const answer = ops.waitForResponse(isLive);
    await ops.getByTestId('token-submit').click();
    assert.equal((await answer).status(), 401);
    await expectText(ops, 'auth-status', /token was refused \(401 unauthenticated\)/);
    assert.equal(await ops.locator('#dash').isVisible(), false, 'no figures without the token');
    assert.equal(await ops.evaluate(() => sessionStorage.length), 0, 'a refused token is not kept');
    await stack.screenshot(ops, 'ops-01-wrong-token');
  });

  test('02 the token is entered once; the sale starts and a crowd runs', async () => {
    await ops.getByTestId('token').fill(stack.operatorToken);
    await ops.getByTestId('token-submit').click();
    await expectText(ops, 'event-name', /^Ops test sale$/);
    await expectText(ops, 'event-state', /^Upcoming$/i);
    await expectText(ops, 'kpi-sold-sub', /of 120 · 120 left/);
    // Kept for this tab: a reload does not ask again; another tab (context) does.
    await ops.reload();
    await expectText(ops, 'event-state', /^Upcoming$/i);
    assert.equal(await ops.getByTestId('token').isVisible(), false);
    const other = await stack.page(DESKTOP);
    await other.goto(PAGE);
    await eventually(async () => assert.ok(await other.getByTestId('token').isVisible()));
    await other.context().close();

    // A one-minute window (remembered in the URL) shows the crowd's seconds in detail.
    await ops.getByTestId('window').selectOption('1');
    await eventually(async () => assert.match(ops.url(), /[?&]minutes=1\b/));
    await stack.cli('event', 'start', EVENT);
    await expectText(ops, 'event-state', /^Live$/i, 12_000);
    const report = await crowd(150, 40);
    assert.equal(report.requests, 150);
    // Every attempt reaches the attempts chart once the worker has reported it.
    await eventually(async () => {
      await shopperPoll();
      assert.equal((await facts(ops, 'attempts')).total, 150);
    }, 15_000);
    await expectText(ops, 'decision-placed', /^placed/);
    await stack.screenshot(ops, 'ops-02-crowd');
  });

  test('03 the charts move, and their numbers match `flashgate event status --json`', async () => {
    const sold = await facts(ops, 'sold');
    await sleep(2500);
    const later = await facts(ops, 'sold');
    assert.ok(later.points >= sold.points + 2, `the sold chart samples each second: ${sold.points} → ${later.points}`);
    const attempts = await facts(ops, 'attempts');
    assert.ok(attempts.points >= 1, 'seconds with attempts are drawn');
    assert.ok((await facts(ops, 'share')).points >= 1, 'the origin share is drawn');

    // The page agrees with the CLI within one refresh.
    const cli = await soldByCli();
    const units = cli.KB + cli.MS;
    assert.ok(units > 0 && units < UNITS, `some sold, not all: ${JSON.stringify(cli)}`);
    await eventually(async () => assert.deepEqual(await soldOnPage(), cli), 2500);
    assert.equal((await facts(ops, 'sold')).total, units, 'the sold chart ends at the sold units');
    assert.equal(await number(ops, 'kpi-sold'), units);
    const status = JSON.parse(await stack.cli('event', 'status', EVENT, '--json'));
    await eventually(async () => assert.equal(await number(ops, 'orders-pending'), status.orders_pending), 2500);
    assert.equal(await number(ops, 'writer-stream'), status.stream_len);
    await expectText(ops, 'writer-note', /No order writer has started yet/);

    // The sale has a line (fairness = line, the default): admitted of entered, as the CLI
    // counts it once the fleet has reported its sightings.
    assert.ok(status.line, `a line in event status --json: ${JSON.stringify(status)}`);
    assert.ok(await ops.getByTestId('tile-line').isVisible(), 'the line tile is shown');
    await expectText(ops, 'kpi-line-sub', /^entered · [\d,]+ early · [\d,]+ late · /);
    await eventually(async () => {
      await shopperPoll();
      const { line } = JSON.parse(await stack.cli('event', 'status', EVENT, '--json'));
      assert.ok(line.entered > 0 && line.admitted <= line.entered, JSON.stringify(line));
      const [admitted, entered] = (await text(ops, 'kpi-line')).replace(/,/g, '').split(' of ').map(Number);
      assert.equal(entered, line.entered, 'entered as the CLI counts it');
      assert.ok(admitted > 0 && admitted <= entered, `${admitted} of ${entered}`);
    }, 5000);
    await stack.screenshot(ops, 'ops-03-numbers');
  });

  test('03b a cancelled order shows next to paid and expired', async () => {
    assert.equal(await number(ops, 'orders-cancelled'), 0);
    let order;
    await eventually(async () => {
      const r = await stack.buy('canceller', 'KB', { event: EVENT, key: 'ops-cancel-1' });
      const body = await r.json();
      assert.equal(r.status, 201, JSON.stringify(body));
      order = body.order;
    }, 15_000);
    const said = await stack.cli('orders', 'cancel', order.id, '--event', EVENT);
    assert.match(said, /is cancelled; 1 units went back on sale/);
    await expectText(ops, 'orders-cancelled', /^1$/, 3000);
    await expectText(ops, 'kpi-pending-sub', / · 0 expired · 1 cancelled$/);
    assert.equal(await number(ops, 'orders-paid'), 0);
    assert.equal(await number(ops, 'orders-expired'), 0);
  });

  test('04 the page shows the sell-out', async () => {
    // Admission control may shed part of a crowd (busy): send crowds until the CLI says sold out.
    for (let round = 0; round < 4; round += 1) {
      await crowd(400, 400 + round * 200);
      const cli = await soldByCli();
      if (cli.KB + cli.MS === UNITS) break;
      await sleep(1500);
    }
    assert.deepEqual(await soldByCli(), { KB: 60, MS: 60 });
    await expectText(ops, 'sellout', /^Sold out: all 120 units of 2 items are sold/, 5000);
    for (const sku of SKUS) await expectText(ops, `remaining-${sku}`, /^Sold out$/);
    assert.deepEqual(await soldOnPage(), { KB: 60, MS: 60 });
    await expectText(ops, 'kpi-sold-sub', /of 120 · 0 left/);
    await eventually(async () => {
      await shopperPoll();
      await expectText(ops, 'decision-sold_out', /^sold_out/);
    });
    await stack.screenshot(ops, 'ops-04-sold-out');

    // On a phone: the same figures, no sideways scrolling.
    const phone = await stack.page({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true });
    await phone.goto(PAGE);
    await phone.getByTestId('token').fill(stack.operatorToken);
    await phone.getByTestId('token-submit').click();
    await expectText(phone, 'sellout', /^Sold out: all 120 units/);
    const width = await phone.evaluate(() => document.documentElement.scrollWidth);
    assert.ok(width <= 390, `no sideways scrolling at 390 px (content is ${width} px wide)`);
    await stack.screenshot(phone, 'ops-05-sold-out-phone');
    assert.deepEqual(phone.errors, [], 'no uncaught page errors');
    await phone.context().close();
  });

  test('05 no polling while the tab is hidden; it picks up again when shown', async () => {
    const seen = [];
    ops.on('request', (r) => { if (isLive(r)) seen.push(Date.now()); });
    const setHidden = (hidden) => ops.evaluate((h) => {
      Object.defineProperty(document, 'hidden', { configurable: true, get: () => h });
      Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => (h ? 'hidden' : 'visible') });
      document.dispatchEvent(new Event('visibilitychange'));
    }, hidden);
    await setHidden(true);
    await sleep(1500); // a poll already under way may still land
    const hiddenAt = seen.length;
    await sleep(3000);
    assert.equal(seen.length, hiddenAt, 'no request while hidden');
    await setHidden(false);
    await eventually(async () => assert.ok(seen.length >= hiddenAt + 2, 'polling again'), 5000);
    assert.deepEqual(ops.errors, [], 'no uncaught page errors');
  });
});
