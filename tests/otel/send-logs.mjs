// send-logs.mjs - the official OpenTelemetry JS SDK exports log records to a telltale
// collector over OTLP/HTTP (driven by tests/integration/test_otlp.c). Settings as send.mjs's
// (common.mjs): TT_OTLP_URL (http://HOST:PORT/v1/logs), TT_OTLP_TOKEN, TT_OTLP_PROTOCOL (proto or
// json), TT_OTLP_SERVICE, TT_OTLP_SESSION, TT_OTLP_EXPORTS. Prints "export CODE" per export;
// exits 0 when every export succeeded.
import { config, exportRepeatedly } from './common.mjs';
import { SeverityNumber } from '@opentelemetry/api-logs';
import { resourceFromAttributes } from '@opentelemetry/resources';
import {
  InMemoryLogRecordExporter,
  LoggerProvider,
  SimpleLogRecordProcessor,
} from '@opentelemetry/sdk-logs';
import { OTLPLogExporter as ProtoExporter } from '@opentelemetry/exporter-logs-otlp-proto';
import { OTLPLogExporter as JsonExporter } from '@opentelemetry/exporter-logs-otlp-http';

const { service, session } = config;

const memory = new InMemoryLogRecordExporter();
const provider = new LoggerProvider({
  resource: resourceFromAttributes({ 'service.name': service }),
  processors: [new SimpleLogRecordProcessor({ exporter: memory })],
});
const logger = provider.getLogger('telltale-otel-test', '1.0.0');
const t0 = Date.now() - 5000;
logger.emit({
  timestamp: t0,
  severityNumber: SeverityNumber.INFO,
  severityText: 'INFO',
  body: 'planning the trip',
  attributes: { 'gen_ai.conversation.id': session, step: 1 },
});
logger.emit({
  timestamp: t0 + 10,
  severityNumber: SeverityNumber.ERROR,
  severityText: 'ERROR',
  body: 'weather service unreachable',
  attributes: { 'gen_ai.conversation.id': session, retries: 3, fatal: false, load: 0.75 },
});
await provider.forceFlush();
const records = memory.getFinishedLogRecords();
console.log(`records ${records.length}`);

const failures = await exportRepeatedly(ProtoExporter, JsonExporter, records);
await provider.shutdown();
process.exit(failures ? 1 : 0);
