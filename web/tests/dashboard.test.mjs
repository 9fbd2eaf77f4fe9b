// The dashboard in a real browser (docs/dashboard.md, "Tests"): Debian's chromium, driven by
// playwright-core, against `reservoir up` (a real server and agent with fake GPUs running real
// job processes). Usage: node dashboard.test.mjs RESERVOIR_BIN SCREENSHOT_DIR
import { spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, mkdirSync, readFileSync, existsSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';

const [bin, shots] = process.argv.slice(2);
if (!bin || !shots) {
  console.error('usage: node dashboard.test.mjs RESERVOIR_BIN SCREENSHOT_DIR');
  process.exit(2);
}
const chromiumPath = process.env.CHROMIUM || '/usr/bin/chromium';
if (!existsSync(chromiumPath)) {
  console.error(`${chromiumPath} is missing: scripts/setup installs Debian's chromium`);
  process.exit(1);
}
mkdirSync(shots, { recursive: true });

const freePort = () => new Promise((resolve) => {
  const s = createServer();
  s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
});
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
// Waits for a condition the system reaches by itself (a job starting, a notice): polls, and
// fails with `what` after a generous bound rather than assuming any timing.
async function until(what, fn, ms = 60000) {
  const end = Date.now() + ms;
  let last;
  for (;;) {
    try { const v = await fn(); if (v) return v; } catch (e) { last = e; }
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}${last ? `: ${last.message}` : ''}`);
    await sleep(100);
  }
}

const dir = mkdtempSync(join(tmpdir(), 'reservoir-dashboard-'));
chmodSync(dir, 0o755);  // jobs run as an unprivileged user and must reach their folders
const port = await freePort();
const base = `http://127.0.0.1:${port}`;
const up = spawn(bin, ['up', '--listen', `127.0.0.1:${port}`, '--dir', join(dir, 'data'), '--fake-gpus', '8'],
  { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
let upOut = '';
up.stdout.on('data', (d) => { upOut += d; });
up.stderr.on('data', (d) => { upOut += d; });
let browser;
const failures = [];

async function call(token, method, path, body) {
  const r = await fetch(base + path, { method, headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await r.text();
  return { status: r.status, body: text ? JSON.parse(text) : null };
}

try {
  const tokenFile = join(dir, 'data', 'admin-token');
  await until('reservoir up to print its token', () => existsSync(tokenFile) && readFileSync(tokenFile, 'utf8').trim());
  const admin = readFileSync(tokenFile, 'utf8').trim();
  await until('the agent to register', async () => (await call(admin, 'GET', '/v1/nodes')).body.some((n) => n.agent));
  for (const t of ['team-a', 'team-b']) assert.equal((await call(admin, 'POST', '/v1/tenants', { name: t })).status, 201);
  const tokenA = (await call(admin, 'POST', '/v1/tokens', { tenant: 'team-a' })).body.token;
  const tokenB = (await call(admin, 'POST', '/v1/tokens', { tenant: 'team-b' })).body.token;
  const evil = '<img src=x onerror=alert(1)>';

  browser = await chromium.launch({ executablePath: chromiumPath, args: ['--no-sandbox'] });
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  const problems = [];
  page.on('dialog', (d) => { problems.push(`a dialog opened: ${d.message()}`); d.dismiss(); });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => { if (m.type() === 'error' && !/status of 40[349]/.test(m.text())) problems.push(`console: ${m.text()}`); });
  const refused = [];  // for diagnosis: some refusals are the point of a test
  if (process.env.DEBUG) page.on('response', (r) => console.log('  ', r.status(), r.url()));
  page.on('response', (r) => { if (r.status() >= 400) refused.push(`${r.status()} ${r.request().method()} ${r.url()}`); });

  async function test(name, fn) {
    try { await fn(); console.log(`ok   ${name}`); } catch (e) {
      failures.push(name);
      console.log(`FAIL ${name}\n     ${e.stack}${problems.concat(refused.splice(0)).map((p) => `\n     browser: ${p}`).join('')}`);
      await page.screenshot({ path: join(shots, `failed-${name.replace(/\W+/g, '-')}.png`) }).catch(() => {});
    }
  }
  const signIn = async (token) => {
    await page.goto(`${base}/#/overview`);
    await page.evaluate(() => sessionStorage.clear());
    await page.reload();
    await page.getByLabel('API token').waitFor();
    // Keyboard only: the token field has focus, Enter submits.
    await page.keyboard.type(token);
    await page.keyboard.press('Enter');
    await page.locator('#page-overview h1').waitFor();
  };
  const rowOf = (id) => page.locator(`#page-jobs tr[data-id="${id}"]`);

  // Jobs as the fixtures: A runs 8 GPUs as spot (on B's lendable reservation), A's small bid
  // waits below the price, B has a job of its own.
  assert.equal((await call(admin, 'POST', '/v1/reservations', { tenant: 'team-b', pool: 'gpu', gpus: 8, duration: '2h', lend: true })).status, 201);
  const jobB = (await call(tokenB, 'POST', '/v1/jobs', { pool: 'gpu', gpus: 1, tier: 'spot', limit_price: '1', name: 'b-secret', command: 'sleep 600' })).body;
  let spotA;
  let waitingA;

  await test('a tenant signs in with its token, kept in sessionStorage only', async () => {
    await signIn(tokenA);
    assert.equal(await page.evaluate(() => sessionStorage.getItem('reservoir.token')), tokenA);
    assert.equal(await page.evaluate(() => localStorage.length), 0);
    assert.match(await page.locator('#who').textContent(), /team-a/);
  });

  await test('a job submitted through the API appears and starts without reloading', async () => {
    await page.goto(`${base}/#/jobs`);
    await page.locator('#page-jobs h1').waitFor();
    await page.evaluate(() => { window.__marker = 'same page'; });
    spotA = (await call(tokenA, 'POST', '/v1/jobs', { pool: 'gpu', gpus: 8, tier: 'spot', limit_price: '5', notice: '3s', name: evil, command: 'sleep 600' })).body;
    await rowOf(spotA.id).waitFor({ timeout: 30000 });
    await until('the job to show running', async () => (await rowOf(spotA.id).textContent()).includes('running'));
    assert.equal(await page.evaluate(() => window.__marker), 'same page', 'the page was reloaded');
  });

  await test('user strings are shown as text, never run', async () => {
    const cell = rowOf(spotA.id).locator('td').nth(1);
    assert.equal(await cell.textContent(), evil);
    assert.equal(await page.locator('#page-jobs img').count(), 0);
    await page.goto(`${base}/#/jobs/${spotA.id}`);
    await page.locator('h1', { hasText: evil }).waitFor();
    assert.equal(await page.locator('main img').count(), 0);
    assert.deepEqual(problems, []);
  });

  await test('a tenant sees only its own jobs, and the API refuses the rest', async () => {
    await page.goto(`${base}/#/jobs`);
    await page.selectOption('#f-state', 'all');
    await rowOf(spotA.id).waitFor();
    assert.equal(await rowOf(jobB.id).count(), 0);
    assert.equal(await page.getByText('b-secret').count(), 0);
    // From the page's own origin, with its own token: the API decides, not the page.
    const r = await page.evaluate(async (id) => {
      const t = sessionStorage.getItem('reservoir.token');
      const get = async (p) => (await fetch(p, { headers: { Authorization: `Bearer ${t}` } })).status;
      return { job: await get(`/v1/jobs/${id}`), tokens: await get('/v1/tokens'),
        list: await (await fetch('/v1/jobs?state=all&tenant=team-b', { headers: { Authorization: `Bearer ${t}` } })).json() };
    }, jobB.id);
    assert.equal(r.job, 404);
    assert.equal(r.tokens, 403);
    assert.deepEqual(r.list, []);
  });

  await test('the market says what 4 GPUs would cost, above the spot jobs it must outbid', async () => {
    await page.goto(`${base}/#/market`);
    await page.fill('#q-gpus-gpu', '4');
    await page.getByRole('button', { name: 'What would they cost now?' }).click();
    // team-b lends its 8 reserved GPUs and team-a's spot job at 5 holds all of them: 4 more
    // must outbid it.
    const m = (await call(admin, 'GET', '/v1/market')).body[0];
    assert.equal(m.supply_gpus, 8, JSON.stringify(m));
    assert.deepEqual(m.held, [{ limit_price: '5.000000', gpus: 8 }]);
    const text = await until('the estimate', async () => page.locator('#q-out-gpu').textContent());
    assert.match(text, /^About 5\.\d+\/GPU-h for 4 GPUs: 0 free for spot now, the rest by outbidding running spot jobs holding 8 GPUs/);
    assert.ok(Number(text.match(/About ([\d.]+)/)[1]) > 5, text);
  });

  await test('a pending job shows the reason the scheduler gives', async () => {
    waitingA = (await call(tokenA, 'POST', '/v1/jobs', { pool: 'gpu', gpus: 4, tier: 'spot', limit_price: '1.5', name: 'a-waits', command: 'sleep 600' })).body;
    const why = await until('a reason for the waiting job', async () => {
      const w = await call(tokenA, 'GET', `/v1/jobs/${waitingA.id}/why`);
      return w.status === 200 && w.body.reason !== 'not_decided' ? w.body : null;
    });
    await page.goto(`${base}/#/jobs`);
    await until('the reason in the jobs table', async () => (await rowOf(waitingA.id).textContent()).includes(why.reason));
    await page.goto(`${base}/#/jobs/${waitingA.id}`);
    assert.equal(await page.locator('[data-reason]').getAttribute('data-reason'), why.reason);
  });

  await test('a reclaim shows the notice in the job timeline', async () => {
    await page.goto(`${base}/#/jobs/${spotA.id}`);
    await page.locator('#page-jobs h1').waitFor();
    assert.equal((await call(tokenB, 'POST', '/v1/jobs', { pool: 'gpu', gpus: 8, tier: 'reserved', name: 'b-owner', command: 'sleep 600' })).status, 201);
    await page.locator('[data-event="NoticeSent"]').first().waitFor({ timeout: 30000 });
    const text = await page.locator('tr', { has: page.locator('[data-event="NoticeSent"]') }).first().textContent();
    assert.match(text, /reclaim/);
  });

  await test('cancel from the page', async () => {
    await page.goto(`${base}/#/jobs/${waitingA.id}`);
    await page.getByRole('button', { name: 'Cancel job' }).click();
    await until('the job to be cancelled', async () => (await page.locator('.pill[data-state]').getAttribute('data-state')) === 'cancelled');
    assert.equal((await call(tokenA, 'GET', `/v1/jobs/${waitingA.id}`)).body.state, 'cancelled');
  });

  await test("the Overview's GPU counts equal /metrics", async () => {
    await signIn(admin);
    await until('the page and /metrics to agree', async () => {
      await page.reload();
      await page.locator('table.counts').first().waitFor();
      const shown = await page.$$eval('table.counts td[data-state]', (cells) => cells.map((c) =>
        [c.closest('table').dataset.pool, c.dataset.state, Number(c.textContent)]));
      const metrics = await (await fetch(`${base}/metrics`)).text();
      assert.ok(shown.length >= 6);
      let total = 0;
      for (const [pool, state, n] of shown) {
        const m = metrics.match(new RegExp(`^reservoir_gpus\\{pool="${pool}",state="${state}"\\} (\\d+)$`, 'm'));
        assert.ok(m, `no metric for ${pool}/${state}`);
        if (Number(m[1]) !== n) return false;
        total += n;
      }
      assert.equal(total, 8);
      return true;
    });
  });

  await test('every page: labelled controls, keyboard navigation, a screenshot', async () => {
    const pages = ['overview', 'jobs', 'reservations', 'market', 'ledger', 'nodes', 'waste'];
    await page.goto(`${base}/#/overview`);
    await page.locator('#page-overview h1').waitFor();
    for (const p of pages) {
      // Reach the page's link with the keyboard and follow it with Enter.
      await page.locator(`nav a[href="#/${p}"]`).focus();
      await page.keyboard.press('Enter');
      await page.locator(`#page-${p} h1`).waitFor();
      await until(`focus on the ${p} heading`, async () => page.evaluate((id) => document.activeElement === document.querySelector(`#page-${id} h1`), p));
      const unlabelled = await page.$$eval('input, select, button, a[href], textarea', (els) => els.filter((el) => {
        if (el.closest('[hidden]') || el.offsetParent === null && el.type !== 'hidden') return false;
        const name = (el.labels && [...el.labels].map((l) => l.textContent).join(' ')) || el.getAttribute('aria-label') || el.textContent || el.title;
        return !name || !name.trim();
      }).map((el) => el.outerHTML.slice(0, 80)));
      assert.deepEqual(unlabelled, [], `${p}: controls without a name`);
      await page.screenshot({ path: join(shots, `${p}.png`), fullPage: true });
    }
    assert.deepEqual(problems, []);
  });

  await test('the waste report and ledger agree with the API', async () => {
    const w = (await call(admin, 'GET', '/v1/waste')).body;
    const row = w.reserved.find((r) => r.tenant === 'team-b');
    assert.ok(row && row.reserved_gpu_s > 0, JSON.stringify(w));
    await page.goto(`${base}/#/waste`);
    await page.locator('#page-waste tr[data-id="team-b/gpu"]').waitFor();
    await page.goto(`${base}/#/ledger`);
    await page.selectOption('#l-tenant', 'team-a');
    await until('team-a ledger', async () => (await page.locator('#page-ledger dd').first().textContent()) === 'team-a');
    const l = (await call(admin, 'GET', '/v1/ledger?tenant=team-a')).body;
    assert.equal(await page.locator('[data-balance]').textContent(), l.balance);
  });
  await test('a reservation quote says plainly whether the GPUs fit', async () => {
    await page.goto(`${base}/#/reservations`);
    await page.locator('#page-reservations h1').waitFor();
    await page.fill('#r-gpus', '8');
    await page.fill('#r-for', '2');
    await page.getByRole('button', { name: 'Quote' }).click();
    await until('a unit to be asked for', async () => (await page.locator('#r-quote').textContent()).includes('give a unit'));
    await page.fill('#r-for', '1h');
    await page.getByRole('button', { name: 'Quote' }).click();
    // team-b's reservation holds all 8 GPUs for 2 hours.
    await until('the refusal', async () => (await page.locator('#r-quote').textContent()).startsWith('Does not fit: at most 0 GPUs'));
  });

  await test('no page error, CSP violation or console error in the whole run', async () => {
    assert.deepEqual(problems, []);
  });
} catch (e) {
  failures.push(`setup: ${e.message}`);
  console.log(`FAIL setup\n     ${e.stack}\n--- reservoir up ---\n${upOut}`);
} finally {
  if (browser) await browser.close();
  try { process.kill(-up.pid, 'SIGINT'); } catch (e) { /* gone */ }
  await new Promise((r) => { if (up.exitCode !== null) r(); else { up.on('exit', r); setTimeout(() => { try { process.kill(-up.pid, 'SIGKILL'); } catch (e) { /* gone */ } r(); }, 15000); } });
  rmSync(dir, { recursive: true, force: true });
}
console.log(failures.length ? `${failures.length} failed: ${failures.join('; ')}` : 'all passed');
process.exit(failures.length ? 1 : 0);
