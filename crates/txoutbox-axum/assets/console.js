// The txoutbox web console: fetches JSON from <base>/ui/api/* and draws the views with the DOM
// and inline SVG. No framework, nothing loaded from the network, every server value set as text.
// <base> is the path the console is mounted under (empty for the daemon; `/outbox` when an
// application nests the router there).
'use strict';
(() => {
  const $ = (id) => document.getElementById(id);
  const SVG = 'http://www.w3.org/2000/svg';
  const TOKEN_KEY = 'txoutbox-console-token';
  const REFRESH_MS = 2000;
  const BASE = location.pathname.replace(/\/ui(\/.*)?$/, '');
  const state = {
    token: sessionStorage.getItem(TOKEN_KEY) || '',
    readOnly: true,
    showPayloads: false,
    pending: null,
    refreshes: 0,
  };

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === 'class') node.className = v;
      else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
      else if (v !== undefined && v !== null && v !== false) node.setAttribute(k, v === true ? '' : v);
    }
    for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(c ?? ''));
    return node;
  }

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function notice(text, kind) {
    const box = $('notice');
    box.textContent = text;
    box.className = 'notice' + (kind ? ' ' + kind : '');
    box.hidden = !text;
  }

  async function getJSON(url) {
    const response = await fetch(url, { headers: { Accept: 'application/json' }, cache: 'no-store' });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
    return body;
  }

  // Plain formatting instead of toLocaleString: a first call of the Intl formatters costs tens
  // of milliseconds, which a first page load would pay.
  const num = (n) => (n === null || n === undefined ? '–' : String(Math.round(Number(n))).replace(/\B(?=(\d{3})+(?!\d))/g, ','));
  const pad = (v) => String(v).padStart(2, '0');
  const clock = (date) => `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
  const dateTime = (date) => `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ${clock(date)}`;

  function age(seconds) {
    if (seconds === null || seconds === undefined) return '–';
    const s = Math.max(0, Math.round(seconds));
    if (s < 60) return `${s}s`;
    if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
    if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
    return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
  }

  const since = (now, iso) => (iso ? (Date.parse(now) - Date.parse(iso)) / 1000 : null);

  function ranges(buckets) {
    const out = [];
    let start = null;
    let prev = null;
    for (const b of buckets) {
      if (start === null) start = b;
      else if (b !== prev + 1) {
        out.push(start === prev ? `${start}` : `${start}–${prev}`);
        start = b;
      }
      prev = b;
    }
    if (start !== null) out.push(start === prev ? `${start}` : `${start}–${prev}`);
    return out.join(', ');
  }

  function shortNumber(v) {
    if (v >= 1e6) return (v / 1e6).toFixed(1) + 'M';
    if (v >= 1e4) return (v / 1e3).toFixed(0) + 'k';
    if (v >= 100) return v.toFixed(0);
    if (v >= 10) return v.toFixed(1);
    return v.toFixed(2).replace(/\.?0+$/, '') || '0';
  }

  // A line chart of one or two series over the last `minutes`, as inline SVG.
  function chart(id, now, minutes, t, series) {
    const W = 600;
    const H = 140;
    const L = 44;
    const B = 18;
    const plot = $(id).querySelector('.plot');
    const end = Date.parse(now);
    const start = end - minutes * 60000;
    let max = 0;
    let points = 0;
    for (const s of series) for (const v of s.values) if (v !== null && v > max) max = v;
    max = max > 0 ? max * 1.1 : 1;
    const x = (ms) => L + ((ms - start) / (end - start)) * (W - L - 4);
    const y = (v) => H - B - (v / max) * (H - B - 6);
    const root = svg('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img' });
    root.append(svg('line', { class: 'axis', x1: L, y1: H - B, x2: W, y2: H - B }));
    root.append(svg('line', { class: 'axis', x1: L, y1: 4, x2: L, y2: H - B }));
    for (const f of [0, 0.5, 1]) {
      root.append(svg('text', { class: 'tick', x: L - 4, y: y(max * f) + 3, 'text-anchor': 'end' }, shortNumber(max * f)));
    }
    for (const f of [0, 0.5, 1]) {
      const label = f === 1 ? 'now' : `−${(minutes * (1 - f)).toString().replace(/\.0$/, '')}m`;
      root.append(svg('text', { class: 'tick', x: L + f * (W - L - 4), y: H - 4, 'text-anchor': f === 0 ? 'start' : f === 1 ? 'end' : 'middle' }, label));
    }
    series.forEach((s, i) => {
      let run = [];
      const flush = () => {
        if (run.length > 1) root.append(svg('polyline', { class: `s${i}`, points: run.join(' ') }));
        else if (run.length === 1) {
          const [cx, cy] = run[0].split(',');
          root.append(svg('circle', { class: `s${i}`, cx, cy, r: 1.5 }));
        }
        run = [];
      };
      s.values.forEach((v, k) => {
        if (v === null || t[k] < start) return flush();
        run.push(`${x(t[k]).toFixed(1)},${y(v).toFixed(1)}`);
        points += 1;
      });
      flush();
    });
    if (points === 0) root.append(svg('text', { class: 'empty', x: W / 2, y: H / 2, 'text-anchor': 'middle' }, 'no data yet'));
    root.dataset.points = String(points);
    root.dataset.last = t.length ? String(t[t.length - 1]) : '';
    plot.replaceChildren(root);
  }

  // The inbox link shows when the console has an inbox table.
  function showInbox(table) {
    $('nav-inbox').hidden = !table;
  }

  function showAccess(readOnly) {
    state.readOnly = readOnly;
    $('access').textContent = readOnly ? 'read-only' : state.token ? 'actions: token entered' : 'actions need the token';
  }

  // ---------------------------------------------------------------- overview

  // Where the relay publishes: `→ nats outbox.{topic}` (the daemon's /status `sink`; none for a
  // relay mounted in an application that does not report it).
  function sinkText(sink) {
    if (!sink || !sink.kind) return '';
    const where = sink.subject || sink.routing_key || sink.stream_key || sink.bootstrap_servers || '';
    return `→ ${sink.kind}${where ? ' ' + where : ''}`;
  }

  function renderOverview(o) {
    $('table').textContent = o.table;
    $('sink').textContent = sinkText(o.sink);
    showInbox(o.inbox);
    showAccess(o.read_only);
    const backlog = o.health && o.health.backlog;
    $('pending').textContent = backlog ? num(backlog.pending) : '…';
    $('oldest').textContent = backlog ? (backlog.oldest_pending ? age(since(o.now, backlog.oldest_pending)) : 'none') : '…';
    $('dead').textContent = backlog ? num(backlog.dead) : '…';
    const rates = o.series.rate.slice(-60);
    $('rate').textContent = rates.length ? `${shortNumber(rates.reduce((a, b) => a + b, 0) / rates.length)}/s` : '…';
    const health = $('health');
    const reasons = $('reasons');
    if (!o.health) {
      health.textContent = 'starting';
      health.className = 'value';
      reasons.replaceChildren();
    } else {
      health.textContent = o.health.healthy ? 'healthy' : 'unhealthy';
      health.className = 'value ' + (o.health.healthy ? 'healthy' : 'unhealthy');
      reasons.replaceChildren(...o.health.reasons.map((r) => el('li', {}, r)));
    }
    if (!o.relay.running) reasons.append(el('li', {}, 'the relay is not running'));

    const s = o.series;
    chart('chart-rate', o.now, s.minutes, s.t, [{ values: s.rate }]);
    chart('chart-latency', o.now, s.minutes, s.t, [{ values: s.latency_avg_ms }, { values: s.latency_p99_ms }]);
    chart('chart-pending', o.now, s.minutes, s.t, [{ values: s.pending }]);

    const topics = o.topics;
    const body = $('topics').querySelector('tbody');
    if (!topics.as_of) {
      $('topics-asof').textContent = topics.error ? `cannot measure: ${topics.error}` : 'measuring…';
      body.replaceChildren();
    } else {
      $('topics-asof').textContent = `as of ${age(since(o.now, topics.as_of))} ago; counted at most every ${topics.refresh_seconds} s (reads the whole table)` + (topics.error ? `; last attempt failed: ${topics.error}` : '');
      body.replaceChildren(
        ...topics.rows.map((t) =>
          el('tr', { 'data-topic': t.topic },
            el('td', {}, t.topic),
            el('td', { class: 'num pending' }, num(t.pending)),
            el('td', {}, t.oldest_pending ? age(since(o.now, t.oldest_pending)) : '–'),
            el('td', { class: 'num' }, num(t.dead)),
            el('td', { class: 'num' }, num(t.published)))),
      );
      if (!topics.rows.length) body.append(el('tr', {}, el('td', { colspan: 5, class: 'muted' }, 'the table is empty')));
    }

    const c = o.coordination;
    const nodes = $('nodes').querySelector('tbody');
    $('coord-mode').textContent = `coordination: ${c.mode}` + (c.this_node ? `; this node: ${c.this_node} (epoch ${c.epoch})` : '');
    if (!c.this_node) {
      nodes.replaceChildren(el('tr', {}, el('td', {}, 'this relay'), el('td', {}, 'the whole table (no coordination)'), el('td', {}, '–')));
    } else {
      nodes.replaceChildren(
        ...c.nodes.map((n) =>
          el('tr', { 'data-node': n.node },
            el('td', {}, n.node + (n.node === c.this_node ? ' (this node)' : '')),
            el('td', {}, [n.whole_table ? 'whole table' : '', n.buckets.length ? `${n.buckets.length} buckets: ${ranges(n.buckets)}` : ''].filter(Boolean).join('; ') || '–'),
            el('td', {}, n.lease_until ? clock(new Date(n.lease_until)) : '–'))),
      );
      if (c.free_buckets.length) nodes.append(el('tr', {}, el('td', { class: 'muted' }, 'unowned'), el('td', {}, `${c.free_buckets.length} buckets: ${ranges(c.free_buckets)}`), el('td', {}, '–')));
      if (c.error) nodes.append(el('tr', {}, el('td', { colspan: 3, class: 'error' }, `cannot read the leases: ${c.error}`)));
    }
    state.refreshes += 1;
    document.body.dataset.refreshes = String(state.refreshes);
    // The page-load benchmark reads this mark: navigation start to the first figures shown.
    if (state.refreshes === 1) performance.mark('txoutbox-overview-shown');
    $('updated').textContent = `updated ${clock(new Date(o.now))}; refreshes every ${REFRESH_MS / 1000} s`;
  }

  async function refreshOverview() {
    try {
      renderOverview(await getJSON(`${BASE}/ui/api/overview?minutes=5`));
      if ($('notice').classList.contains('error')) notice('');
    } catch (e) {
      notice(`cannot reach the relay: ${e.message}`, 'error');
    }
    setTimeout(refreshOverview, REFRESH_MS);
  }

  // ---------------------------------------------------------------- dead letters

  function selection() {
    const out = {};
    const topic = $('f-topic').value.trim();
    const olderThan = $('f-age').value.trim();
    if (topic) out.topic = topic;
    if (olderThan) out.older_than = olderThan;
    return out;
  }

  async function loadDead() {
    const query = new URLSearchParams({ ...selection(), limit: $('f-limit').value });
    let list;
    try {
      list = await getJSON(`${BASE}/ui/api/dead-letters?${query}`);
    } catch (e) {
      notice(`cannot list dead letters: ${e.message}`, 'error');
      return;
    }
    showAccess(list.read_only);
    showInbox(list.inbox);
    $('table').textContent = list.table;
    state.showPayloads = list.show_payloads;
    $('token-box').hidden = list.read_only;
    for (const id of ['bulk-replay', 'bulk-purge']) {
      $(id).disabled = list.read_only || !list.rows.length;
      $(id).title = list.read_only ? 'read-only: start the relay with --ui-token to allow actions' : '';
    }
    const body = $('dead-table').querySelector('tbody');
    body.replaceChildren(...list.rows.map(deadRow));
    if (!list.rows.length) body.append(el('tr', {}, el('td', { colspan: 8, class: 'muted' }, 'no dead letters match')));
    $('dead-more').textContent = list.more ? `showing the oldest ${list.limit}; there are more (narrow the filter)` : `${list.rows.length} shown`;
    document.body.dataset.deadLoaded = String(Date.now());
    if (!performance.getEntriesByName('txoutbox-dead-letters-shown').length) performance.mark('txoutbox-dead-letters-shown');
  }

  function deadRow(d) {
    const headers = Object.entries(d.headers).map(([k, v]) => `${k}=${v}`).join('\n');
    const actions = el('td', { class: 'actions' });
    const disabled = state.readOnly;
    const title = disabled ? 'read-only: start the relay with --ui-token to allow actions' : undefined;
    actions.append(
      el('button', { type: 'button', class: 'replay', disabled, title, onclick: () => ask(deadAction('replay', { id: d.id }), `Replay dead letter ${d.id} (${d.topic})?`) }, 'Replay'),
      ' ',
      el('button', { type: 'button', class: 'purge danger', disabled, title, onclick: () => ask(deadAction('purge', { id: d.id }), `Purge dead letter ${d.id} (${d.topic}) for good?`) }, 'Purge'),
    );
    const row = el('tr', { 'data-id': d.id },
      el('td', { class: 'num' }, String(d.id)),
      el('td', {}, d.topic),
      el('td', { class: 'key' }, d.key ?? '–'),
      el('td', { class: 'headers' }, headers || '–'),
      el('td', { class: 'num' }, String(d.attempts)),
      el('td', {}, dateTime(new Date(d.created_at))),
      el('td', { class: 'error' }, d.last_error ?? '–'),
      actions);
    if (state.showPayloads) {
      actions.append(' ', el('button', { type: 'button', class: 'payload', onclick: () => showPayload(d.id, row) }, `Payload (${num(d.payload_bytes)} B)`));
    }
    return row;
  }

  async function showPayload(id, row) {
    try {
      const p = await getJSON(`${BASE}/ui/api/dead-letters/${id}/payload`);
      const cell = row.querySelector('td.actions');
      cell.querySelector('pre')?.remove();
      cell.append(el('pre', { class: 'payload' }, p.text + (p.truncated ? ' …' : '')));
    } catch (e) {
      notice(e.message, 'error');
    }
  }

  let pendingAction = null;

  // A dead-letter action: where it posts, and what its answer says.
  function deadAction(action, body) {
    return {
      action,
      url: `${BASE}/ui/api/dead-letters/${action}`,
      body,
      done: (answer) => {
        const done = action === 'replay' ? 'replayed (pending again; the relay sends them)' : 'purged';
        return `${answer.messages} dead letter${answer.messages === 1 ? '' : 's'} ${done}`;
      },
      reload: loadDead,
    };
  }

  function ask(chosen, text) {
    pendingAction = chosen;
    $('confirm-text').textContent = text;
    $('confirm').hidden = false;
  }

  async function confirmAction() {
    const chosen = pendingAction;
    pendingAction = null;
    $('confirm').hidden = true;
    if (!chosen) return;
    const headers = { 'Content-Type': 'application/json', Accept: 'application/json' };
    if (state.token) headers.Authorization = `Bearer ${state.token}`;
    let response;
    let body;
    try {
      response = await fetch(chosen.url, {
        method: 'POST', headers, body: JSON.stringify(chosen.body), credentials: 'omit', cache: 'no-store',
      });
      body = await response.json().catch(() => ({}));
    } catch (e) {
      notice(`${chosen.action} failed: ${e.message}`, 'error');
      return;
    }
    if (!response.ok) {
      notice(`${chosen.action} refused (${response.status}): ${body.error || 'no reason given'}`, 'error');
      return;
    }
    notice(chosen.done(body), 'ok');
    await chosen.reload();
  }

  function bulk(action) {
    const body = selection();
    const scope = Object.keys(body).length ? `every dead letter matching ${JSON.stringify(body)}` : 'EVERY dead letter';
    if (!Object.keys(body).length) body.all = true;
    ask(deadAction(action, body), `${action === 'replay' ? 'Replay' : 'Purge'} ${scope}?`);
  }

  // ---------------------------------------------------------------- inbox

  // An inbox action: one consumer's records, by id or all of them.
  function inboxAction(action, body) {
    return {
      action,
      url: `${BASE}/ui/api/inbox/${action}`,
      body,
      done: (answer) => {
        const done = action === 'replay' ? 'marked for replay (the consumer handles them at its next look)' : 'purged';
        return `${answer.records} parked record${answer.records === 1 ? '' : 's'} of ${body.consumer} ${done}`;
      },
      reload: loadInbox,
    };
  }

  async function loadInbox() {
    const consumer = $('i-consumer').value.trim();
    const query = new URLSearchParams({ limit: $('i-limit').value });
    if (consumer) query.set('consumer', consumer);
    let list;
    try {
      list = await getJSON(`${BASE}/ui/api/inbox/parked?${query}`);
    } catch (e) {
      notice(`cannot list parked inbox records: ${e.message}`, 'error');
      return;
    }
    showAccess(list.read_only);
    showInbox(list.table);
    $('table').textContent = `inbox ${list.table}`;
    $('token-box').hidden = list.read_only;
    for (const id of ['inbox-replay-all', 'inbox-purge-all']) {
      $(id).disabled = list.read_only || !consumer || !list.rows.length;
      $(id).title = list.read_only ? 'read-only: start the relay with --ui-token to allow actions' : consumer ? '' : 'name a consumer first';
    }
    const body = $('inbox-table').querySelector('tbody');
    body.replaceChildren(...list.rows.map(inboxRow));
    if (!list.rows.length) body.append(el('tr', {}, el('td', { colspan: 9, class: 'muted' }, 'no parked records')));
    $('inbox-more').textContent = list.more ? `showing the oldest ${list.limit}; there are more (name a consumer)` : `${list.rows.length} shown`;
    document.body.dataset.inboxLoaded = String(Date.now());
  }

  function inboxRow(r) {
    const actions = el('td', { class: 'actions' });
    const disabled = state.readOnly;
    const title = disabled ? 'read-only: start the relay with --ui-token to allow actions' : undefined;
    const one = { consumer: r.consumer, ids: [r.message_id] };
    actions.append(
      el('button', { type: 'button', class: 'replay', disabled: disabled || r.status !== 'dead', title: r.status === 'replay' ? 'already marked for replay' : title,
        onclick: () => ask(inboxAction('replay', one), `Replay record ${r.message_id} of ${r.consumer}?`) }, 'Replay'),
      ' ',
      el('button', { type: 'button', class: 'purge danger', disabled, title,
        onclick: () => ask(inboxAction('purge', one), `Purge record ${r.message_id} of ${r.consumer} for good?`) }, 'Purge'),
    );
    const size = [r.key_bytes === null ? 'no key' : `key ${num(r.key_bytes)} B`, r.payload_bytes === null ? 'tombstone' : `payload ${num(r.payload_bytes)} B`];
    return el('tr', { 'data-id': r.message_id, 'data-consumer': r.consumer },
      el('td', {}, r.consumer),
      el('td', { class: 'key' }, r.message_id),
      el('td', { class: 'status' }, r.status),
      el('td', {}, `${r.topic} / ${r.partition} / ${r.offset}`),
      el('td', { class: 'num' }, String(r.attempts)),
      el('td', {}, r.received_at ? dateTime(new Date(r.received_at)) : '–'),
      el('td', { class: 'error' }, r.last_error ?? '–'),
      el('td', { class: 'headers' }, [size.join(', '), ...r.header_names].join('\n')),
      actions);
  }

  function bulkInbox(action) {
    const consumer = $('i-consumer').value.trim();
    if (!consumer) return;
    const what = action === 'replay' ? 'Replay every dead record' : 'Purge EVERY parked record';
    ask(inboxAction(action, { consumer, all: true }), `${what} of consumer ${consumer}?`);
  }

  function setToken(token) {
    state.token = token;
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
    $('token').value = '';
    $('token-state').textContent = token ? 'token entered (kept in this tab only)' : 'no token entered';
    showAccess(state.readOnly);
  }

  // ---------------------------------------------------------------- start

  // The confirmation and the token, shared by the views with actions.
  function wireActions() {
    $('confirm-yes').addEventListener('click', confirmAction);
    $('confirm-no').addEventListener('click', () => {
      pendingAction = null;
      $('confirm').hidden = true;
    });
    $('token-use').addEventListener('click', () => setToken($('token').value.trim()));
    $('token-forget').addEventListener('click', () => setToken(''));
    $('token-state').textContent = state.token ? 'token entered (kept in this tab only)' : 'no token entered';
  }

  function start() {
    const path = location.pathname.replace(/\/$/, '');
    if (path === `${BASE}/ui/dead-letters`) {
      $('nav-dead').classList.add('current');
      $('dead-letters').hidden = false;
      $('filter').addEventListener('submit', (e) => {
        e.preventDefault();
        loadDead();
      });
      $('bulk-replay').addEventListener('click', () => bulk('replay'));
      $('bulk-purge').addEventListener('click', () => bulk('purge'));
      wireActions();
      loadDead();
    } else if (path === `${BASE}/ui/inbox`) {
      $('nav-inbox').classList.add('current');
      $('inbox').hidden = false;
      $('inbox-filter').addEventListener('submit', (e) => {
        e.preventDefault();
        loadInbox();
      });
      $('inbox-replay-all').addEventListener('click', () => bulkInbox('replay'));
      $('inbox-purge-all').addEventListener('click', () => bulkInbox('purge'));
      wireActions();
      loadInbox();
    } else {
      $('nav-overview').classList.add('current');
      $('overview').hidden = false;
      refreshOverview();
    }
  }

  start();
})();
