#!/usr/bin/env node
// Content fingerprints for the pages' JS and CSS (the sale page, index.html, and the
// operator's page, ops/index.html).
//
//   node .ci/fingerprint.mjs --check [staticDir]   exit 1 unless every static/assets file is
//                                                 named <base>.<sha256[:10]>.<ext> of its content,
//                                                 the pages reference exactly those files, and
//                                                 each vendored file equals its npm source
//   node .ci/fingerprint.mjs --write [staticDir]   copy the vendored files in from node_modules,
//                                                 rename the assets to their current hash and
//                                                 rewrite the pages (run after every JS/CSS edit
//                                                 or npm upgrade)
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const STATIC_DIR = join(ROOT, 'static');
/** The pages whose references are checked and rewritten, relative to the static dir. */
export const PAGES = ['index.html', 'ops/index.html'];
/** Assets copied from npm packages (pinned in package.json): family → file under the root. */
export const VENDORED = {
  'uplot.js': 'node_modules/uplot/dist/uPlot.iife.min.js',
  'uplot.css': 'node_modules/uplot/dist/uPlot.min.css',
};
const HASHED = /^(?<base>[\w-]+)\.(?<hash>[0-9a-f]{10})\.(?<ext>js|css)$/;
const RENAMABLE = /^(?<base>[\w-]+)(?:\.[0-9a-f]{10})?\.(?<ext>js|css)$/;
const REFERENCE = /["'(]\/assets\/([^"')?#]+)/g;

export const hashOf = (content) => createHash('sha256').update(content).digest('hex').slice(0, 10);

const assetNames = (dir) => readdirSync(join(dir, 'assets')).sort();
const pagesIn = (dir) => PAGES.filter((page) => existsSync(join(dir, page)));
const readPage = (dir, page) => readFileSync(join(dir, page), 'utf8');
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
    const content = readFileSync(join(dir, 'assets', name));
    const actual = hashOf(content);
    if (actual !== parts.hash) problems.push(`assets/${name}: content hash is ${actual}`);
    const source = VENDORED[`${parts.base}.${parts.ext}`];
    if (source && existsSync(join(ROOT, source)) && !content.equals(readFileSync(join(ROOT, source)))) {
      problems.push(`assets/${name}: differs from ${source} (package.json's version)`);
    }
  }
  const referenced = new Set();
  for (const page of pagesIn(dir)) {
    for (const ref of referencedAssets(readPage(dir, page))) {
      referenced.add(ref);
      if (!files.includes(ref)) problems.push(`${page} references missing /assets/${ref}`);
    }
  }
  for (const name of files) {
    if (!referenced.has(name)) problems.push(`assets/${name}: not referenced by ${pagesIn(dir).join(' or ')}`);
  }
  return problems;
}

/** Copies the vendored files in (when node_modules has them), renames every asset to its
 * content hash and points the pages at the new names. */
export function writeAssets(dir = STATIC_DIR) {
  const renamed = [];
  for (const [family, source] of Object.entries(VENDORED)) {
    if (!existsSync(join(ROOT, source))) continue;
    const [base, ext] = family.split('.');
    const stale = assetNames(dir).filter((n) => RENAMABLE.exec(n)?.groups.base === base && n.endsWith(`.${ext}`));
    const copy = readFileSync(join(ROOT, source));
    if (stale.length === 1 && readFileSync(join(dir, 'assets', stale[0])).equals(copy)) continue;
    for (const name of stale) rmSync(join(dir, 'assets', name));
    copyFileSync(join(ROOT, source), join(dir, 'assets', family));
    renamed.push(`${source} -> assets/${family}`);
  }
  const pages = new Map(pagesIn(dir).map((page) => [page, readPage(dir, page)]));
  const seen = new Set();
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
    for (const [page, html] of pages) pages.set(page, html.replace(stale, `/assets/${target}`));
  }
  for (const [page, html] of pages) writeFileSync(join(dir, page), html);
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
