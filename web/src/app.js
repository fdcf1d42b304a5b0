// app.js - the dashboard's state and main loop. The live stream feeds apply() once per
// animation frame with every message that arrived since the last frame; the current view is
// redrawn at most every RENDER_MS, so a burst of 1,000 events/s costs a few cheap state
// updates per event and four renders a second.

import {api, setToken} from './api.js';
import {rangeControl} from './history.js';
import {LiveStream} from './stream.js';
import {clean, el, eventMs, known, route} from './util.js';
import * as views from './views.js';

const RENDER_MS = 250;
const POINTS = 600; // per-agent chart points kept
const FEED = 100; // events kept for the live feed
const SILENT_MS = 10000; // no event for this long: the agent is "silent"

export const state = {
  agents: new Map(), // name -> agent (see agent())
  sessions: new Map(), // id -> {id, agent, lastMs, events, halted, haltReason}
  alerts: [], // newest first: {id, agent, session, kind, message, timeMs, acked}
  alertIds: new Set(),
  feed: [], // the last FEED events, newest last
  total: 0, // events received on the live stream
  conn: {state: 'connecting'},
  stream: null,
  SILENT_MS,
};

export function agent(name) {
  let a = state.agents.get(name);
  if (!a) {
    a = {
      name,
      lastMs: 0,
      buckets: new Map(), // second -> events received
      conf: [], // [tSec, confidence in 0..1]
      lat: [], // [tSec, latency ms]
      alertTimes: [], // tSec
      lastAlert: null,
      haltedMs: 0, // when a halt verdict arrived (0: none since the last response began)
      info: null, // from /api/v1/agents
      received: 0,
    };
    state.agents.set(name, a);
  }
  return a;
}

// halted: the agent's last decision was a halt and it has sent nothing for HALT_QUIET_MS since
// (it stopped); live: an event in the last SILENT_MS; silent otherwise.
const HALT_QUIET_MS = 2000;

export function agentStatus(a) {
  if (a.info && (a.info.halted || a.info.status === 'halted')) return 'halted';
  if (a.haltedMs && Date.now() - a.lastMs > HALT_QUIET_MS) return 'halted';
  const last = Math.max(a.lastMs, a.info ? Number(a.info.last_seen_unix_ns || 0) / 1e6 : 0);
  return Date.now() - last < SILENT_MS ? 'live' : 'silent';
}

export function eventRate(a) {
  const now = Math.floor(Date.now() / 1000);
  let n = 0;
  for (let s = now - 5; s < now; s++) n += a.buckets.get(s) || 0;
  return n / 5;
}

function pushPoint(arr, t, v) {
  arr.push([t, v]);
  if (arr.length > POINTS) arr.splice(0, arr.length - POINTS);
}

// The confidence an event tells (0..1), or undefined.
export function confidenceOf(ev) {
  const s = ev.summary && typeof ev.summary === 'object' ? ev.summary : ev;
  if (ev.kind === 'response_end') {
    if (known(s.confidence)) return Number(s.confidence);
    if (known(s.mean_logprob)) return Math.exp(Number(s.mean_logprob));
    if (known(s.perplexity) && s.perplexity > 0) return 1 / Number(s.perplexity);
  }
  if (ev.kind === 'tokens') {
    const lp = tokenLogprobs(ev);
    if (lp.length) return lp.reduce((x, y) => x + Math.exp(y), 0) / lp.length;
  }
  return undefined;
}

function tokenLogprobs(ev) {
  if (Array.isArray(ev.logprobs)) return ev.logprobs.filter(known).map(Number);
  if (Array.isArray(ev.tokens)) {
    return ev.tokens
      .map((t) => (t && typeof t === 'object' ? t.logprob ?? t.chosen_logprob : undefined))
      .filter(known)
      .map(Number);
  }
  return [];
}

export function alertFrom(m) {
  const id = m.id ?? m.alert_id ?? `${m.agent || ''}:${m.time_unix_ns || m.time || Math.random()}`;
  const timeMs = m.time_unix_ns !== undefined ? Number(m.time_unix_ns) / 1e6 :
    m.time ? Date.parse(m.time) : Date.now();
  return {
    id: String(id),
    agent: m.agent || '',
    session: m.session || '',
    kind: [m.detector || m.rule || m.alert_kind, m.type].filter(Boolean).join(' ') || 'alert',
    severity: m.severity || '',
    message: m.message || m.reason || m.summary || m.metric || '',
    timeMs: isFinite(timeMs) ? timeMs : Date.now(),
    // An incident's latest repeat (its updates keep the id): markers follow it.
    lastMs: m.last_unix_ns !== undefined ? Number(m.last_unix_ns) / 1e6 : undefined,
    acked: !!(m.state === 'acked' || m.acked || m.acknowledged || m.acked_unix_ns),
    raw: m,
  };
}

function markAlert(agentName, ms) {
  const a = agent(agentName);
  a.alertTimes.push(ms / 1000);
  if (a.alertTimes.length > 100) a.alertTimes.shift();
}

export function addAlert(al) {
  if (state.alertIds.has(al.id)) {
    // The same incident again (updated, resolved, reopened): keep one row, mark its repeat.
    const old = state.alerts.find((x) => x.id === al.id);
    if (old) {
      old.acked = old.acked || al.acked;
      if (al.agent && al.lastMs && al.lastMs > (old.lastMs || old.timeMs)) {
        markAlert(al.agent, al.lastMs);
        old.lastMs = al.lastMs;
        old.message = al.message || old.message;
      }
    }
    return;
  }
  state.alertIds.add(al.id);
  state.alerts.unshift(al);
  if (state.alerts.length > 500) state.alerts.length = 500;
  if (al.agent) {
    const a = agent(al.agent);
    markAlert(al.agent, al.timeMs);
    if (al.lastMs && al.lastMs > al.timeMs) markAlert(al.agent, al.lastMs);
    if (!a.lastAlert || a.lastAlert.timeMs <= al.timeMs) a.lastAlert = al;
  }
}

function session(id, agentName) {
  let s = state.sessions.get(id);
  if (!s) {
    s = {id, agent: agentName, lastMs: 0, events: 0, halted: false, haltReason: ''};
    state.sessions.set(id, s);
  }
  return s;
}

function isHaltVerdict(ev) {
  const v = String(ev.verdict ?? '').toLowerCase();
  return v === 'halt' || v === '2' || ev.verdict === 2;
}

// Apply one batch of stream messages to the state.
function apply(batch) {
  const nowSec = Math.floor(Date.now() / 1000);
  for (const m of batch) {
    if (m.kind === 'alert') {
      addAlert(alertFrom(m));
      continue;
    }
    state.total++;
    const name = typeof m.agent === 'string' ? m.agent : '';
    const a = agent(name);
    const t = eventMs(m);
    a.lastMs = Math.max(a.lastMs, Date.now());
    a.received++;
    a.buckets.set(nowSec, (a.buckets.get(nowSec) || 0) + 1);
    if (a.buckets.size > 20) {
      for (const k of a.buckets.keys()) if (k < nowSec - 10) a.buckets.delete(k);
    }
    if (m.kind === 'response_begin') a.haltedMs = 0; // generating again
    if (m.session) {
      const s = session(m.session, name);
      s.lastMs = t;
      s.events++;
      if (m.kind === 'guard' && isHaltVerdict(m)) {
        s.halted = true;
        s.haltReason = clean(m.reason || 'halt');
        a.haltedMs = Date.now();
      } else if (m.kind === 'response_end' && m.verdict !== undefined && !isHaltVerdict(m)) {
        s.halted = false; // a response of the session got through: resumed (or never halted)
      }
    }
    const c = confidenceOf(m);
    if (c !== undefined) pushPoint(a.conf, t / 1000, c);
    if (m.kind === 'step_end' && m.duration_ns !== undefined) {
      pushPoint(a.lat, t / 1000, Number(m.duration_ns) / 1e6);
    }
    state.feed.push(m);
  }
  if (state.feed.length > FEED) state.feed.splice(0, state.feed.length - FEED);
  dirty = true;
  schedule();
}

// --- rendering -----------------------------------------------------------------------------

let dirty = true;
let lastRender = 0;
let timer = null;
let current = null; // the mounted view: {key, update(), destroy()}

function schedule() {
  if (timer) return;
  const wait = Math.max(0, RENDER_MS - (performance.now() - lastRender));
  timer = setTimeout(() => {
    timer = null;
    requestAnimationFrame(render);
  }, wait);
}

function render() {
  lastRender = performance.now();
  const key = location.hash || '#/';
  if (!current || current.key !== key) {
    if (current) current.destroy();
    current = views.mount(route(), document.getElementById('main'));
    current.key = key;
  }
  if (dirty || current.always) {
    dirty = false;
    current.update();
  }
  views.header();
}

export function invalidate() {
  dirty = true;
  schedule();
}

// --- connection banner ---------------------------------------------------------------------

function onConn(s) {
  state.conn = s;
  const banner = document.getElementById('banner');
  const badge = document.getElementById('conn');
  badge.className = `conn conn-${s.state}`;
  if (s.state === 'live') {
    badge.textContent = 'live';
    banner.hidden = true;
    refreshAgents();
    refreshAlerts();
  } else if (s.state === 'connecting') {
    badge.textContent = 'connecting…';
  } else if (s.state === 'auth') {
    badge.textContent = 'token needed';
  } else {
    badge.textContent = 'unreachable';
    banner.hidden = false;
    banner.textContent = `The collector at ${location.host} is unreachable (${s.detail}). ` +
      `Retrying every ${Math.round((s.retryMs || 500) / 100) / 10} s; the data below may be stale.`;
  }
}

// --- periodic REST refresh -----------------------------------------------------------------

export async function refreshAgents() {
  try {
    const j = await api('/api/v1/agents');
    if (j.unavailable || !Array.isArray(j.agents)) return;
    for (const info of j.agents) {
      if (info && typeof info.name === 'string') agent(info.name).info = info;
    }
    invalidate();
  } catch {
    /* the banner says it when the collector is away */
  }
}

export async function refreshAlerts() {
  try {
    const j = await api('/api/v1/alerts');
    if (j.unavailable) {
      state.alertsUnavailable = true;
      return;
    }
    state.alertsUnavailable = false;
    const list = Array.isArray(j.alerts) ? j.alerts : Array.isArray(j) ? j : [];
    for (const m of list.slice().reverse()) addAlert(alertFrom(m));
    invalidate();
  } catch {
    /* idem */
  }
}

function main() {
  window.addEventListener('hashchange', () => {
    dirty = true;
    render();
  });
  document.getElementById('token-clear').addEventListener('click', () => {
    setToken('');
    if (state.stream) state.stream.restart();
  });
  document.getElementById('range-box').append(rangeControl(el, () => {
    dirty = true;
    render();
  }));
  state.stream = new LiveStream(apply, onConn);
  state.stream.start();
  setInterval(refreshAgents, 5000);
  setInterval(refreshAlerts, 10000);
  setInterval(invalidate, 1000); // ages and rates move without events
  render();
}

main();
