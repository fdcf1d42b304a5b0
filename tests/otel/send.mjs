// send.mjs - the official OpenTelemetry JS SDK exports GenAI spans (semantic conventions 1.41)
// to a telltale collector over OTLP/HTTP, as an instrumented agent would. Driven by
// tests/integration/test_otlp.c, which checks through the HTTP API what the collector made of
// them.
//
// Settings from the environment (common.mjs): TT_OTLP_URL (http://HOST:PORT/v1/traces),
// TT_OTLP_TOKEN (the ingest token, or empty for none), TT_OTLP_PROTOCOL (proto or json),
// TT_OTLP_SERVICE (service.name), TT_OTLP_SESSION (gen_ai.conversation.id), TT_OTLP_EXPORTS
// (how many times the same spans are exported: a retried export). Prints one line per span, "span NAME TRACE_ID SPAN_ID", and one
// per export, "export CODE"; exits 0 when every export succeeded.
import { config, exportRepeatedly } from './common.mjs';
import { SpanStatusCode, context, trace } from '@opentelemetry/api';
import { resourceFromAttributes } from '@opentelemetry/resources';
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  SimpleSpanProcessor,
} from '@opentelemetry/sdk-trace-base';
import { OTLPTraceExporter as ProtoExporter } from '@opentelemetry/exporter-trace-otlp-proto';
import { OTLPTraceExporter as JsonExporter } from '@opentelemetry/exporter-trace-otlp-http';

const { service, session } = config;

const memory = new InMemorySpanExporter();
const provider = new BasicTracerProvider({
  resource: resourceFromAttributes({ 'service.name': service }),
  spanProcessors: [new SimpleSpanProcessor(memory)],
});
const tracer = provider.getTracer('telltale-otel-test', '1.0.0');

// Fixed times (ms since the epoch, now-ish) so that latencies are known exactly.
const t0 = Date.now() - 10000;
const agent = tracer.startSpan('invoke_agent planner', {
  startTime: t0,
  attributes: {
    'gen_ai.operation.name': 'invoke_agent',
    'gen_ai.agent.name': 'planner',
    'gen_ai.conversation.id': session,
  },
});
const inAgent = trace.setSpan(context.active(), agent);
const chat = tracer.startSpan(
  'chat gpt-4o-mini',
  {
    startTime: t0 + 100,
    attributes: {
      'gen_ai.operation.name': 'chat',
      'gen_ai.provider.name': 'openai',
      'gen_ai.request.model': 'gpt-4o-mini',
      'gen_ai.usage.input_tokens': 120,
      'gen_ai.usage.output_tokens': 42,
      'gen_ai.conversation.id': session,
    },
  },
  inAgent,
);
chat.end(t0 + 100 + 750);
const tool = tracer.startSpan(
  'execute_tool get_weather',
  {
    startTime: t0 + 900,
    attributes: {
      'gen_ai.operation.name': 'execute_tool',
      'gen_ai.tool.name': 'get_weather',
      'gen_ai.conversation.id': session,
    },
  },
  inAgent,
);
tool.end(t0 + 900 + 250);
const failed = tracer.startSpan(
  'execute_tool search',
  {
    startTime: t0 + 1200,
    attributes: {
      'gen_ai.operation.name': 'execute_tool',
      'gen_ai.tool.name': 'search',
      'gen_ai.conversation.id': session,
      'error.type': 'timeout',
    },
  },
  inAgent,
);
failed.setStatus({ code: SpanStatusCode.ERROR, message: 'search timed out' });
failed.end(t0 + 1200 + 300);
agent.end(t0 + 2000);
await provider.forceFlush();

const spans = memory.getFinishedSpans();
for (const s of spans) {
  const c = s.spanContext();
  console.log(`span ${s.name.replace(/ /g, '_')} ${c.traceId} ${c.spanId}`);
}

const failures = await exportRepeatedly(ProtoExporter, JsonExporter, spans);
await provider.shutdown();
process.exit(failures ? 1 : 0);
