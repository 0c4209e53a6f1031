// The dashboard in a real browser (Debian's chromium driven by playwright-core) against a
// real 3-node cluster brought up by `rmr up`: three members NORMAL and the device shown; the
// resync of member 2 stopped from the page (with the keyboard, through the confirmation
// dialog); SIGKILL of stg2 under fio load: within a few seconds the page shows it down and its
// dirty map filling; `rmr up` restarts it; the rate limit set and the resync started from the
// page: the progress bar moves and the map drains to clean; a verify started from the page
// reports every chunk the same. No console errors. Screenshots of
// each phase go to test-artifacts/dashboard/ (git-ignored), plus narrow and dark ones.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { MAIN, rmr, rmrOk, until } from '../util/cli-cluster.js';

const BASE = 29000 + (process.pid % 450) * 8;
const NBD_PORT = BASE + 4;
const DASH_PORT = BASE + 5;
const ARTIFACTS = join(process.cwd(), 'test-artifacts', 'dashboard');
const CHROMIUM = process.env.RMR_CHROMIUM ?? '/usr/bin/chromium';
/** Flags for Chromium on these machines (no network but loopback; root needs --no-sandbox). */
const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

let dir = '';
let cluster = '';
let dash: ChildProcess | null = null;
let url = '';
let ctx: BrowserContext | null = null;
let page: Page;
const problems: string[] = [];
let fio: ChildProcess | null = null;

const uri = (): string => `nbd://127.0.0.5:${NBD_PORT}/disk0`;

async function shot(name: string): Promise<void> {
  await page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true });
}

/** The member card's data attributes. */
async function member(id: number): Promise<{ health: string; dirty: number; seen: string }> {
  const el = page.getByTestId(`member-p3-${id}`);
  return { health: (await el.getAttribute('data-health')) ?? '', dirty: Number(await el.getAttribute('data-dirty')), seen: (await el.getAttribute('data-seen-by')) ?? '' };
}

/** Cells of a member's map picture drawn in a dirty colour (read from the canvas). */
function dirtyCells(id: number): Promise<number> {
  // In the page (a string: the tests' type-check has no DOM). Clean cells are green-dominant,
  // dirty ones red-dominant, in the light and the dark palette.
  return page.evaluate(`(() => {
    const cv = document.querySelector('[data-testid="member-p3-${id}"] canvas');
    const d = cv.getContext('2d').getImageData(0, 0, cv.width, cv.height).data;
    let n = 0;
    for (let i = 0; i < d.length; i += 4) if (d[i] > d[i + 1] + 40) n++;
    return n;
  })()`);
}

/** The data-testid of the focused element. */
function focused(): Promise<string | null> {
  return page.evaluate('document.activeElement && document.activeElement.getAttribute("data-testid")');
}

async function progress(id: number): Promise<number> {
  return Number(await page.getByTestId(`sync-progress-p3-${id}`).getAttribute('data-value'));
}

/** Asks the page for an action and confirms it in the dialog. */
async function confirm(click: () => Promise<void>, expect: RegExp): Promise<void> {
  await click();
  await page.getByTestId('confirm-ok').click();
  await until(`notice ${String(expect)}`, async () => (expect.test((await page.getByTestId('notice').textContent()) ?? '') ? true : null), 15_000);
}

before(async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  dir = mkdtempSync(join(tmpdir(), 'rmr-dash-'));
  cluster = join(dir, 'cluster.yaml');
  writeFileSync(
    cluster,
    [
      'cluster: web',
      'state_dir: state',
      'nodes:',
      ...[1, 2, 3].map((i) => `  - {name: stg${i}, addresses: [127.0.0.${i + 1}], port: ${BASE + i - 1}}`),
      `  - {name: cli, addresses: [127.0.0.5], port: ${BASE + 3}}`,
      'pools:',
      '  - name: p3',
      '    chunk_size: 128K',
      '    members: [{node: stg1, member_id: 1}, {node: stg2, member_id: 2}, {node: stg3, member_id: 3}]',
      'stores:',
      ...[1, 2, 3].map((i) => `  - {node: stg${i}, pool: p3, path: stg${i}.img, size: 256M}`),
      'client:',
      '  node: cli',
      '  devices: [{name: disk0, pool: p3}]',
      `  nbd: {socket_dir: nbd, tcp: "127.0.0.5:${NBD_PORT}"}`,
      '',
    ].join('\n'),
  );
  await rmrOk(['up', cluster, '--timeout', '60', '--quiet'], 90_000);
  dash = spawn(process.execPath, [MAIN, 'dashboard', '--cluster', cluster, '--listen', `127.0.0.1:${DASH_PORT}`, '--interval', '500'], { stdio: ['ignore', 'pipe', 'pipe'] });
  url = await new Promise<string>((resolve, reject) => {
    let out = '';
    dash?.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      const m = / at (http:\/\/\S+)/.exec(out);
      if (m !== null) resolve(m[1] as string);
    });
    dash?.on('exit', (code) => reject(new Error(`rmr dashboard exited ${String(code)}`)));
  });
  ctx = await chromium.launchPersistentContext(join(dir, 'chromium-profile'), { executablePath: CHROMIUM, args: CHROMIUM_ARGS, viewport: { width: 1280, height: 900 }, colorScheme: 'light' });
  page = ctx.pages()[0] ?? (await ctx.newPage());
  page.on('console', (m) => {
    // Errors only: the test's own canvas readbacks make Chromium suggest willReadFrequently.
    if (m.type() === 'error') problems.push(`console ${m.type()}: ${m.text()}`);
  });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('requestfailed', (r) => {
    // The event stream is cut when the page closes at the end; anything else is a problem.
    if (!r.url().endsWith('/api/stream')) problems.push(`request failed: ${r.url()} ${r.failure()?.errorText ?? ''}`);
  });
});

after(async () => {
  fio?.kill('SIGKILL');
  await ctx?.close().catch(() => undefined);
  dash?.kill('SIGTERM');
  await rmr(['down', cluster], 60_000);
  const s = await rmr(['status', '--cluster', cluster, '--json']);
  if (s.code === 0) for (const d of (JSON.parse(s.stdout) as { daemons: { pid: number | null }[] }).daemons) if (d.pid !== null) try { process.kill(d.pid, 'SIGKILL'); } catch { /* gone */ }
  rmSync(dir, { recursive: true, force: true });
});

test('the dashboard shows a member killed under load, its map filling, and its resync draining it', async () => {
  await page.goto(url);
  // Phase 1: three members NORMAL, the device with its NBD URI.
  await until('3 members normal', async () => ((await Promise.all([1, 2, 3].map(member))).every((m) => m.health === 'normal') ? true : null), 30_000);
  assert.deepEqual((await Promise.all([1, 2, 3].map(member))).map((m) => m.seen), ['stg1', 'stg2', 'stg3'], 'each map as its own daemon records it');
  const dev = page.getByTestId('device-disk0');
  assert.equal(await dev.getAttribute('data-state'), 'ready');
  assert.match((await dev.textContent()) ?? '', new RegExp(uri().replace(/[./]/g, '\\$&')));
  await page.getByTestId('all-normal').waitFor();
  assert.equal(await dirtyCells(2), 0);
  await shot('1-normal');

  // Phase 2: stop member 2's resync from the keyboard (Tab to the button, Enter, Enter on Confirm).
  let reached = false;
  for (let i = 0; i < 80 && !reached; i++) {
    await page.keyboard.press('Tab');
    reached = (await focused()) === 'sync-stop-p3-2';
  }
  assert.ok(reached, 'the stop button of member 2 is reachable with Tab');
  await page.keyboard.press('Enter');
  await page.getByTestId('confirm').waitFor({ state: 'visible' });
  assert.equal(await focused(), 'confirm-ok', 'the dialog takes the focus');
  await page.keyboard.press('Enter');
  await until('sync stopped', async () => (/done: stg2: rmr-server\/pools\/p3\/sync <- stop/.test((await page.getByTestId('notice').textContent()) ?? '') ? true : null), 15_000);

  // Phase 3: fio writes (rate-limited, so the map visibly fills); stg2 is killed.
  const fioOut = join(dir, 'fio.json');
  fio = spawn('fio', ['--name=w', '--ioengine=nbd', `--uri=${uri()}`, '--rw=randwrite', '--bs=4k', '--iodepth=8', '--rate_iops=120', '--time_based', '--runtime=12', '--size=256M', '--output-format=json', `--output=${fioOut}`], { stdio: 'ignore' });
  const fioDone = new Promise<number | null>((r) => fio?.on('exit', (c) => r(c)));
  await until('fio writing', async () => (Number((await rmr(['ctl', 'read', 'brmr-client/ctl/devices/disk0/stats/requests', '--socket', join(dir, 'state', 'cli', 'control.sock')])).stdout) > 100 ? true : null), 30_000, 100);
  const st = JSON.parse(await rmrOk(['status', '--cluster', cluster, '--json'])) as { daemons: { name: string; pid: number }[] };
  const victim = st.daemons.find((d) => d.name === 'stg2')?.pid;
  assert.ok(typeof victim === 'number');
  const killedAt = Date.now();
  process.kill(victim, 'SIGKILL');
  await until('member 2 down', async () => ((await member(2)).health === 'down' ? true : null), 5_000, 100);
  const downAfter = Date.now() - killedAt;
  assert.equal(await page.getByTestId('daemon-stg2').getAttribute('data-reachable'), 'false');
  const first = await until('a dirty record of member 2', async () => {
    const m = await member(2);
    return m.dirty > 0 && m.seen !== 'stg2' && m.seen !== '' ? m : null;
  }, 10_000, 100);
  const cellsFirst = await dirtyCells(2);
  await until('member 2 map filling', async () => ((await member(2)).dirty > first.dirty + 50 ? true : null), 15_000, 200);
  await until('its picture filling', async () => ((await dirtyCells(2)) > cellsFirst ? true : null), 5_000, 100);
  assert.match((await page.getByTestId('problems').textContent()) ?? '', /member 2 \(stg2\) down: daemon stg2 does not answer/);
  await shot('2-member-down-map-filling');
  assert.equal(await fioDone, 0, 'fio ran through without an error');
  const dirtyDown = (await member(2)).dirty;
  assert.ok(dirtyDown > first.dirty);

  // Phase 4: rmr up restarts stg2; its sync stays stopped (the operator's stop is kept).
  await rmrOk(['up', cluster, '--timeout', '60', '--quiet'], 90_000);
  await until('member 2 back, dirty, sync stopped', async () => {
    const m = await member(2);
    return m.health === 'degraded' && m.seen === 'stg2' && m.dirty > 0 ? m : null;
  }, 30_000, 200);
  const cellsBack = await dirtyCells(2);
  assert.ok(cellsBack > 0);
  await shot('3-back-sync-stopped');
  // A rate limit from the page, then start: the progress bar moves and the map drains.
  await page.getByTestId('sync-rate-input-p3-2').fill('12M');
  await confirm(() => page.getByTestId('sync-rate-set-p3-2').click(), /done: stg2: rmr-server\/pools\/p3\/sync_rate <- 12582912/);
  const p0 = await progress(2);
  await confirm(() => page.getByTestId('sync-start-p3-2').click(), /done: stg2: rmr-server\/pools\/p3\/sync <- start/);
  await until('member 2 syncing', async () => ((await member(2)).health === 'syncing' ? true : null), 10_000, 100);
  const p1 = await until('progress moves', async () => {
    const v = await progress(2);
    return v > p0 ? v : null;
  }, 20_000, 100);
  await until('progress moves again', async () => ((await progress(2)) > p1 ? true : null), 20_000, 100);
  const cellsMid = await dirtyCells(2);
  await shot('4-resync');
  assert.match((await page.getByTestId('member-p3-2').textContent()) ?? '', /limit 12 MiB\/s/);
  // The README's picture: health and the pool, with the map about half drained.
  await until('resync 40 % through', async () => ((await progress(2)) >= 0.4 * 2048 || (await member(2)).health === 'normal' ? true : null), 60_000, 100);
  const box = await page.locator('section.pool').boundingBox();
  if (box !== null) await page.screenshot({ path: join(ARTIFACTS, 'readme-resync.png'), clip: { x: 0, y: 0, width: 1280, height: Math.ceil(box.y + box.height + 8) } });
  await until('member 2 clean', async () => {
    const m = await member(2);
    return m.health === 'normal' && m.dirty === 0 ? true : null;
  }, 60_000, 200);
  assert.equal(await dirtyCells(2), 0, 'the picture drained to clean');
  assert.ok(cellsMid < cellsBack, `the picture drains during the resync (${cellsBack} -> ${cellsMid} dirty cells)`);
  await page.getByTestId('all-normal').waitFor();
  await shot('5-clean');
  // Verify from the page: started through the dialog, its report shown when done.
  await confirm(() => page.getByTestId('verify-start-p3').click(), /done: cli: rmr-client\/pools\/p3\/verify <- start/);
  const report = await until('the verify report', async () => {
    const el = page.getByTestId('verify-report-p3');
    const t = (await el.count()) === 0 ? '' : ((await el.textContent()) ?? '');
    return /^done: .*2048 compared, 0 skipped \(dirty\), 0 differing/.test(t) ? t : null;
  }, 120_000, 200);
  assert.match(report, /source member 1/);
  // The resync throughput has its own chart, with a series for stg2.
  await page.getByTestId('chart-sync_bytes').scrollIntoViewIfNeeded();
  await until('the resync chart', async () => (/p3 stg2/.test((await page.getByTestId('chart-sync_bytes').textContent()) ?? '') ? true : null), 5_000, 100);

  // A narrow window and dark colours: no sideways scrolling, the same content.
  await page.setViewportSize({ width: 390, height: 844 });
  await page.emulateMedia({ colorScheme: 'dark' });
  await page.waitForTimeout(300);
  assert.equal(await page.evaluate('document.documentElement.scrollWidth <= window.innerWidth + 1'), true, 'no horizontal overflow at 390 px');
  const bg = await page.evaluate('getComputedStyle(document.body).backgroundColor');
  assert.equal(bg, 'rgb(20, 20, 23)', 'dark background');
  await shot('6-narrow-dark');
  assert.ok(downAfter < 5_000, `down shown ${downAfter} ms after the kill`);
  assert.deepEqual(problems, [], 'no console errors, page errors or failed requests');
});
