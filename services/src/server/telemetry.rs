//! Logs and traces: a stderr log, plus OTLP/gRPC span export when `telemetry.otlp_endpoint` is
//! set. Every RPC gets a span named after its method whose parent is the client's W3C
//! `traceparent`, so server spans join the caller's trace.

use opentelemetry::propagation::Extractor;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing::{info_span, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use super::config::Telemetry;

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("building the OTLP exporter for {endpoint}: {source}")]
    Exporter { endpoint: String, source: opentelemetry_otlp::ExporterBuildError },
    #[error("a global tracing subscriber is already installed: {0}")]
    AlreadyInstalled(String),
}

/// Keeps the exporter alive; `shutdown` flushes the spans still buffered.
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    pub async fn shutdown(self) {
        if let Some(p) = self.provider {
            // The SDK's flush blocks on the export, so it must not run on a runtime thread.
            let r = tokio::task::spawn_blocking(move || p.shutdown()).await;
            if let Ok(Err(e)) = r {
                eprintln!("flushing traces failed: {e}");
            }
        }
    }
}

/// Installs the global subscriber. Must run inside the Tokio runtime (the exporter's gRPC
/// channel lives there).
pub fn init(cfg: &Telemetry) -> Result<TelemetryGuard, TelemetryError> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&cfg.log_filter));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let provider = if cfg.otlp_endpoint.is_empty() {
        None
    } else {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(cfg.otlp_endpoint.clone())
            .build()
            .map_err(|source| TelemetryError::Exporter { endpoint: cfg.otlp_endpoint.clone(), source })?;
        Some(
            SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(Resource::builder().with_service_name(cfg.service_name.clone()).build())
                .build(),
        )
    };
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let otel = provider.as_ref().map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("hangar")));
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init()
        .map_err(|e| TelemetryError::AlreadyInstalled(e.to_string()))?;
    Ok(TelemetryGuard { provider })
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// The span of one RPC, named after its method (e.g. `hangar.v1.Inference/Generate`) and
/// parented on the caller's `traceparent` when it sent one.
pub fn rpc_span(req: &http::Request<()>) -> Span {
    let method = req.uri().path().trim_start_matches('/').to_string();
    let span = info_span!(
        "rpc",
        otel.name = %method,
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        rpc.system = "grpc",
        rpc.method = %method,
        rpc.grpc.status_code = tracing::field::Empty,
    );
    let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(req.headers())));
    // Fails only when no OpenTelemetry layer is installed, and then there is nothing to join.
    let _ = span.set_parent(parent);
    span
}

/// Records an RPC's outcome on its span (the current one, inside a handler).
pub fn record_outcome(span: &Span, code: tonic::Code) {
    span.record("rpc.grpc.status_code", code as i32);
    if code != tonic::Code::Ok {
        span.record("otel.status_code", "ERROR");
    }
}
