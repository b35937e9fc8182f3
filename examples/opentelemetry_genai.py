"""An application that reports its model usage to usage_server through OpenTelemetry.

It records one span per model call with the generative-AI semantic conventions, the way an
instrumentation library (opentelemetry-instrumentation-openai-v2, OpenLLMetry, OpenLIT...)
does, and exports them with the standard OTLP/HTTP exporter. The exporter is configured by
the environment alone:

    pip install opentelemetry-sdk opentelemetry-exporter-otlp-proto-http
    export OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:8000
    export OTEL_EXPORTER_OTLP_HEADERS="Authorization=Bearer usk_..."
    python examples/opentelemetry_genai.py                       # three calls of a small agent
    python examples/opentelemetry_genai.py gpt-4o:1200:300:1000   # model:input:output[:cached] ...

Each call becomes one usage event (id <traceId>:<spanId>); the server prices it.
"""
import sys
import time

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

DEFAULT_CALLS = ["gpt-4o-mini:1200:150:1024", "gpt-4o:800:220", "gpt-4o-mini:300:40"]


def model_call(tracer, model: str, input_tokens: int, output_tokens: int, cached: int = 0) -> None:
    """One chat completion, as instrumentations record it (here without calling a provider)."""
    with tracer.start_as_current_span(f"chat {model}", kind=trace.SpanKind.CLIENT) as span:
        span.set_attribute("gen_ai.operation.name", "chat")
        span.set_attribute("gen_ai.provider.name", "openai")
        span.set_attribute("gen_ai.request.model", model)
        span.set_attribute("gen_ai.response.model", model)
        span.set_attribute("gen_ai.usage.input_tokens", input_tokens)  # cached tokens included
        span.set_attribute("gen_ai.usage.output_tokens", output_tokens)
        if cached:
            span.set_attribute("gen_ai.usage.cache_read.input_tokens", cached)
        time.sleep(0.01)  # stands for the provider's answer


def main(calls: list[str]) -> None:
    provider = TracerProvider(resource=Resource.create({"service.name": "example-agent"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))  # OTEL_EXPORTER_OTLP_* configure it
    tracer = provider.get_tracer("example")
    with tracer.start_as_current_span("invoke_agent example"):  # no usage of its own: not an event
        for call in calls:
            model, *numbers = call.split(":")
            model_call(tracer, model, *map(int, numbers))
    provider.shutdown()  # exports what is left, then stops
    print(f"exported {len(calls)} model calls")


if __name__ == "__main__":
    main(sys.argv[1:] or DEFAULT_CALLS)
