// history.js - the chosen time range and the series of it from the store (GET /api/v1/series,
// the rollups). The range (5m, 1h, 24h, 7d, or custom from/to) is kept in localStorage, so a
// reload shows the same history. A range that ends now is fetched again every REFRESH_MS: the
// charts continue live from the store (a new second shows once committed).

import {api} from './api.js';

export const RANGES = ['5m', '15m', '1h', '6h', '24h', '7d'];
const KEY = 'telltale.range';
const REFRESH_MS = 3000;

export function getRange() {
  try {
    const v = JSON.parse(localStorage.getItem(KEY) || 'null');
    if (v && (RANGES.includes(v.range) || (isFinite(v.from) && isFinite(v.to) && v.to > v.from))) return v;
  } catch {
    /* storage disabled or garbage: the default */
  }
  return {range: '15m'};
}

export function setRange(r) {
  try {
    localStorage.setItem(KEY, JSON.stringify(r));
  } catch {
    /* idem */
  }
  cache.clear();
}

export function rangeQuery(r = getRange()) {
  if (r.range) return `range=${encodeURIComponent(r.range)}`;
  return `from=${Math.floor(r.from * 1e6)}&to=${Math.floor(r.to * 1e6)}`; // ms -> ns
}

export function rangeLabel(r = getRange()) {
  if (r.range) return `last ${r.range}`;
  return `${new Date(r.from).toISOString().slice(0, 16).replace('T', ' ')} – ` +
    `${new Date(r.to).toISOString().slice(0, 16).replace('T', ' ')} UTC`;
}

export const endsNow = (r = getRange()) => !!r.range;

const cache = new Map(); // query -> {at, promise, value}

// The series of agent (or every agent when null) over the chosen range; cached for
// REFRESH_MS (a fixed range for ever).
export function series(agentName) {
  const q = `/api/v1/series?${rangeQuery()}${agentName ? `&agent=${encodeURIComponent(agentName)}` : ''}`;
  const c = cache.get(q);
  if (c && (!endsNow() || Date.now() - c.at < REFRESH_MS)) return c.promise;
  const entry = {at: Date.now(), promise: null};
  entry.promise = api(q).then((j) => {
    entry.value = j;
    return j;
  }).catch((e) => {
    cache.delete(q);
    throw e;
  });
  cache.set(q, entry);
  return entry.promise;
}

// The last value series have for a query, without waiting (undefined before the first).
export function seriesNow(agentName) {
  const q = `/api/v1/series?${rangeQuery()}${agentName ? `&agent=${encodeURIComponent(agentName)}` : ''}`;
  const c = cache.get(q);
  return c ? c.value : undefined;
}

// One agent's entry of a series answer.
export function agentSeries(j, name) {
  return j && Array.isArray(j.agents) ? j.agents.find((a) => a.agent === name) : undefined;
}

// The range control for the header: buttons per range, a custom from/to, the current label.
export function rangeControl(el, onChange) {
  const label = el('span', {id: 'range-label', class: 'muted'}, rangeLabel());
  const from = el('input', {type: 'datetime-local', id: 'range-from', 'aria-label': 'from (UTC)'});
  const to = el('input', {type: 'datetime-local', id: 'range-to', 'aria-label': 'to (UTC)'});
  const apply = el('button', {type: 'button', id: 'range-apply'}, 'apply');
  const buttons = RANGES.map((r) => {
    const b = el('button', {type: 'button', class: 'range-btn', dataset: {range: r}}, r);
    b.addEventListener('click', () => {
      setRange({range: r});
      sync();
      onChange();
    });
    return b;
  });
  apply.addEventListener('click', () => {
    const f = Date.parse(`${from.value}Z`), t = Date.parse(`${to.value}Z`);
    if (isFinite(f) && isFinite(t) && t > f) {
      setRange({from: f, to: t});
      sync();
      onChange();
    }
  });
  function sync() {
    const r = getRange();
    for (const b of buttons) b.classList.toggle('on', b.dataset.range === r.range);
    label.textContent = rangeLabel(r);
  }
  sync();
  return el('div', {class: 'range', id: 'range'}, ...buttons, from, to, apply, label);
}
