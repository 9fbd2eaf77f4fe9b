// The agent emulator (fleet scale): starts `reservoir server` with two pools; AGENTS emulated
// agents register in pool "parked" and long-poll their (empty) desired sets over real HTTP;
// clients then submit durable 1-GPU spot jobs to pool "work" for SECONDS and the run prints
// submissions/s and latency percentiles. The clients are 32 Node.js connections in this process,
// or with CLIENT=wrk, `wrk -c32` in its own process (bench/submit.lua), so that the emulated
// agents and the load do not share one event loop.
// With WORKING > 0, pool "work" is WORKING emulated agents of 8 GPUs instead of declared nodes:
// each confirms the starts it is sent (reports them running) and reports each job's exit
// 0.5–1.5 s later (seeded: the same runs every time; not all at once, as no fleet's jobs end), and the run also prints the time from each start's decision to its
// confirmation (JobStarted to JobRunning, from the server's events).
// Usage: node bench/agents.mjs RESERVOIR_BIN [AGENTS=1000] [SECONDS=10] [WORKING=0]
//        (bench/fleet.sh wraps it)
import { spawn } from 'node:child_process';
import { mkdtempSync, openSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import http from 'node:http';

const [bin, agentsArg = '1000', secondsArg = '10', workingArg = '0'] = process.argv.slice(2);
const agents = Number(agentsArg);
const seconds = Number(secondsArg);
const working = Number(workingArg);
const dir = mkdtempSync(join(tmpdir(), 'reservoir-parked-'));
writeFileSync(join(dir, 'config.json'), JSON.stringify({
  tick: '1s',
  pools: [{ name: 'work', reserve_price: '1' }, { name: 'parked', reserve_price: '1' }],
  nodes: working > 0 ? [] : [{ name: 'w', pool: 'work', gpus: 8, count: 25 }],
}));
const admin = 'rsv_admin_bench_0123456789abcdef0123456789abcdef';
const server = spawn(bin, ['server', '--listen', '127.0.0.1:0', '--db', join(dir, 'db'), '--config',
  join(dir, 'config.json'), '--port-file', join(dir, 'port'), '--max-connections', '16000'],
{ stdio: process.env.SERVER_LOG ? ["ignore", "ignore", openSync(process.env.SERVER_LOG, "w")] : "ignore", env: { ...process.env, RESERVOIR_ADMIN_TOKEN: admin } });
// A seeded generator (mulberry32) for the jobs' run times.
let seed = 42;
const random = () => {
  seed = (seed + 0x6d2b79f5) | 0;
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const agent = new http.Agent({ keepAlive: true, maxSockets: agents + 2 * working + 64 });
let port;
function call(method, path, body, timeoutMs = 70000) {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? '' : JSON.stringify(body);
    const req = http.request({ host: '127.0.0.1', port, method, path, agent, timeout: timeoutMs,
      headers: { Authorization: `Bearer ${admin}`, 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(data) } },
    (res) => { let b = ''; res.on('data', (c) => { b += c; }); res.on('end', () => resolve({ status: res.statusCode, body: b })); });
    req.on('error', reject);
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.end(data);
  });
}
let stop = false;
try {
  while (!existsSync(join(dir, 'port')) || !readFileSync(join(dir, 'port'), 'utf8').trim()) await sleep(50);
  port = Number(readFileSync(join(dir, 'port'), 'utf8'));
  await call('POST', '/v1/tenants', { name: 'bench' });
  // An emulated agent's node of 8 fake GPUs.
  const register = async (name, pool) => {
    const r = await call('POST', `/v1/nodes/${name}/register`, { pool, gpus: 8, probe: 'fake' });
    if (r.status !== 200) throw new Error(`register ${name}: ${r.status} ${r.body}`);
  };
  // Emulated agents: register, then long-poll (wait 25 s) with the version they know.
  const parked = [];
  for (let i = 0; i < agents; i++) {
    const name = `parked-${i}`;
    await register(name, 'parked');
    parked.push((async () => {
      let known = '';
      while (!stop) {
        const s = await call('POST', `/v1/nodes/${name}/sync?wait=25`, { known, jobs: [] }).catch(() => null);
        if (!s) continue;
        known = JSON.parse(s.body).version || known;
      }
    })());
  }
  // Working agents: confirm each start at once, report its exit a second later.
  const workers = [];
  for (let i = 0; i < working; i++) {
    const name = `work-${i}`;
    await register(name, 'work');
    workers.push((async () => {
      let known = '';
      const confirmed = new Set();  // "job/attempt" reported running
      let reports = [];
      let wake = null;
      while (!stop) {
        const body = { known, jobs: reports };
        const sent = reports;
        reports = [];
        const wait = sent.length ? 0 : 25;
        const waiting = call('POST', `/v1/nodes/${name}/sync?wait=${wait}`, body).catch(() => null);
        // An exit due while this sync is parked goes out on a sync of its own.
        const s = await Promise.race([waiting, new Promise((r) => { wake = r; })]);
        if (s === undefined) { continue; }
        if (!s || s.status !== 200) { reports = sent.concat(reports); continue; }
        const d = JSON.parse(s.body);
        known = d.version || known;
        for (const j of d.jobs || []) {
          const key = `${j.job}/${j.attempt}`;
          if (confirmed.has(key)) continue;
          confirmed.add(key);
          reports.push({ job: j.job, attempt: j.attempt, status: 'running' });
          setTimeout(() => {
            reports.push({ job: j.job, attempt: j.attempt, status: 'exited', success: true, detail: 'exit 0' });
            if (wake) wake();
          }, 500 + Math.floor(random() * 1000));
        }
      }
    })());
  }
  await sleep(1000);  // every agent parked
  const latencies = [];
  const end = Date.now() + seconds * 1000;
  const client = async () => {
    while (Date.now() < end) {
      const t0 = performance.now();
      const r = await call('POST', '/v1/jobs', { tenant: 'bench', pool: 'work', gpus: 1, limit_price: '2', command: 'true' });
      if (r.status !== 201) throw new Error(`submit: ${r.status} ${r.body}`);
      latencies.push(performance.now() - t0);
    }
  };
  const who = `${agents} parked agents${working ? `, ${working} working` : ''}`;
  if (process.env.CLIENT === 'wrk') {
    // wrk blocks this process's event loop while it runs unless it runs asynchronously.
    const out = await new Promise((resolve, reject) => {
      const w = spawn('wrk', ['-t2', '-c32', `-d${seconds}s`, '--latency', '-s',
        new URL('./submit.lua', import.meta.url).pathname, `http://127.0.0.1:${port}/v1/jobs`],
      { env: { ...process.env, RESERVOIR_TOKEN: admin, RESERVOIR_POOL: 'work', RESERVOIR_TENANT: 'bench' } });
      let text = '';
      w.stdout.on('data', (c) => { text += c; });
      w.on('error', reject);
      w.on('close', (code) => (code === 0 ? resolve(text) : reject(new Error(`wrk exited ${code}`))));
    });
    const rate = Number(/Requests\/sec:\s*([\d.]+)/.exec(out)[1]);
    const pct = (p) => /(\d+)%\s+([\d.]+\w+)/g;
    const lat = {};
    for (const m of out.matchAll(pct())) lat[m[1]] = m[2];
    const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(out);
    if (non2xx) throw new Error(`wrk: ${non2xx[1]} submissions refused`);
    console.log(`${who}: ${rate.toFixed(0)} durable submissions/s, p50 ${lat['50']}, p90 ${lat['90']}, p99 ${lat['99']} (wrk, 32 connections, ${seconds} s)`);
  } else {
    await Promise.all(Array.from({ length: 32 }, client));
    latencies.sort((a, b) => a - b);
    const q = (p) => latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))].toFixed(1);
    console.log(`${who}: ${(latencies.length / seconds).toFixed(0)} durable submissions/s, p50 ${q(0.5)} ms, p99 ${q(0.99)} ms (${latencies.length} in ${seconds} s, 32 Node.js clients)`);
  }
  if (working) {
    // The queue the load left drains for DRAIN seconds (default 5) onto the working agents:
    // starts decided then are timed apart, with the agents alone on the machine's cores.
    const loadEnd = Date.now() * 1000;
    await sleep(Number(process.env.DRAIN || 5) * 1000);
    const started = new Map();
    const during = [];
    const after = [];
    for (let since = 0; ;) {
      const r = await call('GET', `/v1/events?since=${since}`);
      const b = JSON.parse(r.body);
      if (!b.events.length) break;
      for (const e of b.events) {
        const key = `${e.job}/${e.attempt}`;
        if (e.type === 'JobStarted') started.set(key, e.at_us);
        if (e.type === 'JobRunning' && started.has(key)) {
          const t = started.get(key);
          (t < loadEnd ? during : after).push((e.at_us - t) / 1000);
        }
      }
      since = b.last_seq;
    }
    for (const [what, list] of [['under the load', during], ['after it, draining the queue', after]]) {
      if (!list.length) continue;
      list.sort((a, b) => a - b);
      const c = (p) => list[Math.min(list.length - 1, Math.floor(p * list.length))].toFixed(1);
      console.log(`decision to confirmed start (JobStarted to JobRunning) ${what}: p50 ${c(0.5)} ms, p99 ${c(0.99)} ms, max ${list[list.length - 1].toFixed(1)} ms over ${list.length} starts`);
    }
  }
  stop = true;
} catch (e) {
  console.error(`error: ${e.message}`);
  process.exitCode = 1;
} finally {
  server.kill('SIGKILL');
  agent.destroy();
  rmSync(dir, { recursive: true, force: true });
  process.exit(process.exitCode || 0);
}
