//! The gRPC server: `hangar.v1.Inference`, `grpc.health.v1`, server reflection (v1 and
//! v1alpha), and a Prometheus `/metrics` endpoint beside it.

pub mod auth;
pub mod config;
pub mod convert;
pub mod error;
pub mod metrics;
pub mod names;
pub mod plugins;
pub mod policies;
pub mod registry;
pub mod service;
pub mod stream;
pub mod telemetry;
pub mod worker;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Identity, ServerTlsConfig};

pub use config::Config;

/// Generated protobuf types and the service/client stubs.
pub mod pb {
    tonic::include_proto!("hangar.v1");
    /// The encoded descriptors of `proto/hangar/v1`, served by reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/hangar_descriptor.bin"));
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("binding {what} on {addr}: {source}")]
    Bind { what: &'static str, addr: String, source: std::io::Error },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("reflection: {0}")]
    Reflection(String),
    #[error("policy_dir: {0}")]
    Policy(#[from] hangar_policy::PolicyError),
}

/// A running server. Dropping it does not stop it; call [`Server::shutdown`].
pub struct Server {
    pub addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    pub core: Arc<service::Core>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
    grace: std::time::Duration,
}

impl Server {
    /// Stops taking new work (UNAVAILABLE) and lets in-flight calls finish, for at most
    /// `shutdown_grace_secs`: a client that never reads its GOAWAY cannot hold the server up.
    pub async fn shutdown(mut self) -> Result<(), tonic::transport::Error> {
        self.core.start_draining();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match tokio::time::timeout(self.grace, &mut self.task).await {
            Ok(r) => r.unwrap_or(Ok(())),
            Err(_) => {
                tracing::warn!(grace = ?self.grace, "connections still open after the grace period; closing them");
                self.task.abort();
                Ok(())
            }
        }
    }
}

async fn bind(what: &'static str, addr: &str) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr).await.map_err(|source| StartError::Bind { what, addr: addr.to_string(), source })
}

/// Binds the listeners and starts serving; returns once the sockets are bound. Preloaded
/// models load in the background (their health is NOT_SERVING until ready).
pub async fn start(config: Config) -> Result<Server, StartError> {
    let config = Arc::new(config);
    let listener = bind("the gRPC listener", &config.listen).await?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind { what: "the gRPC listener", addr: config.listen.clone(), source })?;

    let (health, health_service) = tonic_health::server::health_reporter();
    // Before anything can load a model: plugin families join the registry loads resolve in.
    let plugins = Arc::new(plugins::Plugins::load(&config.plugin_dir));
    let policies = policies::Policies::open(&config.policy_dir, plugins.rule_sources())?;
    let registry = registry::Registry::new(config.clone(), health.clone(), plugins, policies);
    let metrics = metrics::Metrics::new();
    let core = service::Core::new(registry.clone(), metrics.clone());
    health.set_serving::<pb::inference_server::InferenceServer<service::InferenceService>>().await;

    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection()
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| StartError::Reflection(e.to_string()))?;
    // grpcurl and many other tools still speak only v1alpha.
    let reflection_v1alpha = reflection()
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| StartError::Reflection(e.to_string()))?;

    let max_msg = config.limits.max_message_bytes;
    let inference = pb::inference_server::InferenceServer::new(service::InferenceService { core: core.clone() })
        .max_decoding_message_size(max_msg)
        .max_encoding_message_size(max_msg);
    let inference = tonic::service::interceptor::InterceptedService::new(inference, auth::BearerAuth::new(&config.auth_token));

    let mut builder = tonic::transport::Server::builder().trace_fn(telemetry::rpc_span);
    if !config.tls.cert.is_empty() || !config.tls.key.is_empty() {
        let read = |p: &str| std::fs::read(p).map_err(|e| StartError::Tls(format!("reading {p}: {e}")));
        let identity = Identity::from_pem(read(&config.tls.cert)?, read(&config.tls.key)?);
        builder = builder.tls_config(ServerTlsConfig::new().identity(identity)).map_err(|e| StartError::Tls(e.to_string()))?;
    }

    let metrics_addr = if config.metrics_listen.is_empty() {
        None
    } else {
        let ml = bind("the metrics listener", &config.metrics_listen).await?;
        let maddr = ml.local_addr().map_err(|source| StartError::Bind { what: "the metrics listener", addr: config.metrics_listen.clone(), source })?;
        let (m, r) = (metrics.clone(), registry.clone());
        tokio::spawn(async move {
            if let Err(e) = metrics::serve(ml, m, r, std::future::pending()).await {
                tracing::error!(error = %e, "the metrics endpoint stopped");
            }
        });
        Some(maddr)
    };

    let (stop, stopped) = oneshot::channel::<()>();
    let router = builder
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(inference);
    let task = tokio::spawn(router.serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
        let _ = stopped.await;
    }));

    registry.spawn_keep_alive();
    for name in config.preload.clone() {
        let r = registry.clone();
        tokio::spawn(async move {
            if let Err(e) = r.load(&name, None, &config::ModelOptions::default()).await {
                tracing::error!(model = %name, error = %e, "preloading failed");
            }
        });
    }
    tracing::info!(%addr, ?metrics_addr, "hangar serving");
    let grace = std::time::Duration::from_secs(config.shutdown_grace_secs);
    Ok(Server { addr, metrics_addr, core, stop: Some(stop), task, grace })
}
