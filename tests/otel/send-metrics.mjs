// send-metrics.mjs - the official OpenTelemetry JS SDK (sdk-metrics and its OTLP/HTTP metric
// exporters, protobuf and JSON) exports an agent's metrics to a telltale collector: a delta
// counter of tool calls (integers), a cumulative up-down counter, a gauge, a histogram of token
// usage (GenAI semantic conventions) and an exponential histogram of operation durations.
// Driven by tests/integration/test_otlp.c, which reads the values back through the HTTP API.
//
// Settings from the environment (common.mjs): TT_OTLP_URL (http://HOST:PORT/v1/metrics),
// TT_OTLP_TOKEN, TT_OTLP_PROTOCOL (proto or json), TT_OTLP_SERVICE, TT_OTLP_SESSION (the
// attribute gen_ai.conversation.id of every point), TT_OTLP_EXPORTS (how many times the same
// collection is exported). Prints one line per export, "export CODE"; exits 0 when every
// export succeeded.
import { config, exportRepeatedly } from './common.mjs';
import { ValueType } from '@opentelemetry/api';
import { resourceFromAttributes } from '@opentelemetry/resources';
import {
  AggregationTemporality,
  AggregationType,
  InstrumentType,
  MeterProvider,
  MetricReader,
} from '@opentelemetry/sdk-metrics';
import { OTLPMetricExporter as ProtoExporter } from '@opentelemetry/exporter-metrics-otlp-proto';
import { OTLPMetricExporter as JsonExporter } from '@opentelemetry/exporter-metrics-otlp-http';

const { service, session } = config;

// A reader that only collects: the test exports one collection, several times. Counters are
// delta, the rest cumulative (the exporters' default).
class CollectOnly extends MetricReader {
  constructor() {
    super({
      aggregationTemporalitySelector: (type) =>
        type === InstrumentType.COUNTER
          ? AggregationTemporality.DELTA
          : AggregationTemporality.CUMULATIVE,
    });
  }
  async onForceFlush() {}
  async onShutdown() {}
}

const reader = new CollectOnly();
const provider = new MeterProvider({
  resource: resourceFromAttributes({ 'service.name': service }),
  readers: [reader],
  views: [
    {
      instrumentName: 'gen_ai.client.operation.duration',
      aggregation: { type: AggregationType.EXPONENTIAL_HISTOGRAM },
    },
  ],
});
const meter = provider.getMeter('telltale-otel-test', '1.0.0');
const conv = { 'gen_ai.conversation.id': session };

const calls = meter.createCounter('gen_ai.tool.calls', { unit: '{call}', valueType: ValueType.INT });
calls.add(3, { ...conv, 'gen_ai.tool.name': 'search' });
calls.add(2, { ...conv, 'gen_ai.tool.name': 'search' });

const depth = meter.createUpDownCounter('agent.queue.depth', { unit: '{item}' });
depth.add(7, conv);
depth.add(-2, conv);

const temperature = meter.createObservableGauge('agent.temperature');
temperature.addCallback((r) => r.observe(0.75, conv));

const usage = meter.createHistogram('gen_ai.client.token.usage', { unit: '{token}' });
for (const v of [10, 20, 30]) usage.record(v, { ...conv, 'gen_ai.token.type': 'output' });

const duration = meter.createHistogram('gen_ai.client.operation.duration', { unit: 's' });
duration.record(0.5, { ...conv, 'gen_ai.operation.name': 'chat' });
duration.record(1.5, { ...conv, 'gen_ai.operation.name': 'chat' });

const { resourceMetrics, errors } = await reader.collect();
if (errors.length) {
  console.error(`collect errors: ${errors}`);
  process.exit(1);
}
const failures = await exportRepeatedly(ProtoExporter, JsonExporter, resourceMetrics);
await provider.shutdown();
process.exit(failures ? 1 : 0);
