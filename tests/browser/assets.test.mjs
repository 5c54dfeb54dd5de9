// The pages' JS/CSS are fingerprinted by name (.ci/fingerprint.mjs) and cached for a year;
// these tests keep names, contents, the pages (index.html, ops/index.html), the vendored uPlot
// and static/_headers in step.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { appendFileSync, cpSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { checkAssets, hashOf, STATIC_DIR, VENDORED, writeAssets } from '../../.ci/fingerprint.mjs';

const SCRIPT = fileURLToPath(new URL('../../.ci/fingerprint.mjs', import.meta.url));

function copyOfStatic() {
  const dir = mkdtempSync(join(tmpdir(), 'flashgate-assets-'));
  cpSync(join(STATIC_DIR, 'index.html'), join(dir, 'index.html'));
  cpSync(join(STATIC_DIR, 'ops'), join(dir, 'ops'), { recursive: true });
  cpSync(join(STATIC_DIR, 'assets'), join(dir, 'assets'), { recursive: true });
  return dir;
}

const assetFile = (dir, prefix, ext = '') => readdirSync(join(dir, 'assets')).find((n) => n.startsWith(prefix) && n.endsWith(ext));
const cli = (...args) => spawnSync(process.execPath, [SCRIPT, ...args], { encoding: 'utf8' });

test('static/assets files match their fingerprints and the pages reference exactly them', () => {
  assert.deepEqual(checkAssets(), [], 'run: node .ci/fingerprint.mjs --write');
  const names = readdirSync(join(STATIC_DIR, 'assets')).sort();
  assert.deepEqual(names.map((n) => n.replace(/\.[0-9a-f]{10}\./, '.')).sort(),
    ['app.js', 'ops.css', 'ops.js', 'style.css', 'uplot.css', 'uplot.js']);
  for (const n of names) assert.match(n, /^[a-z]+\.[0-9a-f]{10}\.(js|css)$/);
  const refs = (page) => [...readFileSync(join(STATIC_DIR, page), 'utf8').matchAll(/\/assets\/([\w.-]+)/g)].map((m) => m[1]).sort();
  assert.deepEqual(refs('index.html').map((n) => n.split('.')[0]), ['app', 'style']);
  assert.deepEqual(refs('ops/index.html').map((n) => n.split('.')[0]), ['ops', 'ops', 'uplot', 'uplot']);
  assert.equal(cli('--check').status, 0);
});

test('the vendored uPlot is package.json\'s, byte for byte', () => {
  for (const [family, source] of Object.entries(VENDORED)) {
    const [base, ext] = family.split('.');
    const copy = assetFile(STATIC_DIR, `${base}.`, ext);
    assert.ok(readFileSync(join(STATIC_DIR, 'assets', copy)).equals(readFileSync(join(STATIC_DIR, '..', source))), `${copy} = ${source}`);
  }
  const pkg = JSON.parse(readFileSync(join(STATIC_DIR, '..', 'package.json'), 'utf8'));
  const installed = JSON.parse(readFileSync(join(STATIC_DIR, '..', 'node_modules/uplot/package.json'), 'utf8'));
  assert.equal(pkg.devDependencies.uplot, installed.version, 'an exact version, installed');
  assert.match(readFileSync(join(STATIC_DIR, 'assets', assetFile(STATIC_DIR, 'uplot.', 'js')), 'utf8'), new RegExp(`\\(v${installed.version}\\)`));
});

describe('the check fails when', () => {
  const dirs = [];
  const scratch = () => {
    const dir = copyOfStatic();
    dirs.push(dir);
    return dir;
  };
  after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

  test('an asset was edited without renaming, and --write repairs it', () => {
    const dir = scratch();
    const js = assetFile(dir, 'app.');
    appendFileSync(join(dir, 'assets', js), '\n// edited\n');
    assert.match(checkAssets(dir).join('\n'), new RegExp(`assets/${js.replace(/\./g, '\\.')}: content hash is`));
    const run = cli('--check', dir);
    assert.equal(run.status, 1);
    assert.match(run.stderr, /content hash is/);

    assert.equal(writeAssets(dir).length, 1);
    assert.deepEqual(checkAssets(dir), []);
    assert.notEqual(assetFile(dir, 'app.'), js);
    assert.match(readFileSync(join(dir, 'index.html'), 'utf8'), new RegExp(assetFile(dir, 'app.').replace(/\./g, '\\.')));
  });

  test('index.html points at a file that is not there', () => {
    const dir = scratch();
    const css = assetFile(dir, 'style.');
    renameSync(join(dir, 'assets', css), join(dir, 'assets', 'style.0000000000.css'));
    const problems = checkAssets(dir).join('\n');
    assert.match(problems, new RegExp(`references missing /assets/${css.replace(/\./g, '\\.')}`));
    assert.match(problems, /style\.0000000000\.css: not referenced/);
  });

  test('ops/index.html points at a file that is not there', () => {
    const dir = scratch();
    const js = assetFile(dir, 'ops.', '.js');
    renameSync(join(dir, 'assets', js), join(dir, 'assets', 'ops.0000000000.js'));
    assert.match(checkAssets(dir).join('\n'), new RegExp(`ops/index\\.html references missing /assets/${js.replace(/\./g, '\\.')}`));
  });

  test('the vendored uPlot was edited (even under its new hash), and --write puts npm\'s back', () => {
    const dir = scratch();
    const js = assetFile(dir, 'uplot.', '.js');
    const edited = `${readFileSync(join(dir, 'assets', js), 'utf8')}\n// patched\n`;
    rmSync(join(dir, 'assets', js));
    writeFileSync(join(dir, 'assets', `uplot.${hashOf(edited)}.js`), edited);
    assert.match(checkAssets(dir).join('\n'), /uplot\.[0-9a-f]{10}\.js: differs from node_modules\/uplot\/dist\/uPlot\.iife\.min\.js/);
    writeAssets(dir);
    assert.deepEqual(checkAssets(dir), []);
    assert.equal(assetFile(dir, 'uplot.', '.js'), js);
  });

  test('an asset has no fingerprint', () => {
    const dir = scratch();
    appendFileSync(join(dir, 'assets', 'extra.js'), 'export {};\n');
    assert.match(checkAssets(dir).join('\n'), /extra\.js: not named/);
    assert.equal(cli('--check', dir).status, 1);
  });
});

test('static/_headers: short TTL for the page, immutable for fingerprinted assets', () => {
  const rules = new Map();
  let current;
  for (const line of readFileSync(join(STATIC_DIR, '_headers'), 'utf8').split('\n')) {
    if (!line.trim() || line.trim().startsWith('#')) continue;
    if (!/^\s/.test(line)) rules.set((current = line.trim()), {});
    else {
      const [name, ...value] = line.trim().split(':');
      rules.get(current)[name.toLowerCase()] = value.join(':').trim();
    }
  }
  assert.equal(rules.get('/')['cache-control'], 'public, max-age=10, must-revalidate');
  assert.equal(rules.get('/index.html')['cache-control'], 'public, max-age=10, must-revalidate');
  assert.equal(rules.get('/assets/*')['cache-control'], 'public, max-age=31536000, immutable');
  assert.equal(rules.get('/ops/')['cache-control'], 'public, max-age=10, must-revalidate');
  assert.equal(rules.get('/ops/index.html')['cache-control'], 'public, max-age=10, must-revalidate');
  assert.match(rules.get('/ops/')['content-security-policy'], /script-src 'self';/);
  // The sale page may load Turnstile (script and frame) from Cloudflare, and nothing else.
  const csp = rules.get('/')['content-security-policy'];
  assert.match(csp, /script-src 'self' https:\/\/challenges\.cloudflare\.com;/);
  assert.match(csp, /frame-src https:\/\/challenges\.cloudflare\.com;/);
  assert.match(csp, /connect-src 'self';/);
  assert.equal(rules.get('/ops/')['x-robots-tag'], 'noindex');
  const cacheRules = [...rules].filter(([, headers]) => 'cache-control' in headers).map(([path]) => path);
  assert.deepEqual(cacheRules.sort(), ['/', '/assets/*', '/index.html', '/ops/', '/ops/index.html'],
    'no other rule sets Cache-Control (overlapping rules would join values with a comma)');
});
