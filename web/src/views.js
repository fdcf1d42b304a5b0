// views.js - the views. Each mount() returns {update(), destroy()}; update() is called at most
// four times a second by app.js. Telemetry strings only ever reach the DOM as text (el(),
// text(), textContent), with ANSI sequences stripped.

import {api, HttpError} from './api.js';
import {
  state, agent as getAgent, agentStatus, eventRate, invalidate,
} from './app.js';
import {LiveChart, sparkline} from './charts.js';
import {clean, clear, el, eventMs, fmtAgo, fmtMs, fmtNum, fmtTime, link} from './util.js';

export function mount(r, root) {
  hideTip();
  clear(root);
  const [name, arg] = r;
  if (name === 'agent' && arg !== undefined) return agentView(root, arg);
  if (name === 'session' && arg !== undefined) return sessionView(root, arg);
  if (name === 'response' && arg !== undefined) return responseView(root, arg);
  if (name === 'alerts') return alertsView(root);
  return overview(root);
}

export function header() {
  const open = state.alerts.filter((a) => !a.acked).length;
  const b = document.getElementById('alert-count');
  const t = open ? String(open) : '';
  if (b.textContent !== t) b.textContent = t;
}

function noop() {}

function errorText(e) {
  if (e instanceof HttpError) return `error ${e.status}: ${clean(e.message)}`;
  if (e instanceof TypeError) return 'the collector is unreachable';
  return clean(e && e.message ? e.message : e);
}

// --- live feed -------------------------------------------------------------------------------

function summary(ev) {
  switch (ev.kind) {
    case 'log':
      return [ev.severity || '', ev.message];
    case 'metric':
      return [ev.name, `${fmtNum(ev.value, 3)} ${ev.unit || ''}`];
    case 'step_begin':
      return [`${ev.step_kind || 'step'} ${ev.name || ''}`, ev.query];
    case 'step_end':
      return [ev.status || '', fmtMs(Number(ev.duration_ns) / 1e6), ev.error];
    case 'guard':
      return [ev.verdict, ev.reason];
    default:
      return [ev.model || ev.response_id || ''];
  }
}

function feedTable(filter) {
  const body = el('tbody');
  const table = el('table', {class: 'feed'},
    el('thead', null, el('tr', null, el('th', null, 'time'), el('th', null, 'agent'),
      el('th', null, 'session'), el('th', null, 'kind'), el('th', null, 'what'))), body);
  let shown = null;
  return {
    node: table,
    update() {
      const last = state.feed[state.feed.length - 1];
      if (last === shown) return;
      shown = last;
      const rows = [];
      for (let i = state.feed.length - 1; i >= 0 && rows.length < 40; i--) {
        const ev = state.feed[i];
        if (filter && !filter(ev)) continue;
        rows.push(el('tr', {class: `ev ev-${clean(ev.kind)}`},
          el('td', {class: 'num'}, fmtTime(eventMs(ev))),
          el('td', null, ev.agent ? link(['agent', ev.agent], ev.agent) : ''),
          el('td', null, ev.session ? link(['session', ev.session], ev.session) : ''),
          el('td', null, ev.kind),
          el('td', {class: 'what'}, summary(ev).filter((x) => x !== undefined && x !== '')
            .map((x) => el('span', {class: 'part'}, x)))));
      }
      clear(body).append(...rows);
    },
  };
}

// --- agents overview -------------------------------------------------------------------------

function overview(root) {
  const tbody = el('tbody');
  const total = el('span', {id: 'total-events'}, '0');
  const feed = feedTable(null);
  root.append(
    el('h1', null, 'Agents'),
    el('p', {class: 'muted'}, 'Events received live: ', total),
    el('table', {class: 'agents'},
      el('thead', null, el('tr', null, ...['agent', 'status', 'events/s', 'confidence', 'loss',
        'stored', 'last alert', 'last seen'].map((h) => el('th', null, h)))), tbody),
    el('h2', null, 'Live events'), feed.node);
  return {
    destroy: noop,
    update() {
      total.textContent = String(state.total);
      const rows = [];
      const names = [...state.agents.keys()].filter((n) => n).sort();
      if (!names.length) {
        rows.push(el('tr', null, el('td', {colspan: 8, class: 'muted'},
          'No agent yet: start one (telltale demo) and it shows here.')));
      }
      for (const n of names) {
        const a = getAgent(n);
        const st = agentStatus(a);
        const loss = a.info && a.info.loss ?
          Number(a.info.loss.proven || 0) + Number(a.info.loss.reported_dropped || 0) : undefined;
        const last = a.lastAlert;
        rows.push(el('tr', {class: 'agent-row', dataset: {agent: n}},
          el('td', null, link(['agent', n], n)),
          el('td', null, el('span', {class: `status status-${st}`}, st)),
          el('td', {class: 'num rate'}, eventRate(a).toFixed(1)),
          el('td', null, a.conf.length ? sparkline(a.conf.slice(-60).map((p) => p[1])) :
            el('span', {class: 'muted'}, '–')),
          el('td', {class: 'num'}, loss === undefined ? '–' : String(loss)),
          el('td', {class: 'num'}, a.info ? String(a.info.events_stored) : '–'),
          el('td', null, last ? `${fmtAgo(last.timeMs)}: ${clean(last.kind)} ${clean(last.message)}` : '–'),
          el('td', null, fmtAgo(Math.max(a.lastMs, a.info ? Number(a.info.last_seen_unix_ns) / 1e6 : 0)))));
      }
      clear(tbody).append(...rows);
      feed.update();
    },
  };
}

// --- one agent: live charts, sessions --------------------------------------------------------

function agentView(root, name) {
  const a = getAgent(name);
  const status = el('span', {class: 'status'});
  const charts = el('div', {class: 'charts'});
  const confBox = el('div', {class: 'chart'});
  const latBox = el('div', {class: 'chart'});
  charts.append(confBox, latBox);
  const sessions = el('ul', {class: 'sessions'});
  const sessNote = el('p', {class: 'muted'});
  const feed = feedTable((ev) => ev.agent === name);
  root.append(el('p', null, link([], '← agents')), el('h1', null, 'Agent ', el('span', null, name), ' ', status),
    charts, el('h2', null, 'Sessions'), sessNote, sessions, el('h2', null, 'Live events'), feed.node);
  const conf = new LiveChart(confBox, 'confidence', 'p', [0, 1]);
  const lat = new LiveChart(latBox, 'step latency (ms)', 'ms', null);
  let apiSessions = null;
  let fetched = 0;
  async function fetchSessions() {
    fetched = Date.now();
    try {
      const j = await api(`/api/v1/sessions?agent=${encodeURIComponent(name)}`);
      if (j.unavailable) {
        sessNote.textContent = 'The sessions API is not available on this collector: showing the sessions seen live.';
        apiSessions = null;
      } else {
        sessNote.textContent = '';
        apiSessions = Array.isArray(j.sessions) ? j.sessions : [];
      }
    } catch (e) {
      sessNote.textContent = `Sessions: ${errorText(e)}`;
    }
    invalidate();
  }
  fetchSessions();
  return {
    destroy() {
      conf.destroy();
      lat.destroy();
    },
    update() {
      const st = agentStatus(a);
      status.className = `status status-${st}`;
      status.textContent = st;
      conf.update(a.conf, a.alertTimes);
      lat.update(a.lat, a.alertTimes);
      if (Date.now() - fetched > 5000) fetchSessions();
      const items = new Map();
      for (const s of state.sessions.values()) {
        if (s.agent === name) items.set(s.id, {id: s.id, lastMs: s.lastMs, events: s.events, halted: s.halted});
      }
      for (const s of apiSessions || []) {
        const id = String(s.id ?? s.session ?? s.name ?? '');
        if (!id) continue;
        const cur = items.get(id) || {id, lastMs: 0, events: 0};
        cur.lastMs = Math.max(cur.lastMs, Number(s.last_seen_unix_ns || s.last_unix_ns || 0) / 1e6);
        cur.halted = cur.halted || !!s.halted;
        cur.steps = s.steps ?? s.step_count;
        items.set(id, cur);
      }
      const list = [...items.values()].sort((x, y) => y.lastMs - x.lastMs).slice(0, 50);
      clear(sessions).append(...list.map((s) => el('li', null, link(['session', s.id], s.id),
        ' ', el('span', {class: 'muted'}, `${fmtAgo(s.lastMs)}`),
        s.halted ? el('span', {class: 'status status-halted'}, 'halted') : '')));
      feed.update();
    },
  };
}

// --- one session: the execution path and its responses ------------------------------------

const stepId = (s) => String(s.step_id ?? s.id ?? '');

// Steps from the session API (a tree with children, or flat with parent ids) or from raw
// step_begin/step_end events: a forest of {id, kind, name, query, status, ms, error, children}.
function buildTree(steps) {
  const byId = new Map();
  const roots = [];
  const flat = [];
  const walk = (list, parent) => {
    for (const s of list || []) {
      if (!s || typeof s !== 'object') continue;
      const n = {
        id: stepId(s),
        parent: s.parent_id !== undefined ? String(s.parent_id) : parent,
        kind: s.step_kind ?? s.kind ?? '',
        name: s.name ?? '',
        query: s.query ?? '',
        status: s.status ?? (s.end_unix_ns || s.duration_ns !== undefined ? 'ok' : 'running'),
        ms: s.latency_ns !== undefined && s.latency_ns !== null ? Number(s.latency_ns) / 1e6 :
          s.duration_ns !== undefined ? Number(s.duration_ns) / 1e6 :
          s.latency_ms !== undefined ? Number(s.latency_ms) : s.duration_ms !== undefined ?
            Number(s.duration_ms) : undefined,
        error: s.error ?? '',
        children: [],
      };
      flat.push(n);
      if (n.id) byId.set(n.id, n);
      if (Array.isArray(s.children)) walk(s.children, n.id);
    }
  };
  walk(steps, undefined);
  for (const n of flat) {
    const p = n.parent && byId.get(n.parent);
    if (p && p !== n) p.children.push(n);
    else roots.push(n);
  }
  return roots;
}

function treeFromEvents(events) {
  const steps = new Map();
  for (const ev of events) {
    if (ev.kind === 'step_begin') {
      steps.set(ev.step_id, {step_id: ev.step_id, parent_id: ev.parent_id, step_kind: ev.step_kind,
        name: ev.name, query: ev.query, status: 'running'});
    } else if (ev.kind === 'step_end') {
      const s = steps.get(ev.step_id);
      if (s) Object.assign(s, {status: ev.status, duration_ns: ev.duration_ns, error: ev.error});
    }
  }
  return buildTree([...steps.values()]);
}

// The fallback without the sessions API: a session's step_begin events, and the step_end
// events of the same instances since the first of them (a step_end carries no session).
async function treeFromStore(id) {
  const q = (p) => api(`/api/v1/events?${p}`).then((j) => (Array.isArray(j.events) ? j.events : []));
  const begins = await q(`session=${encodeURIComponent(id)}&kind=step_begin&limit=2000`);
  const ends = [];
  const instances = new Map();
  for (const b of begins) {
    if (!instances.has(b.instance)) instances.set(b.instance, b.time_unix_ns);
  }
  for (const [inst, since] of instances) {
    if (instances.size > 4) break;
    ends.push(...await q(`instance=${encodeURIComponent(inst)}&kind=step_end&since=${since}&limit=20000`));
  }
  return treeFromEvents(begins.concat(ends));
}

function stepNode(n) {
  const kids = n.children.length ? el('ul', null, n.children.map(stepNode)) : null;
  return el('li', {class: `step step-${clean(n.kind)}`, dataset: {step: n.id}},
    el('span', {class: 'kind'}, n.kind || 'step'), ' ',
    el('span', {class: 'name'}, n.name), ' ',
    n.query ? el('code', {class: 'query'}, n.query) : '', ' ',
    el('span', {class: `st st-${clean(n.status)}`}, n.status), ' ',
    el('span', {class: 'lat'}, fmtMs(n.ms)),
    n.error ? el('span', {class: 'err'}, ' ', n.error) : '', kids);
}

function sessionView(root, id) {
  const title = el('h1', null, 'Session ', el('span', {class: 'sid'}, id));
  const info = el('p', {class: 'muted'});
  const haltBtn = el('button', {id: 'halt', class: 'danger'}, 'Halt this session');
  const haltMsg = el('span', {id: 'halt-msg', class: 'muted'});
  const tree = el('ul', {class: 'tree', id: 'tree'});
  const treeNote = el('p', {class: 'muted'});
  const resps = el('div', {id: 'responses'});
  const respNote = el('p', {class: 'muted'});
  const logs = el('ul', {class: 'logs', id: 'session-logs'});
  const logNote = el('p', {class: 'muted'});
  root.append(el('p', null, link([], '← agents')), title, info, el('p', null, haltBtn, ' ', haltMsg),
    el('h2', null, 'Execution path'), treeNote, tree, el('h2', null, 'Responses'), respNote, resps,
    el('h2', null, 'Logs'), logNote, logs);
  let fetched = 0;
  let busy = false;
  let respShown = '';
  haltBtn.addEventListener('click', async () => {
    haltBtn.disabled = true;
    haltMsg.textContent = 'halting…';
    try {
      const j = await api(`/api/v1/sessions/${encodeURIComponent(id)}/halt`,
        {method: 'POST', body: {reason: 'operator halt from the dashboard'}});
      if (j.unavailable) {
        haltMsg.textContent = 'Halt is not available on this collector.';
      } else {
        const n = Array.isArray(j.agents) ?
          j.agents.reduce((x, a) => x + Number(a.connections || 0), 0) : undefined;
        haltMsg.textContent = 'Halt sent' + (n === undefined ? '' : ` to ${n} agent connection(s)`) +
          ': the agent stops at its next token.';
        const s = state.sessions.get(id);
        if (s) s.haltRequested = true;
      }
    } catch (e) {
      haltMsg.textContent = `Halt failed: ${errorText(e)}`;
    }
    haltBtn.disabled = false;
  });
  async function load() {
    busy = true;
    fetched = Date.now();
    let responses = null;
    try {
      const j = await api(`/api/v1/sessions/${encodeURIComponent(id)}`);
      let roots;
      if (j.unavailable) {
        treeNote.textContent = 'The sessions API is not available: the path is rebuilt from the stored events.';
        roots = await treeFromStore(id);
      } else {
        treeNote.textContent = '';
        roots = buildTree(Array.isArray(j.steps) ? j.steps : []);
        if (Number(j.steps_not_shown) > 0) {
          treeNote.textContent = `${j.steps_not_shown} of ${j.steps_total} steps not shown by the collector.`;
        }
        info.textContent = [j.agent ? `agent ${clean(j.agent)}` : '',
          j.status ? `status ${clean(j.status)}` : ''].filter(Boolean).join(' · ');
        if (Array.isArray(j.responses)) responses = j.responses;
      }
      const shownRoots = roots.slice(-200);
      if (roots.length > shownRoots.length) {
        treeNote.textContent += ` Showing the last ${shownRoots.length} of ${roots.length} top-level steps.`;
      }
      clear(tree).append(...shownRoots.map(stepNode));
      if (!roots.length) tree.append(el('li', {class: 'muted'}, 'no step yet'));
    } catch (e) {
      treeNote.textContent = `Execution path: ${errorText(e)}`;
    }
    try {
      if (!responses) {
        const r = await api(`/api/v1/responses?session=${encodeURIComponent(id)}`);
        if (r.unavailable) {
          respNote.textContent = 'Responses are not available on this collector.';
          responses = [];
        } else {
          respNote.textContent = '';
          responses = Array.isArray(r.responses) ? r.responses : [];
        }
      }
      let items = responses.map((x) => (typeof x === 'object' && x ? x : {id: x}));
      if (items.length && items.every((x) => x.begin_unix_ns !== undefined)) {
        items.sort((a, b) => Number(b.begin_unix_ns) - Number(a.begin_unix_ns));
      } else {
        items = items.reverse(); // ids alone: oldest first
      }
      const ids = items.map((x) => String(x.id ?? x.response_id)).filter((x) => x && x !== 'undefined')
        .slice(0, 5);
      const key = ids.join(',');
      if (key !== respShown) {
        respShown = key;
        const parts = [];
        for (const rid of ids) {
          const box = el('section', {class: 'response'});
          parts.push(box);
          renderResponse(box, rid, true);
        }
        hideTip();
        clear(resps).append(...parts);
        if (!ids.length && !respNote.textContent) respNote.textContent = 'no response yet';
        else if (ids.length) respNote.textContent = '';
      }
    } catch (e) {
      respNote.textContent = `Responses: ${errorText(e)}`;
    }
    try {
      // The session's logs, oldest first (the first 200).
      const lj = await api(`/api/v1/events?session=${encodeURIComponent(id)}&kind=log&limit=200`);
      const evs = Array.isArray(lj.events) ? lj.events : [];
      logNote.textContent = evs.length ? '' : 'no log yet';
      clear(logs).append(...evs.map((e) => el('li', {class: `log sev-${clean(e.severity || '')}`},
        el('span', {class: 'muted'}, clean(String(e.time || '')).slice(11, 23)), ' ',
        el('span', {class: 'sev'}, clean(e.severity || '')), ' ', clean(e.message || ''),
        e.attrs && typeof e.attrs === 'object' ? el('code', {class: 'attrs'}, ' ',
          clean(Object.entries(e.attrs).map(([k, v]) => `${k}=${v}`).join(' '))) : '')));
    } catch (e) {
      logNote.textContent = `Logs: ${errorText(e)}`;
    }
    busy = false;
  }
  load();
  return {
    destroy: noop,
    update() {
      const s = state.sessions.get(id);
      if (s && s.halted) {
        haltMsg.textContent = `Halted: ${s.haltReason}`;
        haltMsg.className = 'status status-halted';
      }
      if (!busy && Date.now() - fetched > 2000) load();
    },
  };
}

// --- one response: tokens shaded by confidence ----------------------------------------------

function pick(obj, names) {
  for (const n of names) if (obj && obj[n] !== undefined && obj[n] !== null) return obj[n];
  return undefined;
}

// Normalize the response JSON into {summary, tokens: [{text, logprob, entropy, top: [{text,
// logprob}]}], guards: [{verdict, reason, index}]}.
export function normalizeResponse(j) {
  const sum = (j.summary && typeof j.summary === 'object') ? Object.assign({}, j, j.summary) : j;
  let tokens = [];
  const t = j.tokens;
  if (Array.isArray(t) && t.length && typeof t[0] === 'object') {
    tokens = t.map((x) => ({
      text: pick(x, ['text', 'token', 'piece', 'str']),
      id: pick(x, ['id', 'token_id', 'chosen']),
      logprob: Number(pick(x, ['logprob', 'chosen_logprob', 'lp'])),
      p: Number(pick(x, ['p', 'prob', 'p_chosen'])),
      entropy: Number(pick(x, ['entropy', 'h'])),
      top: normTop(pick(x, ['top', 'top_k', 'topk', 'alternatives']), pick(x, ['top_logprobs'])),
    }));
  } else {
    const src = (j.token_data && typeof j.token_data === 'object') ? j.token_data :
      (t && typeof t === 'object' && !Array.isArray(t)) ? t : j;
    const ids = pick(src, ['ids', 'token_ids', 'chosen']) || (Array.isArray(t) ? t : []);
    const texts = pick(src, ['text', 'texts', 'token_text', 'pieces']) || [];
    const lps = pick(src, ['logprob', 'logprobs', 'chosen_logprob', 'chosen_logprobs']) || [];
    const ents = pick(src, ['entropy', 'entropies']) || [];
    const ps = pick(src, ['p', 'probs', 'p_chosen']) || [];
    const tids = pick(src, ['top_ids', 'topk_ids']) || [];
    const tlps = pick(src, ['top_logprobs', 'topk_logprobs']) || [];
    const tps = pick(src, ['topk_probs', 'top_probs']) || [];
    const ttexts = pick(src, ['topk_texts', 'top_texts']) || [];
    const n = Math.max(ids.length || 0, lps.length || 0, texts.length || 0);
    for (let i = 0; i < n; i++) {
      tokens.push({text: texts[i], id: ids[i], logprob: Number(lps[i]), p: Number(ps[i]),
        entropy: Number(ents[i]),
        top: normTop(tids[i], tlps[i] ?? (Array.isArray(tps[i]) ? tps[i].map((x) => Math.log(x)) : undefined),
          ttexts[i])});
    }
  }
  for (const k of tokens) {
    if (!isFinite(k.p) && isFinite(k.logprob)) k.p = Math.exp(k.logprob);
    if (!isFinite(k.logprob) && isFinite(k.p) && k.p > 0) k.logprob = Math.log(k.p);
  }
  const g = pick(j, ['guard', 'guards', 'guard_events']) || [];
  const guards = (Array.isArray(g) ? g : [g]).filter((x) => x && typeof x === 'object')
    .map((x) => ({verdict: pick(x, ['verdict', 'action']), reason: pick(x, ['reason', 'why']) || '',
      index: pick(x, ['token_index', 'index', 'token'])}));
  return {summary: sum, tokens, guards};
}

function normTop(top, lps, texts) {
  if (!top) return [];
  if (Array.isArray(top) && top.length && typeof top[0] === 'object') {
    return top.map((x) => ({text: pick(x, ['text', 'token', 'piece']), id: pick(x, ['id', 'token_id']),
      logprob: Number(pick(x, ['logprob', 'lp']) ?? Math.log(Number(pick(x, ['p', 'prob']))))}));
  }
  if (Array.isArray(top)) {
    return top.map((id, i) => ({id, logprob: Number(Array.isArray(lps) ? lps[i] : NaN),
      text: Array.isArray(texts) && texts[i] !== null ? texts[i] : undefined}));
  }
  return [];
}

function tokenLabel(t) {
  if (t.text !== undefined && t.text !== null) return clean(t.text);
  if (t.id !== undefined) return `#${t.id}`;
  return '?';
}

let tip = null;

function showTip(target, t, guard) {
  if (!tip) {
    tip = el('div', {id: 'tip', class: 'tip', role: 'tooltip'});
    document.body.append(tip);
  }
  const rows = [
    el('div', null, el('b', null, t.text !== undefined ? JSON.stringify(tokenLabel(t)) : tokenLabel(t))),
    el('div', null, `p = ${fmtNum(t.p, 4)}   log-prob = ${fmtNum(t.logprob, 4)}`),
    el('div', null, `entropy = ${fmtNum(t.entropy, 3)} nats`),
  ];
  if (t.top.length) {
    rows.push(el('div', {class: 'muted'}, 'top-k:'));
    rows.push(el('ol', {class: 'topk'}, t.top.slice(0, 10).map((x) =>
      el('li', null, `${x.text !== undefined ? JSON.stringify(tokenLabel(x)) : tokenLabel(x)}  p=${fmtNum(Math.exp(x.logprob), 4)}`))));
  }
  if (guard) rows.push(el('div', {class: 'err'}, `guard: ${clean(guard.verdict)} – ${clean(guard.reason)}`));
  clear(tip).append(...rows);
  tip.hidden = false;
  const r = target.getBoundingClientRect();
  tip.style.left = `${Math.min(window.innerWidth - 320, Math.max(4, r.left + window.scrollX))}px`;
  tip.style.top = `${r.bottom + window.scrollY + 6}px`;
}

function hideTip() {
  if (tip) tip.hidden = true;
}

function verdictName(v) {
  if (v === 0 || v === '0') return 'pass';
  if (v === 1 || v === '1') return 'flag';
  if (v === 2 || v === '2') return 'halt';
  return v === undefined ? 'unknown' : clean(v).toLowerCase();
}

async function renderResponse(box, rid, compact) {
  box.append(el('p', {class: 'muted'}, 'loading response ', rid, '…'));
  let j;
  try {
    j = await api(`/api/v1/responses/${encodeURIComponent(rid)}`);
  } catch (e) {
    clear(box).append(el('p', {class: 'err'}, `Response ${clean(rid)}: ${errorText(e)}`));
    return;
  }
  clear(box);
  if (j.unavailable) {
    box.append(el('p', {class: 'muted'}, 'Responses are not available on this collector.'));
    return;
  }
  const {summary: s, tokens, guards} = normalizeResponse(j);
  const verdict = verdictName(s.verdict);
  box.append(el('h3', null, compact ? link(['response', rid], `Response ${rid}`) : `Response ${rid}`,
    ' ', el('span', {class: `verdict verdict-${verdict}`}, verdict),
    s.reason ? el('span', {class: 'reason'}, ' ', s.reason) : ''),
  el('p', {class: 'muted'}, [s.model ? `model ${clean(s.model)}` : '', `${tokens.length} tokens`,
    isFinite(s.mean_logprob) ? `mean log-prob ${fmtNum(s.mean_logprob, 3)}` : '',
    isFinite(s.perplexity) ? `perplexity ${fmtNum(s.perplexity, 2)}` : '',
    isFinite(s.min_window_confidence) ? `min window confidence ${fmtNum(s.min_window_confidence, 3)}` : '',
    Number(s.estimated) ? 'estimated from provider log-probs' : ''].filter(Boolean).join(' · ')));
  const byIndex = new Map();
  for (const g of guards) if (g.index !== undefined) byIndex.set(Number(g.index), g);
  const out = el('div', {class: 'tokens'});
  tokens.forEach((t, i) => {
    const p = isFinite(t.p) ? Math.max(0, Math.min(1, t.p)) : 1;
    const span = el('span', {class: t.text === undefined ? 'tok tok-id' : 'tok',
      dataset: {p: p.toFixed(4), i: String(i)}}, tokenLabel(t));
    span.style.backgroundColor = `rgba(220, 38, 38, ${((1 - p) * 0.85).toFixed(3)})`;
    const g = byIndex.get(i);
    if (g) span.classList.add('tok-guard');
    span.addEventListener('mouseenter', () => showTip(span, t, g));
    span.addEventListener('mouseleave', hideTip);
    out.append(span);
  });
  box.append(out);
  // The whole answer as the model wrote it (the tokens' texts), when the agent sent them.
  if (typeof j.text === 'string' && j.text) {
    box.append(el('p', {class: 'response-text'}, clean(j.text)));
  }
  if (guards.length) {
    box.append(el('ul', {class: 'guards'}, guards.map((g) => el('li', null,
      el('span', {class: `verdict verdict-${verdictName(g.verdict)}`}, verdictName(g.verdict)), ' ',
      g.index !== undefined ? `at token ${clean(g.index)}: ` : '', g.reason))));
  }
}

function responseView(root, rid) {
  const box = el('section', {class: 'response'});
  root.append(el('p', null, link([], '← agents')), box);
  renderResponse(box, rid, false);
  return {destroy: hideTip, update: noop};
}

// --- alerts ----------------------------------------------------------------------------------

function alertsView(root) {
  const note = el('p', {class: 'muted'});
  const list = el('tbody');
  root.append(el('h1', null, 'Alerts'), note, el('table', {class: 'alerts'},
    el('thead', null, el('tr', null, ...['time', 'agent', 'session', 'what', 'message', ''].map((h) =>
      el('th', null, h)))), list));
  let shown = '';
  return {
    destroy: noop,
    update() {
      note.textContent = state.alertsUnavailable ? 'The alerts API is not available on this collector.' : '';
      const key = state.alerts.map((a) => a.id + (a.acked ? 'a' : '')).join(',');
      if (key === shown) return;
      shown = key;
      clear(list).append(...state.alerts.slice(0, 200).map((a) => {
        const btn = a.acked ? el('span', {class: 'muted'}, 'acknowledged') :
          el('button', {class: 'ack'}, 'Acknowledge');
        if (!a.acked) {
          btn.addEventListener('click', async () => {
            btn.disabled = true;
            try {
              const j = await api(`/api/v1/alerts/${encodeURIComponent(a.id)}/ack`, {method: 'POST', body: {}});
              if (j.unavailable) btn.textContent = 'not available';
              else {
                a.acked = true;
                invalidate();
              }
            } catch (e) {
              btn.textContent = `failed: ${errorText(e)}`;
            }
          });
        }
        return el('tr', {class: a.acked ? 'acked' : 'open'}, el('td', null, fmtTime(a.timeMs)),
          el('td', null, a.agent ? link(['agent', a.agent], a.agent) : ''),
          el('td', null, a.session ? link(['session', a.session], a.session) : ''),
          el('td', null, a.kind), el('td', null, a.message), el('td', null, btn));
      }));
      if (!state.alerts.length) list.append(el('tr', null, el('td', {colspan: 6, class: 'muted'}, 'no alert')));
    },
  };
}
