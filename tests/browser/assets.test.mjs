// The sale page's JS/CSS are fingerprinted by name (.ci/fingerprint.mjs) and cached
// for a year; these tests keep names, contents, index.html and static/_headers in step.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { appendFileSync, cpSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { checkAssets, STATIC_DIR, writeAssets } from '../../.ci/fingerprint.mjs';

const SCRIPT = fileURLToPath(new URL('../../.ci/fingerprint.mjs', import.meta.url));

function copyOfStatic() {
  const dir = mkdtempSync(join(tmpdir(), 'flashgate-assets-'));
  cpSync(join(STATIC_DIR, 'index.html'), join(dir, 'index.html'));
  cpSync(join(STATIC_DIR, 'assets'), join(dir, 'assets'), { recursive: true });
  return dir;
}

const assetFile = (dir, prefix) => readdirSync(join(dir, 'assets')).find((n) => n.startsWith(prefix));
const cli = (...args) => spawnSync(process.execPath, [SCRIPT, ...args], { encoding: 'utf8' });

test('static/assets files match their fingerprints and index.html references exactly them', () => {
  assert.deepEqual(checkAssets(), [], 'run: node .ci/fingerprint.mjs --write');
  const names = readdirSync(join(STATIC_DIR, 'assets')).sort();
  assert.equal(names.length, 2);
  assert.match(names[0], /^app\.[0-9a-f]{10}\.js$/);
  assert.match(names[1], /^style\.[0-9a-f]{10}\.css$/);
  assert.equal(cli('--check').status, 0);
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
  const cacheRules = [...rules].filter(([, headers]) => 'cache-control' in headers).map(([path]) => path);
  assert.deepEqual(cacheRules.sort(), ['/', '/assets/*', '/index.html'],
    'no other rule sets Cache-Control (overlapping rules would join values with a comma)');
});
