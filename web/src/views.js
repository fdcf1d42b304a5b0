// views.js - the views. Each mount() returns {update(), destroy()}; update() is called at most
// four times a second by app.js. Telemetry strings only ever reach the DOM as text (el(),
// text(), textContent), with ANSI sequences stripped.

import {api, HttpError} from './api.js';
import {
  state, agent as getAgent, agentStatus, eventRate, invalidate,
} from './app.js';
import {HistoryChart, sparkline} from './charts.js';
import {agentSeries, endsNow, rangeLabel, series, seriesNow} from './history.js';
import {clean, clear, el, eventMs, fmtAgo, fmtMs, fmtNum, fmtTime, known, link} from './util.js';

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

// The live feed: filters by agent, kind and session, a search over the row's text, pause
// (the rows stay as they are until resumed); a response's guard decisions in a row are folded
// into one ("guard ×12").
function feedTable(filter, opts = {}) {
  const body = el('tbody');
  const fAgent = el('input', {class: 'f-agent', placeholder: 'agent', size: 10, value: opts.agent || ''});
  const fKind = el('select', {class: 'f-kind'}, ['', 'log', 'metric', 'step_begin', 'step_end', 'tokens',
    'response_begin', 'response_end', 'guard'].map((k) => el('option', {value: k}, k || 'any kind')));
  const fSession = el('input', {class: 'f-session', placeholder: 'session', size: 10});
  const fSearch = el('input', {class: 'f-search', placeholder: 'search', size: 14, type: 'search'});
  const pause = el('button', {type: 'button', class: 'f-pause'}, 'pause');
  let paused = false;
  pause.addEventListener('click', () => {
    paused = !paused;
    pause.textContent = paused ? 'resume' : 'pause';
    pause.classList.toggle('on', paused);
    shown = null;
  });
  let shown = null;
  const bar = el('div', {class: 'feedbar'}, fAgent, fKind, fSession, fSearch, pause);
  for (const x of [fAgent, fKind, fSession, fSearch]) x.addEventListener('input', () => { shown = null; });
  const table = el('table', {class: 'feed'},
    el('thead', null, el('tr', null, el('th', null, 'time'), el('th', null, 'agent'),
      el('th', null, 'session'), el('th', null, 'kind'), el('th', null, 'what'))), body);
  const matches = (ev) => {
    if (filter && !filter(ev)) return false;
    if (fAgent.value && !String(ev.agent || '').includes(fAgent.value)) return false;
    if (fKind.value && ev.kind !== fKind.value) return false;
    if (fSession.value && !String(ev.session || '').includes(fSession.value)) return false;
    if (fSearch.value) {
      const hay = `${ev.agent} ${ev.session} ${ev.kind} ${summary(ev).join(' ')}`.toLowerCase();
      if (!hay.includes(fSearch.value.toLowerCase())) return false;
    }
    return true;
  };
  return {
    node: el('div', null, bar, table),
    update() {
      if (paused) return;
      const last = state.feed[state.feed.length - 1];
      if (last === shown) return;
      shown = last;
      const rows = [];
      let fold = null; // the guard row being folded: {ev, n, td}
      for (let i = state.feed.length - 1; i >= 0 && rows.length < 40; i--) {
        const ev = state.feed[i];
        if (!matches(ev)) continue;
        if (ev.kind === 'guard' && fold && fold.ev.response_id === ev.response_id &&
            fold.ev.agent === ev.agent) {
          fold.n++;
          fold.count.textContent = ` ×${fold.n}`;
          continue;
        }
        const count = el('span', {class: 'fold'});
        rows.push(el('tr', {class: `ev ev-${clean(ev.kind)}`},
          el('td', {class: 'num'}, fmtTime(eventMs(ev))),
          el('td', null, ev.agent ? link(['agent', ev.agent], ev.agent) : ''),
          el('td', null, ev.session ? link(['session', ev.session], ev.session) : ''),
          el('td', null, ev.kind, count),
          el('td', {class: 'what'}, summary(ev).filter((x) => x !== undefined && x !== '')
            .map((x) => el('span', {class: 'part'}, x)))));
        fold = ev.kind === 'guard' ? {ev, n: 1, count} : null;
      }
      clear(body).append(...rows);
    },
  };
}

// --- agents overview -------------------------------------------------------------------------

// The worst detector's statistic over its threshold: 'drift' at 1, 'rising' above 0.5.
function driftState(info) {
  const d = info && info.live && Array.isArray(info.live.detectors) ? info.live.detectors : [];
  let worst = -1;
  for (const x of d) {
    const f = Number(x.stat) / Number(x.threshold);
    if (known(x.stat) && known(x.threshold) && isFinite(f)) worst = Math.max(worst, f);
  }
  if (worst < 0) return {state: '–', level: -1};
  return {state: worst >= 1 ? 'drift' : worst >= 0.5 ? 'rising' : 'ok', level: worst};
}

const lastOf = (arr) => {
  for (let i = (arr || []).length - 1; i >= 0; i--) if (known(arr[i])) return Number(arr[i]);
  return undefined;
};

// The figures of an overview row, from the live state, /api/v1/agents and the range's series.
function rowFigures(a, j) {
  const info = a.info || {};
  const live = info.live || {};
  const s = agentSeries(j, a.name);
  const span = j && Array.isArray(j.t) ? j.t.length * Number(j.step_s) : 0;
  const tot = s ? s.totals : null;
  const steps = tot && tot.steps ? tot.steps : {};
  const lat = steps.tool || Object.values(steps).sort((x, y) => y.n - x.n)[0];
  const conf = known(live.confidence_last) && endsNow() ? Number(live.confidence_last) :
    s ? lastOf(s.confidence.mean) : undefined;
  const drift = driftState(info);
  const loss = info.loss ? Number(info.loss.proven || 0) + Number(info.loss.reported_dropped || 0) : undefined;
  return {
    name: a.name,
    status: agentStatus(a),
    conf,
    spark: s ? s.confidence.mean : [],
    drift: drift.state,
    driftLevel: drift.level,
    resp: tot && span ? tot.responses / span : undefined,
    tools: tot && span ? tot.tool_calls / span : undefined,
    toolErr: tot && tot.tool_calls ? (100 * tot.tool_errors) / tot.tool_calls : undefined,
    p50: lat ? Number(lat.p50) / 1e6 : undefined,
    p95: lat ? Number(lat.p95) / 1e6 : undefined,
    loss,
    incidents: Number(info.open_alerts || 0),
    rate: eventRate(a),
    events: tot ? tot.events : undefined,
  };
}

function health(f) {
  if (f.status === 'halted' || f.incidents > 0 || f.drift === 'drift') return 'red';
  if (f.drift === 'rising' || (f.toolErr !== undefined && f.toolErr > 5) || f.loss > 0) return 'amber';
  return f.status === 'live' ? 'green' : 'grey';
}

const OV_COLS = [
  ['', 'health'], ['agent', 'name'], ['status', 'status'], ['confidence', 'conf'], ['drift', 'driftLevel'],
  ['resp/s', 'resp'], ['tools/s', 'tools'], ['tool err %', 'toolErr'], ['lat p50', 'p50'], ['lat p95', 'p95'],
  ['loss', 'loss'], ['incidents', 'incidents'], ['events/s', 'rate'], ['events', 'events'],
];

function overview(root) {
  const tbody = el('tbody');
  const total = el('span', {id: 'total-events'}, '0');
  const feed = feedTable(null);
  const filter = el('input', {id: 'agent-filter', type: 'search', placeholder: 'filter agents', size: 16});
  let sortKey = 'name';
  let sortDir = 1;
  const heads = OV_COLS.map(([label, key]) => {
    const th = el('th', {class: `sortable col-${key}`, dataset: {key}}, label);
    th.addEventListener('click', () => {
      sortDir = sortKey === key ? -sortDir : (key === 'name' ? 1 : -1);
      sortKey = key;
      invalidate();
    });
    return th;
  });
  const note = el('span', {class: 'muted', id: 'series-note'});
  filter.addEventListener('input', invalidate);
  root.append(
    el('div', {class: 'titlebar'}, el('h1', null, 'Agents'), filter,
      el('span', {class: 'muted'}, 'Events received live: ', total), note),
    el('table', {class: 'agents dense'}, el('thead', null, el('tr', null, ...heads)), tbody),
    el('h2', null, 'Live events'), feed.node);
  let j = null;
  let fetching = false;
  async function fetchSeries() {
    if (fetching) return;
    fetching = true;
    try {
      j = await series(null);
      note.textContent = `figures over the ${rangeLabel()} (${j.step_s} s buckets)`;
    } catch (e) {
      note.textContent = `history: ${errorText(e)}`;
    }
    fetching = false;
    invalidate();
  }
  return {
    destroy: noop,
    update() {
      total.textContent = String(state.total);
      const cached = seriesNow(null);
      if (cached) j = cached;
      fetchSeries();
      const rows = [];
      const q = filter.value.trim().toLowerCase();
      const names = new Set([...state.agents.keys()].filter((n) => n));
      for (const s of (j && j.agents) || []) names.add(s.agent);
      let figs = [...names].filter((n) => !q || n.toLowerCase().includes(q))
        .map((n) => rowFigures(getAgent(n), j));
      figs = figs.sort((x, y) => {
        const vx = sortKey === 'health' ? health(x) : x[sortKey];
        const vy = sortKey === 'health' ? health(y) : y[sortKey];
        if (vx === vy) return x.name < y.name ? -1 : 1;
        if (vx === undefined) return 1;
        if (vy === undefined) return -1;
        return (vx < vy ? -1 : 1) * sortDir;
      });
      for (const th of heads) th.className = `sortable col-${th.dataset.key}${th.dataset.key === sortKey ? (sortDir > 0 ? ' asc' : ' desc') : ''}`;
      if (!figs.length) {
        rows.push(el('tr', null, el('td', {colspan: OV_COLS.length, class: 'muted'},
          q ? 'No agent matches the filter.' : 'No agent yet: start one (telltale demo) and it shows here.')));
      }
      const num = (v, d) => (!known(v) ? '–' : Number(v).toFixed(d));
      for (const f of figs) {
        const h = health(f);
        rows.push(el('tr', {class: 'agent-row', dataset: {agent: f.name}},
          el('td', null, el('span', {class: `health health-${h}`, title: h})),
          el('td', null, link(['agent', f.name], f.name)),
          el('td', null, el('span', {class: `status status-${f.status}`}, f.status)),
          el('td', {class: 'conf'}, el('span', {class: 'num conf-num'}, f.conf === undefined ? '–' : Number(f.conf).toPrecision(3)),
            ' ', sparkline((f.spark || []).slice(-120), 90, 18)),
          el('td', null, el('span', {class: `drift drift-${f.drift === '–' ? 'none' : f.drift}`}, f.drift)),
          el('td', {class: 'num resp'}, num(f.resp, 2)),
          el('td', {class: 'num tools'}, num(f.tools, 2)),
          el('td', {class: 'num toolerr'}, num(f.toolErr, 1)),
          el('td', {class: 'num p50'}, fmtMs(f.p50)),
          el('td', {class: 'num p95'}, fmtMs(f.p95)),
          el('td', {class: 'num'}, f.loss === undefined ? '–' : String(f.loss)),
          el('td', {class: 'num incidents'}, String(f.incidents)),
          el('td', {class: 'num rate'}, f.rate.toFixed(1)),
          el('td', {class: 'num events'}, f.events === undefined ? '–' : String(f.events))));
      }
      clear(tbody).append(...rows);
      feed.update();
    },
  };
}

// --- one agent: live charts, sessions --------------------------------------------------------

const ratio = (num, den) => num.map((v, i) => (den[i] ? (100 * v) / den[i] : null));
const perS = (arr, step) => arr.map((v) => v / step);
const nsToMsArr = (arr) => arr.map((v) => (v === null ? null : v / 1e6));

function agentView(root, name) {
  const a = getAgent(name);
  const status = el('span', {class: 'status'});
  const box = () => el('div', {class: 'chart wide'});
  const confBox = box(), latBox = box(), errBox = box(), rateBox = box();
  const charts = el('div', {class: 'charts stack'}, confBox, latBox, errBox, rateBox);
  const totals = el('p', {id: 'agent-totals', class: 'muted'});
  const tools = el('tbody');
  const dets = el('tbody');
  const recent = el('tbody');
  const sessions = el('ul', {class: 'sessions'});
  const sessNote = el('p', {class: 'muted'});
  const feed = feedTable((ev) => ev.agent === name);
  const th = (...h) => el('thead', null, el('tr', null, ...h.map((x) => el('th', null, x))));
  root.append(el('p', null, link([], '← agents')), el('h1', null, 'Agent ', el('span', null, name), ' ', status),
    totals, charts,
    el('div', {class: 'cols'},
      el('section', null, el('h2', null, 'Tools'), el('table', {class: 'tools', id: 'tools'},
        th('tool', 'calls', 'errors', 'error %', 'p50', 'p95'), tools)),
      el('section', null, el('h2', null, 'Detectors'), el('table', {class: 'detectors'},
        th('detector', 'statistic', 'threshold', 'level', 'samples'), dets))),
    el('h2', null, 'Recent responses'), el('table', {class: 'recent', id: 'recent'},
      th('time', 'session', 'tokens', 'confidence', 'verdict', 'reason'), recent),
    el('h2', null, 'Sessions'), sessNote, sessions, el('h2', null, 'Live events'), feed.node);
  const conf = new HistoryChart(confBox, {title: 'confidence (p05–p95 band, p50, mean)',
    names: ['p95', 'p50', 'p05', 'mean'], band: [1, 3],
    colors: ['#93c5fd', '#2563eb', '#93c5fd', '#16a34a']});
  const lat = new HistoryChart(latBox, {title: 'step latency p95 per kind (ms)', names: ['p95']});
  const err = new HistoryChart(errBox, {title: 'tool error rate (%)', names: ['error %'], colors: ['#dc2626']});
  const rate = new HistoryChart(rateBox, {title: 'per second', names: ['events/s', 'responses/s', 'tool calls/s']});
  let apiSessions = null;
  let fetched = 0;
  let j = null;
  async function fetchSessions() {
    fetched = Date.now();
    try {
      const r = await api(`/api/v1/sessions?agent=${encodeURIComponent(name)}`);
      if (r.unavailable) {
        sessNote.textContent = 'The sessions API is not available on this collector: showing the sessions seen live.';
        apiSessions = null;
      } else {
        sessNote.textContent = '';
        apiSessions = Array.isArray(r.sessions) ? r.sessions : [];
      }
      const rr = await api(`/api/v1/responses?agent=${encodeURIComponent(name)}&limit=15`);
      const list = Array.isArray(rr.responses) ? rr.responses : [];
      clear(recent).append(...list.map((x) => {
        const v = verdictName(x.verdict);
        const c = known(x.mean_logprob) ? Math.exp(Number(x.mean_logprob)) : undefined;
        return el('tr', null, el('td', null, fmtTime(Number(x.end_unix_ns || x.begin_unix_ns) / 1e6)),
          el('td', null, x.session ? link(['session', x.session], x.session) : ''),
          el('td', {class: 'num'}, String(x.tokens ?? '–')),
          el('td', {class: 'num'}, c === undefined ? '–' : c.toPrecision(3)),
          el('td', null, link(['response', String(x.id)], el('span', {class: `verdict verdict-${v}`}, v))),
          el('td', null, x.reason || ''));
      }));
    } catch (e) {
      sessNote.textContent = `Sessions: ${errorText(e)}`;
    }
    invalidate();
  }
  async function fetchSeries() {
    try {
      const r = await series(name);
      if (r && !Array.isArray(r.t)) {
        totals.textContent = r.unavailable ? 'History is not available on this collector.' :
          `history: unexpected answer ${clean(JSON.stringify(r).slice(0, 200))}`;
      } else if (r !== j) {
        j = r;
        invalidate();
      }
    } catch (e) {
      totals.textContent = `history: ${errorText(e)}`;
    }
  }
  fetchSessions();
  fetchSeries();
  function draw() {
    const s = agentSeries(j, name);
    const t = j ? j.t : [];
    const step = j ? Number(j.step_s) : 1;
    const zeros = t.map(() => 0);
    const alerts = a.alertTimes;
    const sv = s || {confidence: {p95: zeros, p50: zeros, p05: zeros, mean: zeros}, events: zeros,
      responses: zeros, tool_calls: zeros, tool_errors: zeros, steps: {}, tools: [], totals: null};
    conf.update(t, [sv.confidence.p95, sv.confidence.p50, sv.confidence.p05, sv.confidence.mean], alerts);
    const kinds = Object.keys(sv.steps).sort();
    lat.update(t, kinds.length ? kinds.map((k) => nsToMsArr(sv.steps[k].p95)) : [t.map(() => null)], alerts,
      kinds.length ? kinds : ['p95']);
    err.update(t, [ratio(sv.tool_errors, sv.tool_calls)], alerts);
    rate.update(t, [perS(sv.events, step), perS(sv.responses, step), perS(sv.tool_calls, step)], alerts);
    const tot = sv.totals;
    if (j) {
      totals.dataset.events = String(tot ? tot.events : 0);
      totals.dataset.responses = String(tot ? tot.responses : 0);
      totals.dataset.from = String(j.from);
      totals.dataset.to = String(j.to);
      totals.dataset.step = String(j.step_s);
      totals.textContent = `${rangeLabel()} · ${j.step_s} s buckets · ` + (tot ?
        `${tot.events} events · ${tot.responses} responses (${tot.flagged} flagged) · ` +
        `confidence p50 ${fmtNum(tot.confidence.p50, 3)} · ${tot.tool_calls} tool calls, ` +
        `${tot.tool_errors} errors` : 'no data in the range');
    }
    clear(tools).append(...(sv.tools || []).map((x) => el('tr', {dataset: {tool: x.name}},
      el('td', null, x.name), el('td', {class: 'num calls'}, String(x.n)),
      el('td', {class: 'num errors'}, String(x.errors)),
      el('td', {class: 'num'}, x.n ? ((100 * x.errors) / x.n).toFixed(1) : '–'),
      el('td', {class: 'num'}, fmtMs(Number(x.p50) / 1e6)), el('td', {class: 'num'}, fmtMs(Number(x.p95) / 1e6)))));
    if (!(sv.tools || []).length) tools.append(el('tr', null, el('td', {colspan: 6, class: 'muted'}, 'no tool call in the range')));
    const d = a.info && a.info.live && Array.isArray(a.info.live.detectors) ? a.info.live.detectors : [];
    clear(dets).append(...d.map((x) => el('tr', null, el('td', null, x.detector),
      el('td', {class: 'num'}, fmtNum(x.stat, 3)), el('td', {class: 'num'}, fmtNum(x.threshold, 3)),
      el('td', {class: 'num'}, fmtNum(x.level, 3)), el('td', {class: 'num'}, String(x.samples ?? '')))));
    if (!d.length) dets.append(el('tr', null, el('td', {colspan: 5, class: 'muted'}, 'no detector reading')));
  }
  return {
    destroy() {
      conf.destroy();
      lat.destroy();
      err.destroy();
      rate.destroy();
    },
    update() {
      const st = agentStatus(a);
      status.className = `status status-${st}`;
      status.textContent = st;
      fetchSeries();
      draw();
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
        startMs: s.start_unix_ns !== undefined ? Number(s.start_unix_ns) / 1e6 : undefined,
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

// The waterfall: every step of the session as a row (indented by depth) with a bar from its
// start over its latency, on one time axis. Rows are virtualized: only those in view (and a
// margin) are in the DOM, so a 600-step session costs a few dozen rows. A top-level step (a
// turn) with children folds and unfolds on a click.
const WF_ROW = 20;

function waterfall() {
  const inner = el('div', {class: 'wf-inner'});
  const box = el('div', {class: 'waterfall', id: 'waterfall'}, inner);
  const folded = new Set();
  let rows = [];
  let t0 = 0;
  let t1 = 1;
  let roots = [];
  function flatten() {
    rows = [];
    const walk = (n, depth) => {
      rows.push({n, depth});
      if (!folded.has(n.id)) for (const c of n.children) walk(c, depth + 1);
    };
    for (const r of roots) walk(r, 0);
    box.dataset.total = String(rows.length);
    inner.style.height = `${rows.length * WF_ROW}px`;
  }
  function paint() {
    const first = Math.max(0, Math.floor(box.scrollTop / WF_ROW) - 10);
    const last = Math.min(rows.length, first + Math.ceil((box.clientHeight || 400) / WF_ROW) + 20);
    const span = Math.max(1, t1 - t0);
    const out = [];
    for (let i = first; i < last; i++) {
      const {n, depth} = rows[i];
      const left = n.startMs === undefined ? 0 : ((n.startMs - t0) / span) * 100;
      const width = n.ms === undefined ? 0.3 : Math.max(0.3, (n.ms / span) * 100);
      const label = el('span', {class: 'wf-label'},
        n.children.length ? el('span', {class: 'wf-fold'}, folded.has(n.id) ? '▸ ' : '▾ ') : '',
        el('span', {class: 'kind'}, n.kind || 'step'), ' ', n.name);
      label.style.paddingLeft = `${depth * 12}px`;
      const bar = el('span', {class: `wf-bar st-bar-${clean(n.status)}`, title: `${n.name} ${fmtMs(n.ms)} ${n.status}`});
      bar.style.left = `${Math.min(99.7, left)}%`;
      bar.style.width = `${Math.min(100 - Math.min(99.7, left), width)}%`;
      const row = el('div', {class: `wf-row step-${clean(n.kind)}`, dataset: {step: n.id}}, label,
        el('span', {class: 'wf-track'}, bar), el('span', {class: 'wf-lat'}, fmtMs(n.ms)));
      row.style.top = `${i * WF_ROW}px`;
      if (n.children.length) {
        row.addEventListener('click', () => {
          if (folded.has(n.id)) folded.delete(n.id);
          else folded.add(n.id);
          flatten();
          paint();
        });
      }
      out.push(row);
    }
    clear(inner).append(...out);
  }
  box.addEventListener('scroll', () => requestAnimationFrame(paint));
  return {
    node: box,
    set(forest) {
      roots = forest;
      let lo = Infinity;
      let hi = -Infinity;
      const walk = (n) => {
        if (n.startMs !== undefined) {
          lo = Math.min(lo, n.startMs);
          hi = Math.max(hi, n.startMs + (n.ms || 0));
        }
        n.children.forEach(walk);
      };
      roots.forEach(walk);
      t0 = isFinite(lo) ? lo : 0;
      t1 = isFinite(hi) ? hi : 1;
      flatten();
      paint();
    },
  };
}

// How a decision reads: the agent blocked the step, or flagged it; the collector can only say
// what a rule would have done (the step had already run).
function decisionWord(e) {
  const block = e.attrs['comply.verdict'] === 'block';
  if (e.attrs['comply.by'] === 'collector') {
    return block ? 'ran, would be blocked (collector)' : 'flagged (collector)';
  }
  return block ? 'blocked' : 'flagged';
}

function decisionItem(e) {
  const a = e.attrs;
  const block = a['comply.verdict'] === 'block';
  const step = [a['step.kind'], a['step.name']].filter(Boolean).map((x) => clean(String(x))).join(' ');
  return el('li', {class: `decision decision-${block ? 'block' : 'flag'}`, dataset: {step: clean(String(a['step.id'] || ''))}},
    el('span', {class: 'muted'}, clean(String(e.time || '')).slice(11, 23)), ' ',
    el('span', {class: `verdict verdict-${block ? 'block' : 'flag'}`}, decisionWord(e)), ' ',
    step ? el('span', {class: 'name'}, step) : el('span', {class: 'muted'}, 'a log'), ' ',
    el('span', {class: 'rule'}, `rule ${clean(String(a['comply.rule'] || ''))}`), ': ',
    el('span', {class: 'why'}, clean(String(a['comply.why'] || ''))));
}

function sessionView(root, id) {
  const title = el('h1', null, 'Session ', el('span', {class: 'sid'}, id));
  const info = el('p', {class: 'muted'});
  const haltBtn = el('button', {id: 'halt', class: 'danger'}, 'Halt this session');
  const haltMsg = el('span', {id: 'halt-msg', class: 'muted'});
  const resumeBtn = el('button', {id: 'resume', type: 'button', hidden: true}, 'Resume this session');
  const tree = el('ul', {class: 'tree', id: 'tree'});
  const wf = waterfall();
  const treeNote = el('p', {class: 'muted'});
  const resps = el('div', {id: 'responses'});
  const respNote = el('p', {class: 'muted'});
  const logs = el('ul', {class: 'logs', id: 'session-logs'});
  const logNote = el('p', {class: 'muted'});
  const decisions = el('ul', {class: 'decisions', id: 'decisions'});
  const decNote = el('p', {class: 'muted'});
  root.append(el('p', null, link([], '← agents')), title, info, el('p', null, haltBtn, ' ', resumeBtn, ' ', haltMsg),
    el('h2', null, 'Timeline'), wf.node,
    el('h2', null, 'Execution path'), treeNote, tree,
    el('h2', null, 'Compliance'), decNote, decisions,
    el('h2', null, 'Responses'), respNote, resps,
    el('h2', null, 'Logs'), logNote, logs);
  let fetched = 0;
  let busy = false;
  let respShown = '';
  // The operator halt the newest ended response in the store shows ('' if none): after a reload
  // the live stream has not seen the halt. Ignored for the response newest when resumed here.
  let storedHalt = '';
  let newestId = '';
  let resumedOver = null;
  // Halting takes two clicks: the first asks, the second (Confirm) sends.
  const confirmBtn = el('button', {id: 'halt-confirm', class: 'danger', type: 'button'}, 'Confirm: halt the agent');
  const cancelBtn = el('button', {id: 'halt-cancel', type: 'button'}, 'Cancel');
  const ask = el('span', {id: 'halt-ask', class: 'ask', hidden: true},
    'The agent stops generating in this session at its next token, until the session is resumed. ', confirmBtn, ' ', cancelBtn);
  haltBtn.after(ask);
  haltBtn.addEventListener('click', () => {
    ask.hidden = false;
    haltBtn.disabled = true;
  });
  cancelBtn.addEventListener('click', () => {
    ask.hidden = true;
    haltBtn.disabled = false;
  });
  confirmBtn.addEventListener('click', async () => {
    ask.hidden = true;
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
        resumeBtn.hidden = false;
      }
    } catch (e) {
      haltMsg.textContent = `Halt failed: ${errorText(e)}`;
    }
    haltBtn.disabled = false;
  });
  // Resuming lifts the halt: the session's responses begun afterwards pass again.
  resumeBtn.addEventListener('click', async () => {
    resumeBtn.disabled = true;
    haltMsg.textContent = 'resuming…';
    haltMsg.className = 'muted';
    try {
      const j = await api(`/api/v1/sessions/${encodeURIComponent(id)}/resume`,
        {method: 'POST', body: {reason: 'operator resume from the dashboard'}});
      if (j.unavailable) {
        haltMsg.textContent = 'Resume is not available on this collector.';
      } else {
        const n = Number(j.connections || 0);
        haltMsg.textContent = `Resume sent to ${n} agent connection(s): its next responses pass again.`;
        const s = state.sessions.get(id);
        if (s) {
          s.halted = false;
          s.haltRequested = false;
        }
        storedHalt = '';
        resumedOver = newestId;
        resumeBtn.hidden = true;
      }
    } catch (e) {
      haltMsg.textContent = `Resume failed: ${errorText(e)}`;
    }
    resumeBtn.disabled = false;
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
      wf.set(roots);
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
      // Compliance decisions (docs/compliance.md): logs of severity warn or above with
      // comply.* attributes, the agent's or the collector's (comply.by = collector). Each is
      // listed and marks its step in the execution path.
      const dj = await api(`/api/v1/events?session=${encodeURIComponent(id)}&kind=log&min_severity=warn&limit=1000`);
      const ds = (Array.isArray(dj.events) ? dj.events : [])
        .filter((e) => e.attrs && typeof e.attrs === 'object' && e.attrs['comply.verdict'] !== undefined);
      decNote.textContent = ds.length ? '' : 'no compliance decision';
      clear(decisions).append(...ds.map(decisionItem));
      for (const e of ds) {
        const sid = clean(String(e.attrs['step.id'] || ''));
        if (!sid) continue;
        const li = [...tree.querySelectorAll('li.step')].find((x) => x.dataset.step === sid);
        if (!li || li.querySelector(':scope > .comply')) continue;
        const block = e.attrs['comply.verdict'] === 'block';
        li.classList.add(block ? 'step-blocked' : 'step-flagged');
        li.insertBefore(el('span', {class: `comply comply-${block ? 'block' : 'flag'}`},
          decisionWord(e), ` · rule ${clean(String(e.attrs['comply.rule'] || ''))}: `,
          clean(String(e.attrs['comply.why'] || ''))), li.querySelector(':scope > ul'));
      }
    } catch (e) {
      decNote.textContent = `Compliance: ${errorText(e)}`;
    }
    try {
      const nj = await api(`/api/v1/responses?session=${encodeURIComponent(id)}&limit=1`);
      const top = Array.isArray(nj.responses) ? nj.responses[0] : undefined;
      if (top && top.verdict !== null && top.verdict !== undefined) {
        newestId = String(top.id);
        const halt = String(top.verdict) === 'halt' && /^operator halt/.test(String(top.reason || ''));
        storedHalt = halt && newestId !== resumedOver ? clean(top.reason) : '';
      }
    } catch (e) {
      // The live stream still shows the halts that happen while the page is open.
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
      if ((s && s.halted) || storedHalt) {
        haltMsg.textContent = `Halted: ${s && s.halted ? s.haltReason : storedHalt}`;
        haltMsg.className = 'status status-halted';
        resumeBtn.hidden = false;
      } else if (haltMsg.classList.contains('status-halted')) {
        haltMsg.textContent = 'Running: a response of the session got through since the halt.';
        haltMsg.className = 'muted';
        resumeBtn.hidden = !(s && s.haltRequested);
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
    if (!known(k.p) && known(k.logprob)) k.p = Math.exp(k.logprob);
    if (!known(k.logprob) && known(k.p) && k.p > 0) k.logprob = Math.log(k.p);
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
    known(s.mean_logprob) ? `mean log-prob ${fmtNum(s.mean_logprob, 3)}` : '',
    known(s.perplexity) ? `perplexity ${fmtNum(s.perplexity, 2)}` : '',
    known(s.min_window_confidence) ? `min window confidence ${fmtNum(s.min_window_confidence, 3)}` : '',
    Number(s.estimated) ? 'estimated from provider log-probs' : ''].filter(Boolean).join(' · ')));
  const byIndex = new Map();
  for (const g of guards) if (g.index !== undefined) byIndex.set(Number(g.index), g);
  const out = el('div', {class: 'tokens'});
  tokens.forEach((t, i) => {
    const p = known(t.p) ? Math.max(0, Math.min(1, t.p)) : 1;
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
    box.append(el('ul', {class: 'guards'}, guardRuns(guards).map((r) => el('li', {class: 'guard-run'},
      el('span', {class: `verdict verdict-${r.verdict}`}, r.verdict), ' ',
      r.first === undefined ? '' : r.first === r.last ? `token ${r.first}` : `tokens ${r.first}–${r.last}`,
      r.n > 1 ? ` (${r.n} decisions)` : '', r.reason ? `: ${r.reason}` : ''))));
  }
}

// Guard decisions merged into runs: consecutive token indices with the same verdict are one
// line ("tokens 7–31 flagged"); the reason shown is the run's first.
export function guardRuns(guards) {
  const list = guards.map((g) => ({verdict: verdictName(g.verdict), reason: clean(g.reason),
    index: g.index === undefined ? undefined : Number(g.index)}))
    .sort((x, y) => (x.index ?? -1) - (y.index ?? -1));
  const runs = [];
  for (const g of list) {
    const r = runs[runs.length - 1];
    if (r && g.index !== undefined && r.last !== undefined && r.verdict === g.verdict &&
        g.index <= r.last + 1) {
      r.last = Math.max(r.last, g.index);
      r.n++;
    } else {
      runs.push({verdict: g.verdict, reason: g.reason, first: g.index, last: g.index, n: 1});
    }
  }
  return runs;
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
  const fSev = el('select', {id: 'alert-severity'}, ['', 'critical', 'warning', 'info'].map((x) =>
    el('option', {value: x}, x || 'any severity')));
  const fState = el('select', {id: 'alert-state'}, ['all', 'open', 'acked'].map((x) => el('option', {value: x}, x)));
  const fText = el('input', {id: 'alert-filter', type: 'search', placeholder: 'agent, detector, message'});
  root.append(el('h1', null, 'Alerts'), el('div', {class: 'feedbar'}, fSev, fState, fText), note,
    el('table', {class: 'alerts'},
      el('thead', null, el('tr', null, ...['first', 'last', 'severity', 'agent', 'session', 'what', 'count',
        'message', ''].map((h) => el('th', null, h)))), list));
  let shown = '';
  for (const x of [fSev, fState, fText]) x.addEventListener('input', () => { shown = ''; invalidate(); });
  return {
    destroy: noop,
    update() {
      note.textContent = state.alertsUnavailable ? 'The alerts API is not available on this collector.' :
        'One row per incident: its repeats update the row (count, last).';
      const q = fText.value.toLowerCase();
      const items = state.alerts.filter((a) => (!fSev.value || a.severity === fSev.value) &&
        (fState.value === 'all' || (fState.value === 'open') === !a.acked) &&
        (!q || `${a.agent} ${a.kind} ${a.message} ${a.session}`.toLowerCase().includes(q)));
      const key = items.map((a) => a.id + (a.acked ? 'a' : '') + (a.lastMs || '')).join(',') + fState.value;
      if (key === shown) return;
      shown = key;
      clear(list).append(...items.slice(0, 200).map((a) => {
        const btn = a.acked ? el('span', {class: 'muted'}, 'acknowledged') :
          el('button', {class: 'ack'}, 'Acknowledge');
        if (!a.acked) {
          btn.addEventListener('click', async () => {
            btn.disabled = true;
            try {
              const j = await api(`/api/v1/incidents/${encodeURIComponent(a.id)}/ack`, {method: 'POST', body: {}});
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
        const raw = a.raw || {};
        return el('tr', {class: `${a.acked ? 'acked' : 'open'} sev-${clean(a.severity)}`, dataset: {incident: a.id}},
          el('td', null, fmtTime(a.timeMs)), el('td', null, a.lastMs ? fmtAgo(a.lastMs) : ''),
          el('td', null, el('span', {class: `sev sev-${clean(a.severity)}`}, a.severity || '–')),
          el('td', null, a.agent ? link(['agent', a.agent], a.agent) : ''),
          el('td', null, a.session ? link(['session', a.session], a.session) : ''),
          el('td', null, a.kind, raw.status === 'resolved' ? el('span', {class: 'muted'}, ' (resolved)') : ''),
          el('td', {class: 'num'}, String(raw.count ?? 1)),
          el('td', null, a.message), el('td', null, btn));
      }));
      if (!items.length) list.append(el('tr', null, el('td', {colspan: 9, class: 'muted'}, 'no alert')));
    },
  };
}
