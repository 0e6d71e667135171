//! `hangar.v1.Inference`: each RPC checks its request, finds the model, and hands generation
//! to the model's worker. Every outcome is counted by method and code.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc::{self, UnboundedReceiver};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status, Streaming};
use tracing::{info_span, Instrument, Span};

use super::convert;
use super::error::ServiceError;
use super::metrics::Metrics;
use super::pb::{self, inference_server::Inference};
use super::registry::{LoadedModel, ModelState, Registry};
use super::worker::{CancelToken, GenEvent, GenJob};

/// What every RPC shares.
pub struct Core {
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    /// Generations running or queued, server-wide.
    permits: Arc<Semaphore>,
    /// Set when the server shuts down: new work is refused with UNAVAILABLE.
    draining: AtomicBool,
}

/// A generation handed to a worker: its events, its cancel flag and its slot in the
/// concurrency limit (held until the events end).
pub struct Started {
    pub model: Arc<LoadedModel>,
    pub events: UnboundedReceiver<GenEvent>,
    pub cancel: CancelToken,
    pub received: Instant,
    _permit: OwnedSemaphorePermit,
}

impl Core {
    pub fn new(registry: Arc<Registry>, metrics: Arc<Metrics>) -> Arc<Core> {
        let permits = Arc::new(Semaphore::new(registry.config().limits.max_concurrent_requests));
        Arc::new(Core { registry, metrics, permits, draining: AtomicBool::new(false) })
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    fn check_open(&self) -> Result<(), ServiceError> {
        if self.draining.load(Ordering::SeqCst) {
            return Err(ServiceError::ShuttingDown);
        }
        Ok(())
    }

    /// Checks `req`, then queues it on its model's worker.
    pub async fn start(&self, req: &pb::GenerateRequest, span: Span) -> Result<Started, ServiceError> {
        let received = Instant::now();
        self.check_open()?;
        let limit = self.registry.config().limits.max_concurrent_requests;
        let permit = self
            .permits
            .clone()
            .try_acquire_owned()
            .map_err(|_| ServiceError::Exhausted { what: "concurrent requests (limits.max_concurrent_requests)", limit })?;
        let model = self.registry.get_ready(&req.model).await?;
        // Name checks are cheap; screening the prompt and compiling a constraint are not.
        let logits_processors = self.registry.plugins().for_request(self.registry.config(), &req.model, &req.logits_processors)?;
        // Prompt rules run here, before tokenizing and before the request is queued.
        let (req, policy) = self.registry.policies().prepare(req, &model.facts).inspect_err(|e| self.metrics.policy_rejected(e))?;
        let prepared = {
            let _t = info_span!(parent: &span, "tokenize", model = %req.model).entered();
            convert::prepare(&req, &model.facts, &self.registry.config().limits)?
        };
        let (tx, events) = mpsc::unbounded_channel();
        let cancel = CancelToken::default();
        let job = GenJob {
            prompt: prepared.prompt,
            params: prepared.params,
            include_stop_string: prepared.include_stop_string,
            time_limit: prepared.time_limit,
            logits_processors,
            received,
            cancel: cancel.clone(),
            events: tx,
            span,
            policy,
        };
        model.with_worker(|w| w.submit(job))?;
        Ok(Started { model, events, cancel, received, _permit: permit })
    }

    /// Turns a generation's events into stream events for `request_id`, observing time to
    /// first token and decode speed. `None` once the generation has ended.
    pub async fn next_event(&self, g: &mut Started, request_id: &str, first: &mut bool) -> Option<Result<pb::StreamEvent, ServiceError>> {
        let ev = g.events.recv().await?;
        let event = match ev {
            GenEvent::Delta { text, tokens, logprobs } => {
                if *first && !tokens.is_empty() {
                    *first = false;
                    self.metrics.first_token(g.received.elapsed().as_secs_f64());
                }
                pb::stream_event::Event::Delta(pb::TokenDelta { text, token_ids: tokens, logprobs: convert::logprobs(&logprobs, &g.model.facts) })
            }
            GenEvent::Done(f) => {
                self.metrics.generation_done(&f);
                pb::stream_event::Event::Complete(convert::complete(&f))
            }
            GenEvent::Failed(e) => return Some(Err(e)),
        };
        Some(Ok(pb::StreamEvent { request_id: request_id.to_string(), event: Some(event) }))
    }

    /// Counts a finished request and marks its span.
    pub fn finish(&self, method: &str, code: Code) {
        self.metrics.request_done(method, code);
        super::telemetry::record_outcome(&Span::current(), code);
    }

    fn observe<T>(&self, method: &str, r: Result<T, ServiceError>) -> Result<Response<T>, Status> {
        self.finish(method, r.as_ref().map_or_else(|e| e.code(), |_| Code::Ok));
        r.map(Response::new).map_err(Status::from)
    }
}

/// The tonic service.
pub struct InferenceService {
    pub core: Arc<Core>,
}

type EventStream = ReceiverStream<Result<pb::StreamEvent, Status>>;

impl InferenceService {
    async fn generate_unary(&self, req: pb::GenerateRequest) -> Result<pb::GenerateResponse, ServiceError> {
        let mut g = self.core.start(&req, Span::current()).await?;
        let mut first = true;
        loop {
            let ev = g.events.recv().await.ok_or_else(|| ServiceError::Internal("generation ended without a result".into()))?;
            match ev {
                GenEvent::Delta { tokens, .. } => {
                    if first && !tokens.is_empty() {
                        first = false;
                        self.core.metrics.first_token(g.received.elapsed().as_secs_f64());
                    }
                }
                GenEvent::Done(f) => {
                    self.core.metrics.generation_done(&f);
                    return Ok(convert::response(*f, req.request_id.clone(), &g.model.facts));
                }
                GenEvent::Failed(e) => return Err(e),
            }
        }
    }
}

#[tonic::async_trait]
impl Inference for InferenceService {
    async fn load_model(&self, request: Request<pb::LoadModelRequest>) -> Result<Response<pb::ModelInfo>, Status> {
        let req = request.into_inner();
        let r = async {
            self.core.check_open()?;
            let m = self.core.registry.load(&req.name, req.path.as_deref(), &convert::load_options(req.options.as_ref())).await?;
            Ok(convert::model_info(&m))
        }
        .await;
        self.core.observe("LoadModel", r)
    }

    async fn unload_model(&self, request: Request<pb::UnloadModelRequest>) -> Result<Response<pb::UnloadModelResponse>, Status> {
        let req = request.into_inner();
        let r = self.core.registry.unload(&req.name, req.force).await;
        let r = r.map(|n| pb::UnloadModelResponse { name: req.name.clone(), cancelled_requests: n as u32 });
        self.core.observe("UnloadModel", r)
    }

    async fn list_models(&self, _request: Request<pb::ListModelsRequest>) -> Result<Response<pb::ListModelsResponse>, Status> {
        let models = self
            .core
            .registry
            .list()
            .into_iter()
            .map(|(name, state)| {
                let mut s = pb::ModelStatus { name, ..Default::default() };
                let loaded = match state {
                    ModelState::Available => {
                        s.state = pb::ModelState::Available as i32;
                        None
                    }
                    ModelState::Loading => {
                        s.state = pb::ModelState::Loading as i32;
                        None
                    }
                    ModelState::Failed(why) => {
                        s.state = pb::ModelState::Failed as i32;
                        s.error = why;
                        None
                    }
                    ModelState::Ready(m) => {
                        s.state = pb::ModelState::Ready as i32;
                        Some(m)
                    }
                    ModelState::Unloading(m) => {
                        s.state = pb::ModelState::Unloading as i32;
                        Some(m)
                    }
                };
                if let Some(m) = loaded {
                    s.memory_bytes = m.facts.file_bytes;
                    s.kv_policy = m.facts.kv_policy();
                    s.kv_bytes_per_token = m.facts.kv_bytes_per_token as u64;
                    s.backend = m.facts.backend.clone();
                    s.in_flight = m.in_flight() as u32;
                    let b = m.batch_counts();
                    (s.decode_steps, s.decode_tokens, s.max_decode_batch) = (b.decode_steps, b.decode_rows, b.max_batch as u32);
                    (s.prefill_tokens, s.reused_prefill_tokens) = (b.prefill_tokens, b.reused_tokens);
                    (s.kv_caches, s.kv_bytes_in_use) = (b.kv_caches as u32, b.kv_bytes);
                    s.family = m.facts.family.clone();
                    s.plugin = m.facts.plugin.clone();
                }
                s
            })
            .collect();
        self.core.observe("ListModels", Ok(pb::ListModelsResponse { models }))
    }

    async fn get_model_info(&self, request: Request<pb::GetModelInfoRequest>) -> Result<Response<pb::ModelInfo>, Status> {
        let name = request.into_inner().name;
        let r = self.core.registry.get_ready(&name).await.map(|m| convert::model_info(&m));
        self.core.observe("GetModelInfo", r)
    }

    async fn generate(&self, request: Request<pb::GenerateRequest>) -> Result<Response<pb::GenerateResponse>, Status> {
        let r = self.generate_unary(request.into_inner()).await;
        self.core.observe("Generate", r)
    }

    type GenerateStreamStream = EventStream;

    async fn generate_stream(&self, request: Request<pb::GenerateRequest>) -> Result<Response<EventStream>, Status> {
        let req = request.into_inner();
        let span = Span::current();
        let mut g = match self.core.start(&req, span.clone()).await {
            Ok(g) => g,
            Err(e) => return self.core.observe("GenerateStream", Err(e)),
        };
        let (tx, rx) = mpsc::channel(64);
        let core = self.core.clone();
        tokio::spawn(
            async move {
                let mut first = true;
                let mut code = Code::Ok;
                while let Some(ev) = core.next_event(&mut g, &req.request_id, &mut first).await {
                    let ev = ev.map_err(|e| {
                        code = e.code();
                        Status::from(e)
                    });
                    // A failed send means the client is gone; dropping `g` cancels the work.
                    if tx.send(ev).await.is_err() {
                        code = Code::Cancelled;
                        break;
                    }
                }
                core.finish("GenerateStream", code);
            }
            .instrument(span),
        );
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    type StreamStream = EventStream;

    async fn stream(&self, request: Request<Streaming<pb::StreamRequest>>) -> Result<Response<EventStream>, Status> {
        if let Err(e) = self.core.check_open() {
            return self.core.observe("Stream", Err(e));
        }
        let inbound = request.into_inner();
        let limit = self.core.registry.config().limits.max_requests_per_stream;
        let (tx, rx) = mpsc::channel(64);
        let span = Span::current();
        tokio::spawn(super::stream::run(self.core.clone(), inbound, tx, limit, span.clone()).instrument(span));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn tokenize(&self, request: Request<pb::TokenizeRequest>) -> Result<Response<pb::TokenizeResponse>, Status> {
        let req = request.into_inner();
        let r = async {
            let m = self.core.registry.get_ready(&req.model).await?;
            let _t = info_span!("tokenize", model = %req.model).entered();
            let t = &m.facts.tokenizer;
            let ids = t.encode(&req.text, req.add_special, req.parse_special).map_err(|e| ServiceError::invalid("text", e.to_string()))?;
            let pieces = ids.iter().map(|&id| String::from_utf8_lossy(t.token_bytes(id).unwrap_or_default()).into_owned()).collect();
            Ok(pb::TokenizeResponse { token_ids: ids, pieces })
        }
        .await;
        self.core.observe("Tokenize", r)
    }

    async fn detokenize(&self, request: Request<pb::DetokenizeRequest>) -> Result<Response<pb::DetokenizeResponse>, Status> {
        let req = request.into_inner();
        let r = async {
            let m = self.core.registry.get_ready(&req.model).await?;
            let n = m.facts.tokenizer.n_vocab();
            if let Some(&id) = req.token_ids.iter().find(|&&id| id as usize >= n) {
                return Err(ServiceError::invalid("token_ids", format!("token id {id} is not in the vocabulary of {n} tokens")));
            }
            Ok(pb::DetokenizeResponse { text: m.facts.tokenizer.decode(&req.token_ids, req.skip_special) })
        }
        .await;
        self.core.observe("Detokenize", r)
    }

    async fn apply_chat_template(
        &self,
        request: Request<pb::ApplyChatTemplateRequest>,
    ) -> Result<Response<pb::ApplyChatTemplateResponse>, Status> {
        let req = request.into_inner();
        let r = async {
            let m = self.core.registry.get_ready(&req.model).await?;
            if req.messages.is_empty() {
                return Err(ServiceError::invalid("messages", "is empty; send at least one message"));
            }
            let chat = m.facts.chat.as_ref().ok_or_else(|| {
                ServiceError::NotReady { name: req.model.clone(), state: "without a chat template", hint: "send a raw prompt instead".into() }
            })?;
            let messages = convert::chat_messages(&req.messages);
            let text = chat.render(&messages, req.add_generation_prompt).map_err(|e| ServiceError::invalid("messages", e.to_string()))?;
            let token_ids = if req.tokenize {
                hangar_engine::model::encode_rendered(&m.facts.tokenizer, &text).map_err(|e| ServiceError::invalid("messages", e.to_string()))?
            } else {
                Vec::new()
            };
            Ok(pb::ApplyChatTemplateResponse { text, token_ids })
        }
        .await;
        self.core.observe("ApplyChatTemplate", r)
    }

    async fn get_server_info(&self, _request: Request<pb::GetServerInfoRequest>) -> Result<Response<pb::ServerInfo>, Status> {
        self.core.observe("GetServerInfo", Ok(self.core.registry.plugins().server_info()))
    }
}
