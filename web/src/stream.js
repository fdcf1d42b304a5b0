// stream.js - the live stream, GET /api/v1/stream (server-sent events) read with fetch() and a
// ReadableStream so that the Authorization header is sent (EventSource cannot send one).
// Parsed messages are queued; the app drains the queue once per animation frame, so the page
// does the work of one render per frame however many events arrive. After an error or the end
// of the stream (a collector restart) it reconnects with a backoff of 0.5 s doubling to 5 s.

import {askToken, authHeaders} from './api.js';

const MAX_QUEUE = 20000; // past this, the oldest queued messages are dropped (and counted)
const MAX_LINE = 1 << 20;

export class LiveStream {
  constructor(onBatch, onState) {
    this.onBatch = onBatch; // (messages[]) once per animation frame
    this.onState = onState; // ({state: 'connecting'|'live'|'unreachable'|'auth', detail, retryMs})
    this.queue = [];
    this.dropped = 0;
    this.scheduled = false;
    this.backoff = 500;
    this.abort = null;
    this.stopped = false;
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    if (this.abort) this.abort.abort();
  }

  restart() {
    if (this.abort) this.abort.abort();
  }

  push(msg) {
    if (this.queue.length >= MAX_QUEUE) {
      this.queue.shift();
      this.dropped++;
    }
    this.queue.push(msg);
    if (!this.scheduled) {
      this.scheduled = true;
      requestAnimationFrame(() => {
        this.scheduled = false;
        const batch = this.queue;
        this.queue = [];
        this.onBatch(batch);
      });
    }
  }

  async connect() {
    while (!this.stopped) {
      this.onState({state: 'connecting'});
      const ctl = new AbortController();
      this.abort = ctl;
      let ok = false;
      try {
        const res = await fetch('/api/v1/stream', {
          headers: Object.assign({Accept: 'text/event-stream'}, authHeaders()),
          cache: 'no-store',
          signal: ctl.signal,
        });
        if (res.status === 401) {
          this.onState({state: 'auth'});
          if (!(await askToken('The live stream needs the operator token.'))) {
            await new Promise((r) => setTimeout(r, 2000));
          }
          continue;
        }
        if (!res.ok || !res.body) {
          throw new Error(`the stream answered HTTP ${res.status}`);
        }
        this.backoff = 500;
        ok = true;
        this.onState({state: 'live'});
        await this.read(res.body.getReader());
        if (!this.stopped) this.onState({state: 'unreachable', detail: 'the stream ended', retryMs: 500});
      } catch (e) {
        if (this.stopped) return;
        if (ctl.signal.aborted && ok) {
          continue; // restart() after a token change: reconnect at once
        }
        const detail = e instanceof TypeError ? 'the collector does not answer' : String(e.message || e);
        this.onState({state: 'unreachable', detail, retryMs: this.backoff});
      }
      await new Promise((r) => setTimeout(r, ok ? 500 : this.backoff));
      if (!ok) this.backoff = Math.min(this.backoff * 2, 5000);
    }
  }

  async read(reader) {
    const dec = new TextDecoder();
    let buf = '';
    let event = '';
    let data = [];
    for (;;) {
      const {value, done} = await reader.read();
      if (done) return;
      buf += dec.decode(value, {stream: true});
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        let line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (line.endsWith('\r')) line = line.slice(0, -1);
        if (line === '') {
          if (data.length) this.dispatch(event, data.join('\n'));
          event = '';
          data = [];
        } else if (line.startsWith(':')) {
          // comment or keepalive
        } else {
          const colon = line.indexOf(':');
          const field = colon < 0 ? line : line.slice(0, colon);
          let val = colon < 0 ? '' : line.slice(colon + 1);
          if (val.startsWith(' ')) val = val.slice(1);
          if (field === 'data') data.push(val);
          else if (field === 'event') event = val;
        }
      }
      if (buf.length > MAX_LINE) buf = ''; // a line this long is not ours: skip it
    }
  }

  dispatch(event, payload) {
    let msg;
    try {
      msg = JSON.parse(payload);
    } catch {
      return; // not JSON: ignored
    }
    if (!msg || typeof msg !== 'object') return;
    if (event && !msg.kind) msg.kind = event;
    if (event === 'alert' && msg.kind !== 'alert') {
      msg.alert_kind = msg.kind;
      msg.kind = 'alert';
    }
    this.push(msg);
  }
}
