// The OpenTelemetry JS SDK as a real sender: N SERVER spans over OTLP/HTTP (JSON) to jouled.
// Usage: node send_spans.js URL SERVICE_NAME MODEL COUNT INPUT_TOKENS OUTPUT_TOKENS [GO_FILE]
// With GO_FILE, waits until that file exists (so that jouled has claimed this process).
'use strict';
const { trace, SpanKind } = require('@opentelemetry/api');
const { Resource } = require('@opentelemetry/resources');
const { BasicTracerProvider, BatchSpanProcessor } = require('@opentelemetry/sdk-trace-base');
const { OTLPTraceExporter } = require('@opentelemetry/exporter-trace-otlp-http');
const fs = require('fs');

async function waitFor(path) {
  while (path && !fs.existsSync(path)) {
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

async function main() {
  const [url, service, model, count, input, output, go] = process.argv.slice(2);
  await waitFor(go);
  const exporter = new OTLPTraceExporter({ url });
  const provider = new BasicTracerProvider({
    resource: new Resource({ 'service.name': service }),
    spanProcessors: [new BatchSpanProcessor(exporter, { scheduledDelayMillis: 200 })],
  });
  const tracer = provider.getTracer('jouled-js-test');
  for (let i = 0; i < Number(count); i++) {
    const span = tracer.startSpan('POST /v1/completions', { kind: SpanKind.SERVER });
    span.setAttribute('gen_ai.request.model', model);
    span.setAttribute('gen_ai.usage.input_tokens', Number(input));
    span.setAttribute('gen_ai.usage.output_tokens', Number(output));
    span.setAttribute('http.route', '/v1/completions');
    const until = Date.now() + 20;
    while (Date.now() < until) { /* work */ }
    span.end();
  }
  await provider.forceFlush();
  await provider.shutdown();
  console.log(`sent ${count} spans`);
}

main().catch((err) => { console.error(err); process.exit(1); });
