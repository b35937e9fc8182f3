"""An application using the official openai client, instrumented by opentelemetry-instrumentation-openai-v2
and exporting with the standard OTLP/HTTP exporter, configured only by OTEL_EXPORTER_OTLP_* variables.

    python tests/openai_app.py <base URL of an OpenAI-compatible server> <number of chat completions>
"""
import sys

import openai
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor


def main(base_url: str, count: int) -> None:
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    OpenAIInstrumentor().instrument(tracer_provider=provider)
    client = openai.OpenAI(base_url=base_url, api_key="sk-test", max_retries=0)
    for n in range(count):
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": f"question {n}"}])
    provider.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
