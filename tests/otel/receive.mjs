// An OTLP/HTTP receiver for tests/integration/test_otlp_export.c: it decodes what telltale
// exports with the OpenTelemetry project's own protobuf definitions (the generated protobufjs
// code of @opentelemetry/otlp-transformer 0.52.1, installed as otlp-transformer-pb), not
// telltale's code, and writes one JSON line per request to OUT.
//
// node receive.mjs OUT PLAN
//   PLAN: comma-separated answers to successive requests, the last one repeating: a status
//   ("200", "400", "503"), optionally with a Retry-After in seconds ("503r1").
// Prints {"port": N} on stdout once listening on 127.0.0.1.
import { appendFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { gunzipSync } from 'node:zlib';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const root = require('otlp-transformer-pb/build/src/generated/root.js');
const v1 = root.opentelemetry.proto.collector;
const decoders = {
  '/v1/traces': v1.trace.v1.ExportTraceServiceRequest,
  '/v1/logs': v1.logs.v1.ExportLogsServiceRequest,
  '/v1/metrics': v1.metrics.v1.ExportMetricsServiceRequest,
};

const [out, planText = '200'] = process.argv.slice(2);
const plan = planText.split(',').map((p) => {
  const m = /^(\d+)(?:r(\d+))?$/.exec(p);
  return { status: Number(m[1]), retryAfter: m[2] };
});
let served = 0;

const hex = (b) => (b && b.length ? Buffer.from(b).toString('hex') : '');
const num = (v) => (v === null || v === undefined ? undefined : String(v));

function anyValue(v) {
  if (!v) return null;
  if (v.stringValue !== null && v.stringValue !== undefined && v.stringValue !== '')
    return v.stringValue;
  if (v.intValue !== null && v.intValue !== undefined && String(v.intValue) !== '0')
    return Number(v.intValue);
  if (v.doubleValue !== null && v.doubleValue !== undefined && v.doubleValue !== 0)
    return v.doubleValue;
  if (v.boolValue) return true;
  // A zero value: which field is set (protobufjs keeps the oneof's name).
  if (v.value === 'intValue') return 0;
  if (v.value === 'doubleValue') return 0;
  if (v.value === 'boolValue') return false;
  return '';
}

function attrs(list) {
  const o = {};
  for (const kv of list || []) o[kv.key] = anyValue(kv.value);
  return o;
}

// The signal by the path's end: an endpoint may have a prefix (OTEL_EXPORTER_OTLP_ENDPOINT's path).
function decode(url, body) {
  const path = Object.keys(decoders).find((k) => url.endsWith(k));
  const T = decoders[path];
  const msg = T.decode(body);
  const items = [];
  if (path === '/v1/traces') {
    for (const rs of msg.resourceSpans)
      for (const ss of rs.scopeSpans)
        for (const s of ss.spans)
          items.push({
            resource: attrs(rs.resource && rs.resource.attributes),
            scope: ss.scope && ss.scope.name,
            traceId: hex(s.traceId),
            spanId: hex(s.spanId),
            parentSpanId: hex(s.parentSpanId),
            name: s.name,
            kind: s.kind,
            start: num(s.startTimeUnixNano),
            end: num(s.endTimeUnixNano),
            attributes: attrs(s.attributes),
            events: (s.events || []).map((e) => ({
              name: e.name,
              time: num(e.timeUnixNano),
              attributes: attrs(e.attributes),
            })),
            status: s.status ? { code: s.status.code, message: s.status.message } : null,
          });
  } else if (path === '/v1/logs') {
    for (const rl of msg.resourceLogs)
      for (const sl of rl.scopeLogs)
        for (const l of sl.logRecords)
          items.push({
            resource: attrs(rl.resource && rl.resource.attributes),
            time: num(l.timeUnixNano),
            severity: l.severityNumber,
            body: anyValue(l.body),
            attributes: attrs(l.attributes),
          });
  } else {
    for (const rm of msg.resourceMetrics)
      for (const sm of rm.scopeMetrics)
        for (const m of sm.metrics)
          for (const p of (m.gauge && m.gauge.dataPoints) || [])
            items.push({
              resource: attrs(rm.resource && rm.resource.attributes),
              name: m.name,
              unit: m.unit,
              time: num(p.timeUnixNano),
              value: p.asDouble,
              attributes: attrs(p.attributes),
            });
  }
  return items;
}

const server = createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const answer = plan[Math.min(served, plan.length - 1)];
    served++;
    let status = answer.status;
    let body = Buffer.concat(chunks);
    const rec = {
      at: Date.now(),
      path: req.url,
      status,
      contentType: req.headers['content-type'],
      encoding: req.headers['content-encoding'] || '',
      authorization: req.headers['authorization'] || '',
      tenant: req.headers['x-tenant'] || '',
    };
    try {
      if (rec.encoding === 'gzip') body = gunzipSync(body);
      rec.items = decode(req.url, body);
    } catch (e) {
      rec.error = String(e);
      rec.status = status = 400;
    }
    appendFileSync(out, JSON.stringify(rec) + '\n');
    const headers = { 'Content-Type': 'application/x-protobuf' };
    if (answer.retryAfter !== undefined) headers['Retry-After'] = answer.retryAfter;
    res.writeHead(status, headers);
    res.end();
  });
});
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(JSON.stringify({ port: server.address().port }) + '\n');
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
