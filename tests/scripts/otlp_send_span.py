"""Sends one span to an OTLP/gRPC collector and exits 0 once the collector accepted it.

Usage: otlp_send_span.py HOST:PORT SERVICE_NAME SPAN_NAME TRACE_ID_HEX

Used by tests/tests/deploy_otel.rs to show that the shipped collector config accepts an export.
Needs PyPI opentelemetry-proto and grpcio (scripts/test.sh installs them).
"""

import sys
import time

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as ts
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as ts_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2


def main() -> int:
    if len(sys.argv) != 5:
        print(__doc__, file=sys.stderr)
        return 2
    target, service, span_name, trace_id = sys.argv[1:]
    now = time.time_ns()
    span = trace_pb2.Span(
        trace_id=bytes.fromhex(trace_id),
        span_id=bytes.fromhex("00f067aa0ba902b7"),
        name=span_name,
        kind=trace_pb2.Span.SPAN_KIND_SERVER,
        start_time_unix_nano=now - 1_000_000,
        end_time_unix_nano=now,
    )
    resource = resource_pb2.Resource(
        attributes=[common_pb2.KeyValue(key="service.name", value=common_pb2.AnyValue(string_value=service))]
    )
    request = ts.ExportTraceServiceRequest(
        resource_spans=[trace_pb2.ResourceSpans(resource=resource, scope_spans=[trace_pb2.ScopeSpans(spans=[span])])]
    )
    with grpc.insecure_channel(target) as channel:
        # The collector may still be binding its port: wait for the channel, then export once.
        grpc.channel_ready_future(channel).result(timeout=20)
        response = ts_grpc.TraceServiceStub(channel).Export(request, timeout=10)
    rejected = response.partial_success.rejected_spans if response.HasField("partial_success") else 0
    if rejected:
        print(f"collector rejected {rejected} span(s): {response.partial_success.error_message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
