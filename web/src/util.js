// util.js - small DOM and formatting helpers. Every string that came from an agent reaches the
// page through text() or el(..., text): textContent only, never innerHTML.

// ANSI escape sequences (CSI, OSC, two-byte ESC) and the other C0/C1 controls but tab and
// newline, removed for display.
const ANSI = /\x1b\[[0-?]*[ -\/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-_]|[\x00-\x08\x0b-\x1f\x7f\x80-\x9f]/g;

export function clean(s) {
  if (s === undefined || s === null) return '';
  return String(s).replace(ANSI, '');
}

// el('div', {class: 'x', title: t}, child, 'text', ...): children are nodes or strings (as text).
export function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  if (attrs) {
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k === 'dataset') Object.assign(e.dataset, v);
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? '' : String(v));
    }
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(clean(c)));
  }
  return e;
}

export function text(s) {
  return document.createTextNode(clean(s));
}

export function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
  return node;
}

// A figure the API knows: a finite number (or numeric text). null is "not known" (a response
// without token statistics, such as one fed by OTLP), never 0, which isFinite(null) would say.
export const known = (v) => v !== null && v !== undefined && v !== '' && isFinite(v);

export function fmtMs(ms) {
  if (!known(ms)) return '–';
  if (ms < 1) return `${(ms * 1000).toFixed(0)} µs`;
  if (ms < 1000) return `${ms.toFixed(ms < 10 ? 2 : 0)} ms`;
  return `${(ms / 1000).toFixed(2)} s`;
}

export function fmtNum(n, digits = 3) {
  if (!known(n)) return '–';
  return Number(n).toFixed(digits);
}

export function fmtAgo(unixMs) {
  if (!unixMs) return 'never';
  const s = Math.max(0, (Date.now() - unixMs) / 1000);
  if (s < 2) return 'just now';
  if (s < 90) return `${s.toFixed(0)} s ago`;
  if (s < 5400) return `${(s / 60).toFixed(0)} min ago`;
  return `${(s / 3600).toFixed(1)} h ago`;
}

export function fmtTime(unixMs) {
  if (!unixMs) return '–';
  const d = new Date(unixMs);
  return d.toISOString().slice(11, 23);
}

// Nanoseconds since the epoch (number or string) to milliseconds.
export function nsToMs(ns) {
  const n = Number(ns);
  return isFinite(n) ? n / 1e6 : 0;
}

// The event's time in ms: time_unix_ns, else the RFC 3339 time, else now.
export function eventMs(ev) {
  if (ev.time_unix_ns !== undefined) return nsToMs(ev.time_unix_ns);
  if (ev.time) {
    const t = Date.parse(ev.time);
    if (isFinite(t)) return t;
  }
  return Date.now();
}

// A hash route: #/session/ID -> ['session', 'ID'].
export function route() {
  const h = location.hash.replace(/^#\/?/, '');
  return h.split('/').map((p) => {
    try {
      return decodeURIComponent(p);
    } catch {
      return p;
    }
  });
}

export function link(hashParts, label, attrs) {
  const href = '#/' + hashParts.map(encodeURIComponent).join('/');
  return el('a', Object.assign({href}, attrs || {}), label);
}
