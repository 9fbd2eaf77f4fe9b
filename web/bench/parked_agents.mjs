// Submissions while many agents are parked on long-polls (issue: fleet scale). Starts `reservoir
// server` with two pools; N emulated agents register in pool "parked" and long-poll their
// (empty) desired sets over real HTTP; 32 clients then submit 1-GPU spot jobs to pool "work"
// as fast as they are acknowledged (durable). Prints submissions/s and latency percentiles.
// With WORKING > 0, pool "work" is WORKING emulated agents of 8 GPUs instead of declared nodes:
// each confirms the starts it is sent (reports them running) and reports each job's exit a
// second later, and the run also prints the time from each start's decision to its
// confirmation (JobStarted to JobRunning, from the server's events).
// Usage: node parked_agents.mjs RESERVOIR_BIN [AGENTS=1000] [SECONDS=10] [WORKING=0]
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
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
{ stdio: 'ignore', env: { ...process.env, RESERVOIR_ADMIN_TOKEN: admin } });
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
          }, 1000);
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
  await Promise.all(Array.from({ length: 32 }, client));
  latencies.sort((a, b) => a - b);
  const q = (p) => latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))].toFixed(1);
  console.log(`${agents} parked agents${working ? `, ${working} working` : ''}: ${(latencies.length / seconds).toFixed(0)} durable submissions/s, p50 ${q(0.5)} ms, p99 ${q(0.99)} ms (${latencies.length} in ${seconds} s, 32 clients)`);
  if (working) {
    await sleep(3000);  // the last starts confirmed
    const started = new Map();
    const confirm = [];
    for (let since = 0; ;) {
      const r = await call('GET', `/v1/events?since=${since}`);
      const b = JSON.parse(r.body);
      if (!b.events.length) break;
      for (const e of b.events) {
        const key = `${e.job}/${e.attempt}`;
        if (e.type === 'JobStarted') started.set(key, e.at_us);
        if (e.type === 'JobRunning' && started.has(key)) confirm.push((e.at_us - started.get(key)) / 1000);
      }
      since = b.last_seq;
    }
    confirm.sort((a, b) => a - b);
    const c = (p) => confirm[Math.min(confirm.length - 1, Math.floor(p * confirm.length))].toFixed(1);
    console.log(`decision to confirmed start (JobStarted to JobRunning): p50 ${c(0.5)} ms, p99 ${c(0.99)} ms, max ${confirm[confirm.length - 1].toFixed(1)} ms over ${confirm.length} starts`);
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
