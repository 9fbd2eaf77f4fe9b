// The Reservoir dashboard (docs/dashboard.md). Plain DOM, no framework: every string from the
// server enters the page as text (h() never parses HTML), the token lives in sessionStorage,
// and every call goes to this same origin, where the API enforces who sees what.
'use strict';
(() => {
  const TOKEN_KEY = 'reservoir.token';
  const HOUR_US = 3600e6;
  const STATES = ['reserved_used', 'lent', 'spot_used', 'idle_reserved', 'idle', 'down'];
  const STATE_LABEL = {
    reserved_used: 'reserved, used by owners', lent: 'lent to spot', spot_used: 'spot (unreserved)',
    idle_reserved: 'reserved, idle', idle: 'idle', down: 'down',
  };
  const STATE_COLOR = {
    reserved_used: '#2456c7', lent: '#7a4fd0', spot_used: '#e08a1e', idle_reserved: '#9fb4e6',
    idle: '#c9ced8', down: '#b3261e',
  };
  const WASTE = ['owner_used', 'lent_sold', 'idle_unsold', 'not_lendable'];
  const WASTE_LABEL = {
    owner_used: 'used by the owner', lent_sold: 'lent and sold', idle_unsold: 'idle, lendable, unsold',
    not_lendable: 'idle, not lendable',
  };
  const PAGES = [
    ['overview', 'Overview'], ['jobs', 'Jobs'], ['reservations', 'Reservations'],
    ['market', 'Market'], ['ledger', 'Ledger'], ['nodes', 'Nodes'], ['waste', 'Waste'],
  ];
  const app = { token: sessionStorage.getItem(TOKEN_KEY), who: null, seq: 0, route: null,
    charts: [], stop: [], refresh: null, pending: null, polling: false };

  // ---- DOM ---------------------------------------------------------------------------------
  function h(tag, attrs, ...kids) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else if (k === 'class') el.className = v;
      else el.setAttribute(k, v === true ? '' : String(v));
    }
    for (const kid of kids.flat(Infinity)) {
      if (kid === null || kid === undefined || kid === false) continue;
      el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
    }
    return el;
  }
  const $ = (id) => document.getElementById(id);
  function say(text, isError) {
    const s = $('status');
    s.textContent = text;
    s.className = isError ? 'error' : '';
    if (text) setTimeout(() => { if (s.textContent === text) s.textContent = ''; }, 6000);
  }

  // ---- Formatting --------------------------------------------------------------------------
  const pad = (n) => String(n).padStart(2, '0');
  function when(us) {
    if (us === undefined || us === null) return '';
    const d = new Date(us / 1000);
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
      `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }
  function dur(seconds) {
    seconds = Math.max(0, Math.round(seconds));
    if (seconds < 120) return `${seconds}s`;
    if (seconds < 7200) return `${Math.round(seconds / 60)}m`;
    if (seconds < 172800) return `${(seconds / 3600).toFixed(1)}h`;
    return `${(seconds / 86400).toFixed(1)}d`;
  }
  const ago = (us) => `${dur((Date.now() * 1000 - us) / 1e6)} ago`;
  const money = (s) => (s === undefined ? '' : Number(s).toFixed(2));
  const gpuh = (s) => (s / 3600).toFixed(2);
  const pct = (a, b) => (b > 0 ? `${(100 * a / b).toFixed(0)}%` : '–');

  // ---- API ---------------------------------------------------------------------------------
  class ApiError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }
  async function api(method, path, body) {
    const headers = { Authorization: `Bearer ${app.token}` };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const r = await fetch(path, { method, headers, cache: 'no-store',
      body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await r.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (e) { data = text; }
    if (!r.ok) {
      const err = data && data.error ? data.error : { message: text };
      if (r.status === 401) signOut(`Signed out: ${err.message}`);
      throw new ApiError(r.status, (err.field ? `${err.field}: ` : '') + err.message);
    }
    return { data, link: r.headers.get('Link') };
  }
  const get = async (path) => (await api('GET', path)).data;
  function nextCursor(link) {  // RFC 8288 Link: <...>; rel="next"
    const m = link && link.match(/<([^>]*)>;\s*rel="next"/);
    return m ? m[1] : null;
  }

  // ---- Charts (uPlot) ----------------------------------------------------------------------
  function chart(parent, title, series, data, opts) {
    const width = Math.max(320, parent.clientWidth - 8);
    const u = new uPlot(Object.assign({
      title, width, height: 220, series, scales: { x: { time: true } },
      cursor: { drag: { x: false, y: false } }, legend: { live: false },
    }, opts || {}), data, parent);
    app.charts.push(u);
    return u;
  }
  // GPUs by state over time, stacked: each series draws the sum of itself and those after it,
  // largest first, so each band shows one state.
  function usageChart(parent, history, now) {
    const points = history.concat([Object.assign({ at_us: Date.now() * 1000 }, now)]);
    const xs = points.map((p) => p.at_us / 1e6);
    const cols = [];
    let acc = points.map(() => 0);
    const order = STATES.slice().reverse();
    const stacked = {};
    for (const s of order) { acc = acc.map((v, i) => v + (points[i][s] || 0)); stacked[s] = acc; }
    const series = [{}];
    for (const s of STATES) {
      cols.push(stacked[s]);
      series.push({ label: STATE_LABEL[s], stroke: STATE_COLOR[s], fill: STATE_COLOR[s],
        paths: uPlot.paths.stepped({ align: 1 }), points: { show: false } });
    }
    return chart(parent, 'GPUs by state', series, [xs, ...cols]);
  }
  function priceChart(parent, history, price) {
    const pts = history.concat([{ at_us: Date.now() * 1000, price }]);
    return chart(parent, 'Clearing price per GPU-hour', [{}, { label: 'price', stroke: '#2456c7',
      paths: uPlot.paths.stepped({ align: 1 }), points: { show: false } }],
    [pts.map((p) => p.at_us / 1e6), pts.map((p) => Number(p.price))]);
  }

  // ---- Shell -------------------------------------------------------------------------------
  function signOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    app.token = null;
    app.who = null;
    render(message);
  }
  function shell() {
    const nav = $('nav');
    // Following the link to the page shown redraws it (no hashchange fires).
    nav.replaceChildren(...PAGES.map(([id, label]) => h('a', { href: `#/${id}`, onclick: (e) => {
      if (location.hash === `#/${id}`) { e.preventDefault(); render(); }
    } }, label)));
    $('who').textContent = app.who.admin ? 'admin' : `tenant ${app.who.tenant}`;
    $('signout').hidden = false;
  }
  function markNav(page) {
    for (const a of $('nav').querySelectorAll('a')) {
      if (a.getAttribute('href') === `#/${page}`) a.setAttribute('aria-current', 'page');
      else a.removeAttribute('aria-current');
    }
  }
  function signIn(message) {
    $('nav').replaceChildren();
    $('who').textContent = '';
    $('signout').hidden = true;
    const input = h('input', { id: 'token', type: 'password', autocomplete: 'off', required: true });
    const err = h('p', { class: 'error', role: 'alert' }, message || '');
    const form = h('form', { class: 'card signin', onsubmit: async (e) => {
      e.preventDefault();
      app.token = input.value.trim();
      try {
        app.who = await get('/v1/whoami');
        sessionStorage.setItem(TOKEN_KEY, app.token);
        render();
      } catch (x) {
        app.token = null;
        err.textContent = x.status === 401 ? 'That token is not known to this server.' : x.message;
      }
    } },
    h('h1', {}, 'Sign in'),
    h('p', { class: 'muted' }, 'Paste an API token: a tenant token shows that tenant, an admin token everything.'),
    h('label', { for: 'token' }, 'API token'), input, err,
    h('p', {}, h('button', { type: 'submit', class: 'primary' }, 'Sign in')));
    $('main').replaceChildren(form);
    input.focus();
  }
  function teardown() {
    teardownCharts();
    for (const f of app.stop) f();
    app.stop = [];
    app.refresh = null;
  }
  async function render(message) {
    teardown();
    if (!app.token) return signIn(message);
    if (!app.who) {
      try { app.who = await get('/v1/whoami'); } catch (e) { return signIn(e.message); }
    }
    shell();
    const parts = (location.hash.replace(/^#\/?/, '') || 'overview').split('/');
    const page = PAGES.some(([id]) => id === parts[0]) ? parts[0] : 'overview';
    markNav(page);
    const main = $('main');
    const view = h('div', { id: `page-${page}` });
    main.replaceChildren(view);
    const draw = VIEWS[page];
    app.refresh = async () => {
      try { await draw(view, parts.slice(1)); } catch (e) {
        if (e instanceof ApiError && e.status === 401) return;
        view.replaceChildren(h('p', { class: 'error', role: 'alert' }, e.message));
      }
    };
    await app.refresh();
    const heading = view.querySelector('h1');
    if (heading) { heading.tabIndex = -1; heading.focus(); }
    startPolling();
  }
  // Live: long-poll the event stream and redraw the page (at most twice a second) on news.
  async function startPolling() {
    if (app.polling) return;
    app.polling = true;
    try {
      app.seq = (await get(`/v1/events?since=${2 ** 50}`)).last_seq;
      while (app.token) {
        const r = await get(`/v1/events?since=${app.seq}&wait=25`);
        app.seq = r.last_seq;
        if (r.events.length && app.refresh && !app.pending) {
          app.pending = setTimeout(() => { app.pending = null; if (app.refresh) app.refresh(); }, 500);
        }
      }
    } catch (e) {
      if (app.token) setTimeout(() => { app.polling = false; startPolling(); }, 2000);
      return;
    }
    app.polling = false;
  }

  // Tables with sortable columns: cols = [[key, label, cell(row) -> node|string, numeric]].
  function table(cols, rows, opts) {
    opts = opts || {};
    let key = opts.sort || null;
    let dir = opts.dir || 1;
    const tbody = h('tbody');
    const heads = cols.map(([k, label, , num]) => {
      const b = h('button', { type: 'button', onclick: () => {
        dir = key === k ? -dir : 1;
        key = k;
        fill();
      } }, label);
      return h('th', { scope: 'col', class: num ? 'num' : null }, b);
    });
    function fill() {
      const sorted = rows.slice();
      if (key) {
        sorted.sort((a, b) => {
          const x = a[key]; const y = b[key];
          if (x === y) return 0;
          if (x === undefined) return 1;
          if (y === undefined) return -1;
          return (typeof x === 'number' && typeof y === 'number' ? x - y : String(x).localeCompare(String(y))) * dir;
        });
      }
      tbody.replaceChildren(...sorted.map((r) => h('tr', { 'data-id': r.id },
        cols.map(([, , cell, num]) => h('td', { class: num ? 'num' : null }, cell(r))))));
      if (!sorted.length) tbody.append(h('tr', {}, h('td', { colspan: cols.length, class: 'muted' }, opts.empty || 'Nothing to show.')));
    }
    fill();
    return h('table', { 'aria-label': opts.label || null }, h('thead', {}, h('tr', {}, heads)), tbody);
  }
  function select(id, label, options, value, onchange) {
    const s = h('select', { id, onchange: () => onchange(s.value) },
      options.map(([v, text]) => h('option', { value: v, selected: v === value }, text)));
    return h('label', { for: id }, label, s);
  }
  function field(id, label, attrs) {
    return h('label', { for: id }, label, h('input', Object.assign({ id }, attrs || {})));
  }
  const val = (id) => $(id).value.trim();
  async function act(what, fn) {
    try { await fn(); say(what); if (app.refresh) await app.refresh(); } catch (e) { say(e.message, true); }
  }

  // ---- Pages -------------------------------------------------------------------------------
  const VIEWS = {};

  VIEWS.overview = async (view) => {
    const [usage, prices, flows, metrics] = await Promise.all([
      get('/v1/usage'), get('/v1/market/history'),
      get(`/v1/ledger/summary?since_us=${Math.floor(Date.now() * 1000 - 24 * HOUR_US)}`),
      fetch('/metrics', { cache: 'no-store' }).then((r) => r.text()),
    ]);
    const queues = {};
    for (const m of metrics.matchAll(/^reservoir_queue_length\{pool="([^"]*)",tier="([^"]*)"\} (\d+)/gm)) {
      (queues[m[1]] = queues[m[1]] || {})[m[2]] = Number(m[3]);
    }
    teardownCharts();
    const blocks = [];
    const later = [];  // charts need their container on the page to size themselves
    for (const [pool, u] of Object.entries(usage)) {
      const now = u.now;
      const total = STATES.reduce((a, s) => a + now[s], 0);
      const up = total - now.down;
      const busy = now.reserved_used + now.lent + now.spot_used;
      const flow = flows.pools[pool] || {};
      const q = queues[pool] || {};
      const counts = h('table', { class: 'counts', 'data-pool': pool, 'aria-label': `GPUs of pool ${pool} by state` },
        h('tbody', {}, STATES.map((s) => h('tr', {},
          h('th', { scope: 'row' }, h('span', { class: `swatch s-${s}` }), STATE_LABEL[s]),
          h('td', { class: 'num', 'data-state': s }, now[s]))),
        h('tr', {}, h('th', { scope: 'row' }, 'utilization'), h('td', { class: 'num', 'data-utilization': '' }, pct(busy, up)))));
      const usageDiv = h('div', { class: 'chart' });
      const priceDiv = h('div', { class: 'chart' });
      blocks.push(h('section', { class: 'card', 'aria-labelledby': `pool-${pool}` },
        h('h2', { id: `pool-${pool}` }, `Pool ${pool}`),
        h('div', { class: 'grid' },
          h('div', {}, counts,
            h('h2', {}, 'Queue'),
            h('p', {}, `spot ${q.spot || 0} · reserved ${q.reserved || 0} · auto ${q.auto || 0} · price ${money(u.price)}/GPU-h`),
            h('h2', {}, 'Money, last 24 h'),
            h('dl', { class: 'kv' },
              h('dt', {}, 'spot spend'), h('dd', {}, money(-Number(flow.spot_charge || 0))),
              h('dt', {}, 'owners\u2019 lending credits'), h('dd', {}, money(flow.lending_credit)),
              h('dt', {}, 'operator share'), h('dd', {}, money(flow.operator_share)),
              h('dt', {}, 'reservation charges'), h('dd', {}, money(-Number(flow.reservation_charge || 0))))),
          h('div', {}, usageDiv, priceDiv))));
      later.push(() => {
        usageChart(usageDiv, u.history, now);
        priceChart(priceDiv, prices[pool] || [], u.price);
      });
    }
    view.replaceChildren(h('h1', {}, 'Overview'),
      h('div', { class: 'legend' }, STATES.map((s) => h('span', {}, h('span', { class: `swatch s-${s}` }), STATE_LABEL[s]))),
      ...blocks);
    for (const f of later) f();
  };
  function teardownCharts() {
    for (const u of app.charts) u.destroy();
    app.charts = [];
  }

  const jobFilters = { state: 'active', tier: '', pool: '', tenant: '' };
  VIEWS.jobs = async (view, rest) => {
    if (rest.length) return jobDetail(view, Number(rest[0]));
    const pools = await get('/v1/pools');
    const tenants = app.who.admin ? await get('/v1/tenants') : [];
    const pages = [];
    const q = new URLSearchParams({ order: 'desc', limit: '100', positions: 'true' });
    for (const [k, v] of Object.entries(jobFilters)) if (v) q.set(k, v);
    const first = await api('GET', `/v1/jobs?${q}`);
    pages.push(...first.data);
    let next = nextCursor(first.link);
    const redraw = () => VIEWS.jobs(view, rest);
    const set = (k) => (v) => { jobFilters[k] = v; redraw(); };
    const filters = h('form', { class: 'inline', 'aria-label': 'Filter jobs', onsubmit: (e) => e.preventDefault() },
      select('f-state', 'State', [['active', 'active'], ['pending', 'pending'], ['starting', 'starting'],
        ['running', 'running'], ['preempting', 'preempting'], ['succeeded', 'succeeded'],
        ['failed', 'failed'], ['cancelled', 'cancelled'], ['all', 'all']], jobFilters.state, set('state')),
      select('f-tier', 'Tier', [['', 'any'], ['spot', 'spot'], ['reserved', 'reserved'], ['auto', 'auto']], jobFilters.tier, set('tier')),
      select('f-pool', 'Pool', [['', 'any']].concat(pools.map((p) => [p.name, p.name])), jobFilters.pool, set('pool')),
      app.who.admin ? select('f-tenant', 'Tenant', [['', 'any']].concat(tenants.map((t) => [t.name, t.name])), jobFilters.tenant, set('tenant')) : null);
    const body = h('div');
    const more = h('button', { type: 'button', hidden: !next, onclick: async () => {
      const r = await api('GET', next);
      pages.push(...r.data);
      next = nextCursor(r.link);
      more.hidden = !next;
      drawTable();
    } }, 'Older jobs');
    const drawTable = () => body.replaceChildren(table([
      ['id', 'ID', (j) => h('a', { href: `#/jobs/${j.id}` }, j.id), true],
      ['name', 'Name', (j) => j.name],
      ['tenant', 'Tenant', (j) => j.tenant],
      ['pool', 'Pool', (j) => j.pool],
      ['tier', 'Tier', (j) => j.tier],
      ['gpus', 'GPUs', (j) => (j.elastic ? `${j.gpus_held || 0} (${j.elastic.min}-${j.elastic.max})` : j.gpus), true],
      ['state', 'State', (j) => h('span', { class: 'pill' }, j.state)],
      ['reason', 'Why pending', (j) => (j.reason ? h('span', { title: j.reason_detail }, j.reason) : '')],
      ['position', 'Position', (j) => (j.position ? `#${j.position}` : ''), true],
      ['limit_price', 'Limit', (j) => (j.tier === 'reserved' ? '–' : money(j.limit_price)), true],
      ['submitted_us', 'Submitted', (j) => when(j.submitted_us)],
    ], pages.filter((j) => !j.unit_of), { label: 'Jobs', empty: 'No jobs match.' }));
    drawTable();
    view.replaceChildren(h('h1', {}, 'Jobs'), filters, body, h('p', {}, more));
  };

  async function jobDetail(view, id) {
    const job = await get(`/v1/jobs/${id}`);
    const events = (await get(`/v1/events?since=0&job=${id}`)).events;
    const why = job.state === 'pending' ? await get(`/v1/jobs/${id}/why`).catch(() => null) : null;
    const mine = app.who.admin || app.who.tenant === job.tenant;
    const attempt = Math.max(1, job.attempt);
    const logs = h('pre', { class: 'logs', 'aria-label': `Output of attempt ${attempt}`, tabindex: 0 });
    const kv = (pairs) => h('dl', { class: 'kv' }, pairs.filter((p) => p[1] !== undefined && p[1] !== '')
      .map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
    const placement = (p) => (p || []).map((s) => `${s.node}:${s.gpus.join(',')}`).join(' ');
    const actions = [];
    if (mine && !['succeeded', 'failed', 'cancelled'].includes(job.state)) {
      actions.push(h('button', { type: 'button', class: 'danger', onclick: () => act(`Job ${id} cancelled.`, () => api('POST', `/v1/jobs/${id}/cancel`, {})) }, 'Cancel job'));
      if (['running', 'starting', 'preempting'].includes(job.state) && job.tier !== 'reserved') {
        actions.push(h('button', { type: 'button', onclick: () => act(`Job ${id} released.`, () => api('POST', `/v1/jobs/${id}/release`, {})) }, 'Release GPUs'));
      }
    }
    const attempts = {};
    for (const e of events) if (e.attempt) attempts[e.attempt] = attempts[e.attempt] || e.at_us;
    view.replaceChildren(
      h('p', {}, h('a', { href: '#/jobs' }, '← Jobs')),
      h('h1', {}, `Job ${id}: ${job.name || '(no name)'}`),
      h('div', { class: 'grid' },
        h('section', { class: 'card' }, kv([
          ['state', h('span', { class: 'pill', 'data-state': job.state }, job.state)],
          ['tenant', job.tenant], ['pool', job.pool], ['tier', job.tier],
          ['GPUs', job.elastic ? `${job.gpus_held || 0} of ${job.elastic.min}-${job.elastic.max}` : job.gpus],
          ['limit', job.tier === 'reserved' ? '–' : `${job.limit_price}/GPU-h`],
          ['attempt', job.attempt], ['submitted', when(job.submitted_us)], ['started', when(job.started_us)],
          ['notice', `${job.notice_s}s`], ['placement', placement(job.placement) || placement(job.last_placement)],
          ['finished', when(job.finished_us)], ['end', job.end_reason], ['command', job.command],
        ]), h('p', {}, actions)),
        why ? h('section', { class: 'card', 'aria-labelledby': 'why-h' }, h('h2', { id: 'why-h' }, 'Why pending'),
          kv([['reason', h('span', { 'data-reason': why.reason }, why.reason)], ['detail', why.detail],
            ['position', why.position ? `${why.position} of ${why.bids} bids` : 'not bidding'],
            ['price now', why.price], ['runs at', why.runs_at_price]])) : null),
      h('h2', {}, 'Timeline'),
      table([
        ['at_us', 'Time', (e) => when(e.at_us)], ['attempt', 'Attempt', (e) => e.attempt || '', true],
        ['type', 'Event', (e) => h('span', { 'data-event': e.type }, e.type)],
        ['detail', 'Detail', (e) => [e.reason, e.detail, e.deadline_us ? `deadline ${when(e.deadline_us)}` : '', e.node].filter(Boolean).join(' · ')],
      ], events, { label: 'Events of this job', empty: 'No events yet.' }),
      h('h2', {}, `Output of attempt ${attempt}`), logs);
    tail(logs, id, attempt);
  }
  // The live log tail: long-polls the attempt's output until it is complete or the page changes.
  function tail(pre, id, attempt) {
    let live = true;
    app.stop.push(() => { live = false; });
    (async () => {
      let offset = 0;
      while (live) {
        let r;
        try { r = await get(`/v1/jobs/${id}/logs?attempt=${attempt}&offset=${offset}&wait=20`); } catch (e) {
          if (live) pre.textContent = `(${e.message})`;
          return;
        }
        if (!live) return;
        pre.append(document.createTextNode(r.data));
        offset = r.next_offset;
        pre.scrollTop = pre.scrollHeight;
        if (r.complete) return;
      }
    })();
  }

  VIEWS.reservations = async (view) => {
    const [list, pools, usage] = await Promise.all([get('/v1/reservations'), get('/v1/pools'), get('/v1/usage')]);
    const tenants = app.who.admin ? await get('/v1/tenants') : [];
    const nowUs = Date.now() * 1000;
    const live = list.filter((r) => r.end_us > nowUs - 24 * HOUR_US);
    const gantts = pools.map((p) => {
      const rows = live.filter((r) => r.pool === p.name);
      if (!rows.length) return null;
      const from = Math.min(nowUs - HOUR_US, ...rows.map((r) => r.start_us));
      const to = Math.max(nowUs + HOUR_US, ...rows.map((r) => r.end_us));
      const x = (us) => `${(100 * (us - from) / (to - from)).toFixed(3)}%`;
      const g = h('div', { class: 'gantt', role: 'img', 'aria-label': `Reservations of pool ${p.name} from ${when(from)} to ${when(to)}` });
      for (const r of rows) {
        const bar = h('div', { class: `win${r.tenant === app.who.tenant ? ' mine' : ''}`, title: `${r.tenant}: ${r.gpus} GPUs, ${when(r.start_us)} to ${when(r.end_us)}` }, `${r.tenant} · ${r.gpus}`);
        bar.style.left = x(r.start_us);
        bar.style.width = `calc(${x(r.end_us)} - ${x(r.start_us)})`;
        g.append(h('div', { class: 'row' }, bar));
      }
      const now = h('div', { class: 'now', title: 'now' });
      now.style.left = x(nowUs);
      g.append(now);
      // Each holder's GPUs now: reserved, used by its jobs, lent (idle and lendable), sold.
      const owners = Object.entries((usage[p.name] || {}).owners || {});
      return h('section', { class: 'card' }, h('h2', {}, `Pool ${p.name}`),
        h('p', { class: 'muted' }, `${when(from)} → ${when(to)} · red line: now`), g,
        owners.length ? table([
          ['tenant', 'Now: tenant', (o) => o.tenant], ['reserved', 'Reserved', (o) => o.reserved, true],
          ['used', 'Used by its jobs', (o) => o.used, true], ['lent', 'Lent (idle, lendable)', (o) => o.lent, true],
          ['sold', 'Of which sold to spot', (o) => o.sold, true],
        ], owners.map(([tenant, o]) => Object.assign({ id: tenant, tenant }, o)), { label: `Reserved GPUs of pool ${p.name} now` }) : null);
    });
    const out = h('p', { 'aria-live': 'polite', id: 'r-quote' });
    const request = (quote) => {
      if (/^\d+$/.test(val('r-for'))) throw new Error(`For: give a unit, e.g. ${val('r-for')}h or ${val('r-for')}m`);
      const body = { pool: val('r-pool'), gpus: Number(val('r-gpus')), duration: val('r-for'),
        lend: $('r-lend').checked, quote_only: quote };
      if (val('r-start')) body.start_us = new Date(val('r-start')).getTime() * 1000;
      if (app.who.admin) body.tenant = val('r-tenant');
      return body;
    };
    const form = h('form', { class: 'inline', 'aria-label': 'Reserve GPUs', onsubmit: (e) => {
      e.preventDefault();
      act('Reservation booked.', () => api('POST', '/v1/reservations', request(false)));
    } },
    select('r-pool', 'Pool', pools.map((p) => [p.name, p.name]), pools.length ? pools[0].name : '', () => {}),
    app.who.admin ? select('r-tenant', 'Tenant', tenants.map((t) => [t.name, t.name]), tenants.length ? tenants[0].name : '', () => {}) : null,
    field('r-gpus', 'GPUs', { type: 'number', min: 1, value: 1, required: true }),
    field('r-for', 'For (e.g. 2h, 1d)', { value: '1h', required: true }),
    field('r-start', 'Start (empty: now)', { type: 'datetime-local' }),
    h('label', { for: 'r-lend' }, 'Lend when idle', h('input', { id: 'r-lend', type: 'checkbox', checked: true })),
    h('button', { type: 'button', onclick: async () => {
      try {
        const r = (await api('POST', '/v1/reservations', request(true))).data;
        out.textContent = r.admitted
          ? `Fits: ${money(r.price_per_gpu_hour)}/GPU-h, ${money(r.total)} for the whole window.`
          : `Does not fit: at most ${r.largest_fit} GPUs fit over this window (the price would be ${money(r.price_per_gpu_hour)}/GPU-h).`;
      } catch (e) { out.textContent = e.message; }
    } }, 'Quote'),
    h('button', { type: 'submit', class: 'primary' }, 'Book'));
    view.replaceChildren(h('h1', {}, 'Reservations'), ...gantts.filter(Boolean), h('h2', {}, 'Reserve'), form, out,
      h('h2', {}, 'All reservations'),
      table([
        ['id', 'ID', (r) => r.id, true], ['tenant', 'Tenant', (r) => r.tenant], ['pool', 'Pool', (r) => r.pool],
        ['gpus', 'GPUs', (r) => r.gpus, true], ['start_us', 'Start', (r) => when(r.start_us)],
        ['end_us', 'End', (r) => when(r.end_us)], ['lend', 'Lends', (r) => (r.lend ? 'yes' : 'no')],
        ['price_per_gpu_hour', 'Price/GPU-h', (r) => money(r.price_per_gpu_hour), true],
        ['charged', 'Charged', (r) => money(r.charged), true],
        ['ret', 'Actions', (r) => ((app.who.admin || r.tenant === app.who.tenant) && r.end_us > nowUs
          ? h('button', { type: 'button', onclick: () => act(`Reservation ${r.id} returned.`, () => api('POST', `/v1/reservations/${r.id}/return`, {})) }, `Return reservation ${r.id}`) : '')],
      ], list, { label: 'Reservations', sort: 'id', dir: -1, empty: 'No reservations.' }));
  };

  VIEWS.market = async (view) => {
    const [market, prices] = await Promise.all([get('/v1/market'), get('/v1/market/history')]);
    teardownCharts();
    const sections = [];
    const later = [];
    for (const m of market) {
      const depth = h('div');
      const hist = h('div');
      const out = h('p', { 'aria-live': 'polite', id: `q-out-${m.pool}` });
      const quote = h('form', { class: 'inline', 'aria-label': `Quote spot GPUs in ${m.pool}`, onsubmit: (e) => {
        e.preventDefault();
        out.textContent = spotEstimate(m, Number(val(`q-gpus-${m.pool}`)));
      } }, field(`q-gpus-${m.pool}`, 'GPUs', { type: 'number', min: 1, value: 8, required: true }),
      h('button', { type: 'submit' }, 'What would they cost now?'));
      sections.push(h('section', { class: 'card' }, h('h2', {}, `Pool ${m.pool}`),
        h('p', {}, `price ${m.price}/GPU-h (reserve ${m.reserve_price}) · spot supply ${m.supply_gpus} GPUs · spot in use ${m.spot_used_gpus} (${m.lent_gpus} on lent GPUs) · ${m.demand_pending_bids} bids waiting for ${m.demand_pending_gpus} GPUs`),
        quote, out, h('div', { class: 'grid' }, depth, hist),
        table([['limit_price', 'Limit/GPU-h', (b) => b.limit_price, true], ['gpus', 'GPUs bid', (b) => b.gpus, true]],
          m.order_book, { label: `Order book of ${m.pool}`, empty: 'No bids waiting.' })));
      later.push(() => {
        // Depth: GPUs bid at or above each price, against the supply.
        let cum = 0;
        const book = m.order_book.map((b) => { cum += b.gpus; return [Number(b.limit_price), cum]; }).reverse();
        if (book.length) {
          chart(depth, 'Order book depth', [{ label: 'limit' }, { label: 'GPUs bid at or above', stroke: '#e08a1e', paths: uPlot.paths.stepped({ align: -1 }) },
            { label: 'spot supply', stroke: '#2456c7', dash: [4, 4] }],
          [book.map((b) => b[0]), book.map((b) => b[1]), book.map(() => m.supply_gpus)], { scales: { x: { time: false } } });
        } else depth.append(h('p', { class: 'muted' }, 'No bids: depth is empty.'));
        priceChart(hist, prices[m.pool] || [], m.price);
      });
    }
    view.replaceChildren(h('h1', {}, 'Market'), ...sections);
    for (const f of later) f();
  };
  // What N more GPUs would have to bid to run now, from the book alone (placement not
  // considered): free spot GPUs cost the price; beyond them a bid must outbid the cheapest
  // running spot jobs by the increment, and stay above the bids already waiting.
  function spotEstimate(m, n) {
    if (!(n > 0)) return 'GPUs: give a positive number.';
    if (n > m.supply_gpus) return `${n} GPUs exceed the spot supply of ${m.supply_gpus}: no price buys them now.`;
    const free = Math.max(0, m.supply_gpus - m.spot_used_gpus);
    let price = Math.max(Number(m.price), Number(m.reserve_price));
    let need = n - free;
    let outbid = 0;
    const inc = Math.max(Number(m.min_increment), 0.000001);  // a tie does not outbid
    for (const b of m.held) {
      if (need <= 0) break;
      price = Math.max(price, Number(b.limit_price) + inc);
      need -= b.gpus;
      outbid += b.gpus;
    }
    if (need > 0) return `${n} GPUs: more than spot jobs hold and is free; no price buys them now.`;
    const waiting = m.order_book.length ? Number(m.order_book[0].limit_price) : 0;
    if (waiting >= price && free < n + m.demand_pending_gpus) price = waiting + inc;
    const shown = price.toFixed(6).replace(/0+$/, '').replace(/\.$/, '.00');  // 5.000001, 2.5
    return `About ${shown}/GPU-h for ${n} GPUs: ${Math.min(n, free)} free for spot now` +
      (outbid ? `, the rest by outbidding running spot jobs holding ${outbid} GPUs` : '') +
      ' (an estimate from the book; placement is not considered).';
  }

  const ledgerView = { group: 'hour', tenant: '' };
  VIEWS.ledger = async (view) => {
    const tenants = app.who.admin ? await get('/v1/tenants') : [];
    const q = new URLSearchParams();
    if (ledgerView.group) q.set('group', ledgerView.group);
    if (ledgerView.tenant) q.set('tenant', ledgerView.tenant);
    const l = await get(`/v1/ledger?${q}`);
    const rows = l.entries.slice();
    const redraw = () => VIEWS.ledger(view);
    const more = h('button', { type: 'button', hidden: !l.next_after, onclick: async () => {
      q.set('after', l.next_after);
      const n = await get(`/v1/ledger?${q}`);
      rows.push(...n.entries);
      l.next_after = n.next_after;
      more.hidden = !n.next_after;
      draw();
    } }, 'More entries');
    const csv = h('button', { type: 'button', onclick: () => {
      const cols = ['seq', 'hour_us', 'at_us', 'from_us', 'to_us', 'what', 'pool', 'job', 'reservation', 'entries', 'amount'];
      const esc = (v) => (v === undefined ? '' : /[",\n]/.test(String(v)) ? `"${String(v).replace(/"/g, '""')}"` : String(v));
      const text = [cols.join(',')].concat(rows.map((r) => cols.map((c) => esc(r[c])).join(','))).join('\n');
      const a = h('a', { href: URL.createObjectURL(new Blob([text], { type: 'text/csv' })), download: `ledger-${l.account}.csv` });
      document.body.append(a);
      a.click();
      a.remove();
    } }, 'Export CSV');
    const chartDiv = h('div');
    const body = h('div');
    const draw = () => body.replaceChildren(table(ledgerView.group === 'hour' ? [
      ['hour_us', 'Hour', (r) => when(r.hour_us)], ['what', 'What', (r) => r.what], ['pool', 'Pool', (r) => r.pool],
      ['entries', 'Entries', (r) => r.entries, true], ['amount', 'Amount', (r) => r.amount, true],
    ] : ledgerView.group === 'job' ? [
      ['job', 'Job', (r) => (r.job ? h('a', { href: `#/jobs/${r.job}` }, r.job) : r.reservation ? '' : 'spot, all jobs')], ['reservation', 'Reservation', (r) => r.reservation || ''],
      ['what', 'What', (r) => r.what], ['from_us', 'From', (r) => when(r.from_us)], ['to_us', 'To', (r) => when(r.to_us)],
      ['entries', 'Entries', (r) => r.entries, true], ['amount', 'Amount', (r) => r.amount, true],
    ] : [
      ['seq', 'Seq', (r) => r.seq, true], ['at_us', 'Time', (r) => when(r.at_us)], ['what', 'What', (r) => r.what],
      ['pool', 'Pool', (r) => r.pool], ['for', 'For', (r) => (r.job ? `job ${r.job}` : r.reservation ? `reservation ${r.reservation}` : '')],
      ['amount', 'Amount', (r) => r.amount, true],
    ], rows, { label: 'Ledger entries', empty: 'No entries.' }));
    draw();
    view.replaceChildren(h('h1', {}, 'Ledger'),
      h('form', { class: 'inline', 'aria-label': 'Ledger view', onsubmit: (e) => e.preventDefault() },
        app.who.admin ? select('l-tenant', 'Account', [['', 'operator']].concat(tenants.map((t) => [t.name, t.name])), ledgerView.tenant, (v) => { ledgerView.tenant = v; redraw(); }) : null,
        select('l-group', 'Show', [['hour', 'per hour'], ['job', 'per reservation (spot: per pool)'], ['', 'every entry']], ledgerView.group, (v) => { ledgerView.group = v; redraw(); }),
        csv),
      h('section', { class: 'card' }, h('dl', { class: 'kv' },
        h('dt', {}, 'account'), h('dd', {}, l.account), h('dt', {}, 'balance'), h('dd', { 'data-balance': '' }, l.balance),
        h('dt', {}, 'charges'), h('dd', {}, l.charges), h('dt', {}, 'credits'), h('dd', {}, l.credits))),
      chartDiv, body, h('p', {}, more));
    if (ledgerView.group === 'hour' && new Set(rows.map((r) => r.hour_us)).size >= 2) {
      teardownCharts();
      const byHour = new Map();
      for (const r of rows) byHour.set(r.hour_us, (byHour.get(r.hour_us) || 0) + Number(r.amount));
      const hours = [...byHour.keys()].sort((a, b) => a - b);
      let run = 0;
      const bal = hours.map((k) => (run += byHour.get(k)));
      chart(chartDiv, 'Balance over time (from the hours shown)', [{}, { label: 'balance', stroke: '#2456c7', points: { show: false } }],
        [hours.map((k) => (k + HOUR_US) / 1e6), bal]);
    }
  };

  VIEWS.nodes = async (view) => {
    const nodes = await get('/v1/nodes');
    const rows = [];
    for (const n of nodes) {
      const inv = (n.agent && Array.isArray(n.agent.gpus)) ? n.agent.gpus : [];
      for (let g = 0; g < n.gpus; g++) {
        const i = inv[g] || {};
        const job = n.gpu_jobs ? n.gpu_jobs[g] : null;
        rows.push({ id: `${n.name}/${g}`, node: n.name, gpu: g, state: n.state, pool: n.pool,
          job, name: i.name || '', util: i.utilization_pct, mem: i.memory_mib ? `${i.memory_mib} MiB` : '',
          health: i.healthy === false ? 'unhealthy' : n.agent ? (n.agent.health || 'healthy') : 'no agent', seen: n.agent ? n.agent.last_seen_us : undefined, probe: n.agent ? n.agent.probe : '' });
      }
    }
    const adminButtons = (n) => (app.who.admin ? h('button', { type: 'button', onclick: () => {
      const to = n.state === 'ready' ? 'drain' : 'undrain';
      act(`Node ${n.name}: ${to} requested.`, () => api('POST', `/v1/nodes/${encodeURIComponent(n.name)}/${to}`, {}));
    } }, n.state === 'ready' ? `Drain ${n.name}` : `Undrain ${n.name}`) : '');
    view.replaceChildren(h('h1', {}, 'Nodes'),
      table([
        ['name', 'Node', (n) => n.name], ['pool', 'Pool', (n) => n.pool], ['state', 'State', (n) => h('span', { class: 'pill' }, n.state)],
        ['gpus', 'GPUs', (n) => `${n.used}/${n.gpus} busy`, true], ['topology', 'Topology', (n) => n.topology],
        ['probe', 'Probe', (n) => (n.agent ? (n.agent.probe === 'fake' ? 'FAKE GPUs' : n.agent.probe) : 'no agent')],
        ['seen', 'Agent last seen', (n) => (n.agent ? ago(n.agent.last_seen_us) : '')],
        ['health', 'Health', (n) => (n.agent ? (n.agent.health || 'healthy') : '')],
        ['act', 'Actions', adminButtons],
      ], nodes, { label: 'Nodes', sort: 'name', empty: 'No nodes.' }),
      h('h2', {}, 'GPUs'),
      table([
        ['id', 'GPU', (r) => r.id], ['name', 'Model', (r) => r.name],
        ['job', 'Job', (r) => (r.job === null || r.job === undefined ? h('span', { class: 'muted' }, 'free') : r.job === 0 ? 'another tenant' : h('a', { href: `#/jobs/${r.job}` }, r.job))],
        ['util', 'Utilization', (r) => (r.util === undefined ? '' : `${r.util}%`), true], ['mem', 'Memory', (r) => r.mem],
        ['health', 'Health', (r) => r.health], ['seen', 'Last seen', (r) => (r.seen ? when(r.seen) : '')],
      ], rows, { label: 'GPUs', empty: 'No GPUs.' }));
  };

  VIEWS.waste = async (view) => {
    const w = await get('/v1/waste');
    const bar = (r) => {
      const b = h('div', { class: 'bar', role: 'img', 'aria-label': WASTE.map((k) => `${WASTE_LABEL[k]} ${pct(r[`${k}_gpu_s`], r.reserved_gpu_s)}`).join(', ') });
      for (const k of WASTE) {
        const s = h('span', { class: `s-${k}` });
        s.style.width = r.reserved_gpu_s > 0 ? `${(100 * r[`${k}_gpu_s`] / r.reserved_gpu_s).toFixed(2)}%` : '0';
        b.append(s);
      }
      return b;
    };
    const cell = (k) => (r) => `${gpuh(r[`${k}_gpu_s`])} (${pct(r[`${k}_gpu_s`], r.reserved_gpu_s)})`;
    view.replaceChildren(h('h1', {}, 'Waste report'),
      h('p', { class: 'muted' }, 'Reserved GPU-hours since the server\u2019s log began, by what became of them.'),
      h('div', { class: 'legend' }, WASTE.map((k) => h('span', {}, h('span', { class: `swatch s-${k}` }), WASTE_LABEL[k]))),
      table([
        ['tenant', 'Tenant', (r) => r.tenant], ['pool', 'Pool', (r) => r.pool],
        ['reserved_gpu_s', 'Reserved GPU-h', (r) => gpuh(r.reserved_gpu_s), true],
        ['owner_used_gpu_s', 'Used by owner', cell('owner_used'), true],
        ['lent_sold_gpu_s', 'Lent and sold', cell('lent_sold'), true],
        ['idle_unsold_gpu_s', 'Idle, unsold', cell('idle_unsold'), true],
        ['not_lendable_gpu_s', 'Idle, not lendable', cell('not_lendable'), true],
        ['split', 'Split', bar],
      ], w.reserved.map((r) => Object.assign({ id: `${r.tenant}/${r.pool}` }, r)), { label: 'Reserved GPU time', empty: app.who.admin ? 'No reservations have been active yet.' : 'None of your reservations has been active yet.' }),
      h('h2', {}, 'Unmet spot demand'),
      table([['pool', 'Pool', (r) => r.pool], ['s', 'GPU-hours bids waited', (r) => gpuh(r.s), true]],
        Object.entries(w.unmet_spot_gpu_s).map(([pool, s]) => ({ id: pool, pool, s })), { label: 'Unmet spot demand' }));
  };

  // ---- Start -------------------------------------------------------------------------------
  document.addEventListener('DOMContentLoaded', () => {
    $('signout').addEventListener('click', () => signOut('Signed out.'));
    window.addEventListener('hashchange', () => render());
    render();
  });
})();
