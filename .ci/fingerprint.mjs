#!/usr/bin/env node
// Content fingerprints for the sale page's JS and CSS.
//
//   node .ci/fingerprint.mjs --check [staticDir]   exit 1 unless every static/assets file is
//                                                 named <base>.<sha256[:10]>.<ext> of its content
//                                                 and index.html references exactly those files
//   node .ci/fingerprint.mjs --write [staticDir]   rename the assets to their current hash and
//                                                 rewrite index.html (run after every JS/CSS edit)
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const STATIC_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '../static');
const HASHED = /^(?<base>[\w-]+)\.(?<hash>[0-9a-f]{10})\.(?<ext>js|css)$/;
const RENAMABLE = /^(?<base>[\w-]+)(?:\.[0-9a-f]{10})?\.(?<ext>js|css)$/;
const REFERENCE = /["'(]\/assets\/([^"')?#]+)/g;

export const hashOf = (content) => createHash('sha256').update(content).digest('hex').slice(0, 10);

const assetNames = (dir) => readdirSync(join(dir, 'assets')).sort();
const readIndex = (dir) => readFileSync(join(dir, 'index.html'), 'utf8');
export const referencedAssets = (html) => [...html.matchAll(REFERENCE)].map((m) => m[1]);

/** Every problem found, as human-readable strings; an empty list means the assets are consistent. */
export function checkAssets(dir = STATIC_DIR) {
  const problems = [];
  const files = assetNames(dir);
  for (const name of files) {
    const parts = HASHED.exec(name)?.groups;
    if (!parts) {
      problems.push(`assets/${name}: not named <base>.<10 hex>.<js|css>`);
      continue;
    }
    const actual = hashOf(readFileSync(join(dir, 'assets', name)));
    if (actual !== parts.hash) problems.push(`assets/${name}: content hash is ${actual}`);
  }
  const refs = referencedAssets(readIndex(dir));
  for (const ref of refs) {
    if (!files.includes(ref)) problems.push(`index.html references missing /assets/${ref}`);
  }
  for (const name of files) {
    if (!refs.includes(name)) problems.push(`assets/${name}: not referenced by index.html`);
  }
  return problems;
}

/** Renames every asset to its content hash and points index.html at the new names. */
export function writeAssets(dir = STATIC_DIR) {
  let html = readIndex(dir);
  const seen = new Set();
  const renamed = [];
  for (const name of assetNames(dir)) {
    const parts = RENAMABLE.exec(name)?.groups;
    if (!parts) throw new Error(`assets/${name}: cannot fingerprint (expected <base>[.<hash>].<js|css>)`);
    const family = `${parts.base}.${parts.ext}`;
    if (seen.has(family)) throw new Error(`assets/: more than one ${family}; delete the stale copy`);
    seen.add(family);
    const path = join(dir, 'assets', name);
    const target = `${parts.base}.${hashOf(readFileSync(path))}.${parts.ext}`;
    if (target !== name) {
      renameSync(path, join(dir, 'assets', target));
      renamed.push(`${name} -> ${target}`);
    }
    const stale = new RegExp(`/assets/${parts.base}(?:\\.[0-9a-f]{10})?\\.${parts.ext}(?=["')?#])`, 'g');
    html = html.replace(stale, `/assets/${target}`);
  }
  writeFileSync(join(dir, 'index.html'), html);
  return renamed;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const [mode, dir = STATIC_DIR] = process.argv.slice(2);
  if (mode === '--write') {
    for (const line of writeAssets(dir)) console.log(line);
  }
  if (mode !== '--check' && mode !== '--write') {
    console.error('usage: fingerprint.mjs --check|--write [staticDir]');
    process.exit(2);
  }
  const problems = checkAssets(dir);
  for (const p of problems) console.error(`fingerprint: ${p}`);
  process.exit(problems.length ? 1 : 0);
}
