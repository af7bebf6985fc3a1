"""LiveKit's own OpenTelemetry spans (a session, each turn, each model call) sent to an OTLP
collector, when the standard ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``…_TRACES_ENDPOINT``) names
one; nothing is sent otherwise.

What the callers said stays out of the spans unless ``LIVEKIT_TELEMETRY_ALLOW_PII`` asks for
it: a collector is often another team's machine.
"""

from __future__ import annotations

import logging
import os

from livekit.agents import telemetry
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

logger = logging.getLogger("voice_agent")

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")


def export_spans() -> TracerProvider | None:
    """The provider sending LiveKit's spans, when a collector is configured; shut it down at
    exit, so the last spans go out."""
    endpoint = next((os.environ[v] for v in ENDPOINT_VARIABLES if os.environ.get(v)), None)
    if endpoint is None:
        return None
    provider = TracerProvider(resource=Resource.create({"service.name": "voice-agent"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    pii = None if os.environ.get("LIVEKIT_TELEMETRY_ALLOW_PII") else False
    telemetry.set_tracer_provider(provider, allow_pii=pii)
    logger.info("sending spans to %s", endpoint)
    return provider
