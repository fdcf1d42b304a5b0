// api.js - the collector's HTTP API with the operator token. The URL that `telltale serve` (or
// `make run`) prints carries the token in its fragment (#token=T), which never leaves the
// browser: it is taken from there at load, kept in sessionStorage for this tab, and removed
// from the address bar and the history. Otherwise it is asked for once (when a route answers
// 401) and kept the same way. A route that this collector
// does not have (404 "no such route") resolves to {unavailable: true} so a view can say "not
// available" instead of failing.

const KEY = 'telltale.operator_token';
let asking = null;

export function token() {
  try {
    return sessionStorage.getItem(KEY) || '';
  } catch {
    return '';
  }
}

export function setToken(t) {
  try {
    if (t) sessionStorage.setItem(KEY, t);
    else sessionStorage.removeItem(KEY);
  } catch {
    /* storage disabled: the token lives until the page is closed */
  }
}

// Take #token=T (optionally followed by &ROUTE, e.g. #token=T&/agent/x) out of the URL.
function takeFragmentToken() {
  const m = /^#token=([^&]*)(?:&(.*))?$/.exec(location.hash);
  if (!m) return;
  let t = '';
  try {
    t = decodeURIComponent(m[1]).trim();
  } catch {
    t = '';
  }
  if (t) setToken(t);
  history.replaceState(null, '', location.pathname + location.search + (m[2] ? `#${m[2]}` : ''));
}
takeFragmentToken();

export function authHeaders() {
  const t = token();
  return t ? {Authorization: `Bearer ${t}`} : {};
}

// Show the token dialog once (concurrent callers share it); resolves to true if a token was
// entered.
export function askToken(reason) {
  if (asking) return asking;
  const dlg = document.getElementById('token-dialog');
  const input = document.getElementById('token-input');
  const why = document.getElementById('token-reason');
  why.textContent = reason || 'The collector asks for the operator token.';
  input.value = '';
  asking = new Promise((resolve) => {
    const done = (ok) => {
      dlg.removeEventListener('close', onClose);
      asking = null;
      resolve(ok);
    };
    const onClose = () => {
      if (dlg.returnValue === 'ok' && input.value.trim()) {
        setToken(input.value.trim());
        done(true);
      } else {
        done(false);
      }
    };
    dlg.addEventListener('close', onClose);
    dlg.showModal();
    input.focus();
  });
  return asking;
}

export class HttpError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// fetch JSON with the token; on 401 ask for the token once and retry. Network failures throw
// a TypeError (the caller shows "unreachable").
export async function api(path, opts = {}) {
  for (let attempt = 0; ; attempt++) {
    const res = await fetch(path, {
      method: opts.method || 'GET',
      headers: Object.assign({Accept: 'application/json'}, authHeaders(),
        opts.body !== undefined ? {'Content-Type': 'application/json'} : {}),
      body: opts.body !== undefined ? JSON.stringify(opts.body) : undefined,
      cache: 'no-store',
    });
    if (res.status === 401 && attempt === 0) {
      if (await askToken(`${path} needs the operator token.`)) continue;
    }
    let body = null;
    try {
      body = await res.json();
    } catch {
      body = null;
    }
    if (res.status === 404 && (!body || /no such route/.test(body.error || ''))) {
      return {unavailable: true};
    }
    if (!res.ok) {
      throw new HttpError(res.status, (body && body.error) || `HTTP ${res.status}`);
    }
    return body || {};
  }
}
