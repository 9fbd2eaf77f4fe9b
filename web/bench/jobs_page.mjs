// How the dashboard holds up with many jobs in the store (docs/dashboard.md, "Scale"): submits N
// jobs to `reservoir up` (8 fake GPUs: 8 run, the rest wait), then times in Debian's chromium the
// Jobs page from navigation to its first table of rows, the Overview, and the reads behind them.
// Usage: node jobs_page.mjs RESERVOIR_BIN [JOBS=100000]. Prints figures; asserts nothing.
import { spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const [bin, count = '100000'] = process.argv.slice(2);
const jobs = Number(count);
const port = await new Promise((resolve) => {
  const s = createServer();
  s.listen(0, '127.0.0.1', () => { const { port: p } = s.address(); s.close(() => resolve(p)); });
});
const base = `http://127.0.0.1:${port}`;
const dir = mkdtempSync(join(tmpdir(), 'reservoir-bench-'));
chmodSync(dir, 0o755);
const up = spawn(bin, ['up', '--listen', `127.0.0.1:${port}`, '--dir', join(dir, 'data'), '--fake-gpus', '8'],
  { stdio: 'ignore', detached: true });
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
try {
  const tokenFile = join(dir, 'data', 'admin-token');
  while (!existsSync(tokenFile) || !readFileSync(tokenFile, 'utf8').trim()) await sleep(100);
  const admin = readFileSync(tokenFile, 'utf8').trim();
  const call = async (method, path, body) => {
    const r = await fetch(base + path, { method, headers: { Authorization: `Bearer ${admin}` },
      body: body && JSON.stringify(body) });
    return { status: r.status, text: await r.text() };
  };
  await call('POST', '/v1/tenants', { name: 'bench' });
  const t0 = Date.now();
  let next = 0;
  const worker = async () => {
    while (next < jobs) {
      const i = next++;
      const r = await call('POST', '/v1/jobs', { tenant: 'bench', pool: 'gpu', gpus: 1, limit_price: String(1 + (i % 97) / 10), name: `job-${i}`, command: 'sleep 3600' });
      if (r.status !== 201) throw new Error(`submit ${i}: ${r.status} ${r.text}`);
    }
  };
  await Promise.all(Array.from({ length: 32 }, worker));
  console.log(`submitted ${jobs} jobs in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  const timed = async (path) => {
    const s = performance.now();
    const r = await call('GET', path);
    return `${path}: ${(performance.now() - s).toFixed(1)} ms, ${r.text.length} bytes`;
  };
  for (const p of ['/metrics', '/v1/market', '/v1/usage', '/v1/jobs?order=desc&limit=100&positions=true&state=active',
    '/v1/jobs?order=desc&limit=100&state=all']) {
    await call('GET', p);  // warm
    console.log(await timed(p));
  }
  const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || '/usr/bin/chromium', args: ['--no-sandbox'] });
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  await context.addInitScript((t) => sessionStorage.setItem('reservoir.token', t), admin);
  const page = await context.newPage();
  for (const [name, hash, ready] of [['Jobs', '#/jobs', '#page-jobs tbody tr[data-id]'],
    ['Overview', '#/overview', 'table.counts'], ['Jobs again', '#/jobs', '#page-jobs tbody tr[data-id]']]) {
    const s = Date.now();
    await page.goto(`${base}/${hash}`);
    await page.locator(ready).first().waitFor({ timeout: 60000 });
    const ms = Date.now() - s;
    const paint = await page.evaluate(() => (performance.getEntriesByName('first-contentful-paint')[0] || {}).startTime);
    console.log(`${name} page: rows shown ${ms} ms after navigation (first contentful paint ${paint ? paint.toFixed(0) : '?'} ms)`);
  }
  await browser.close();
} finally {
  try { process.kill(-up.pid, 'SIGINT'); } catch (e) { /* gone */ }
  await sleep(2000);
  try { process.kill(-up.pid, 'SIGKILL'); } catch (e) { /* gone */ }
  rmSync(dir, { recursive: true, force: true });
}
