//! Prometheus metrics and the `/metrics` endpoint that serves them.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry as PromRegistry;

use super::error::ServiceError;
use super::registry::Registry;
use super::worker::Finished;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    pub method: String,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    pub model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    pub set: String,
    pub rule: String,
    pub action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConstraintLabels {
    pub kind: String,
}

pub struct Metrics {
    prom: PromRegistry,
    requests: Family<RpcLabels, Counter>,
    ttft: Histogram,
    tokens_per_s: Histogram,
    generated: Counter,
    queue_depth: Family<ModelLabels, Gauge>,
    loaded: Gauge,
    policy_hits: Family<PolicyLabels, Counter>,
    constrained: Family<ConstraintLabels, Counter>,
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let mut prom = PromRegistry::with_prefix("hangar");
        let requests = Family::<RpcLabels, Counter>::default();
        prom.register("requests", "RPCs finished, by method and gRPC status code", requests.clone());
        let ttft = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        prom.register("time_to_first_token_seconds", "From receiving a generation to its first token", ttft.clone());
        let tokens_per_s = Histogram::new(exponential_buckets(1.0, 2.0, 14));
        prom.register("decode_tokens_per_second", "Decode speed of each finished generation", tokens_per_s.clone());
        let generated = Counter::default();
        prom.register("generated_tokens", "Tokens generated over all requests", generated.clone());
        let queue_depth = Family::<ModelLabels, Gauge>::default();
        prom.register("queue_depth", "Generations queued or running, per loaded model", queue_depth.clone());
        let loaded = Gauge::default();
        prom.register("loaded_models", "Models loaded (ready or draining)", loaded.clone());
        let policy_hits = Family::<PolicyLabels, Counter>::default();
        prom.register("policy_hits", "Policy rule matches on prompts and outputs, by set, rule and action", policy_hits.clone());
        let constrained = Family::<ConstraintLabels, Counter>::default();
        prom.register("constrained_requests", "Finished generations with an output constraint, by kind", constrained.clone());
        Arc::new(Metrics { prom, requests, ttft, tokens_per_s, generated, queue_depth, loaded, policy_hits, constrained })
    }

    pub fn request_done(&self, method: &str, code: tonic::Code) {
        let labels = RpcLabels { method: method.to_string(), code: super::error::code_label(code).to_string() };
        self.requests.get_or_create(&labels).inc();
    }

    pub fn first_token(&self, seconds: f64) {
        self.ttft.observe(seconds);
    }

    pub fn generation_done(&self, f: &Finished) {
        let (tokens, decode_ms) = (f.tokens.len(), f.decode_ms);
        self.generated.inc_by(tokens as u64);
        if tokens > 0 && decode_ms > 0.0 {
            self.tokens_per_s.observe(tokens as f64 / (decode_ms / 1e3));
        }
        for h in &f.policy_hits {
            self.policy_hit(&h.set, &h.rule, h.action.as_str());
        }
        if let Some(kind) = f.constraint {
            self.constrained.get_or_create(&ConstraintLabels { kind: kind.into() }).inc();
        }
    }

    /// Counts a prompt that a policy rule refused (other failures are not policy hits).
    pub fn policy_rejected(&self, e: &ServiceError) {
        if let ServiceError::PromptRejected { set, rule, action } = e {
            self.policy_hit(set, rule, action);
        }
    }

    fn policy_hit(&self, set: &str, rule: &str, action: &str) {
        self.policy_hits.get_or_create(&PolicyLabels { set: set.into(), rule: rule.into(), action: action.into() }).inc();
    }

    /// The text exposition, with the gauges read from the registry now.
    pub fn render(&self, registry: &Registry) -> String {
        let loaded = registry.loaded();
        self.queue_depth.clear();
        for (model, depth) in &loaded {
            self.queue_depth.get_or_create(&ModelLabels { model: model.clone() }).set(*depth as i64);
        }
        self.loaded.set(loaded.len() as i64);
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.prom) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        out
    }
}

/// Serves `GET /metrics` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    registry: Arc<Registry>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let (m, r) = (metrics.clone(), registry.clone());
            async move {
                ([(http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], m.render(&r))
            }
        }),
    );
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}
