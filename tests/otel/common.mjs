// common.mjs - what send.mjs and send-logs.mjs share: their settings from the environment
// (TT_OTLP_URL, TT_OTLP_TOKEN, TT_OTLP_PROTOCOL proto or json, TT_OTLP_SERVICE, TT_OTLP_SESSION,
// TT_OTLP_EXPORTS), and the exports of the same items several times (a retried export), each
// printed as "export CODE".
import './node-version.mjs';

export const config = {
  url: process.env.TT_OTLP_URL,
  token: process.env.TT_OTLP_TOKEN || '',
  protocol: process.env.TT_OTLP_PROTOCOL || 'proto',
  service: process.env.TT_OTLP_SERVICE || 'otel-agent',
  session: process.env.TT_OTLP_SESSION || 'conv-1',
  exports: Number(process.env.TT_OTLP_EXPORTS || '1'),
};

// Export items with a new exporter of the chosen protocol, config.exports times; the number of
// exports that failed.
export async function exportRepeatedly(ProtoExporter, JsonExporter, items) {
  const Exporter = config.protocol === 'json' ? JsonExporter : ProtoExporter;
  const headers = config.token ? { Authorization: `Bearer ${config.token}` } : {};
  let failures = 0;
  for (let i = 0; i < config.exports; i++) {
    const exporter = new Exporter({ url: config.url, headers });
    const code = await new Promise((resolve) =>
      exporter.export(items, (r) => {
        if (r.error) console.error(`export error: ${r.error.message || r.error}`);
        resolve(r.code);
      }),
    );
    console.log(`export ${code}`);
    if (code !== 0) failures++;
    await exporter.shutdown();
  }
  return failures;
}
