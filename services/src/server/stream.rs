//! The bidirectional `Stream`: many generations over one call, each tagged with the client's
//! `request_id` and cancellable by it. A request's failure is an event on the stream, never the
//! end of the stream.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc::Sender;
use tonic::{Code, Status, Streaming};
use tracing::{Instrument, Span};

use super::error::ServiceError;
use super::pb::{self, stream_event::Event, stream_request::Kind};
use super::service::{Core, Started};
use super::worker::CancelToken;

type Out = Sender<Result<pb::StreamEvent, Status>>;
type Live = Arc<Mutex<HashMap<String, CancelToken>>>;

fn error_event(request_id: &str, e: &ServiceError) -> pb::StreamEvent {
    pb::StreamEvent {
        request_id: request_id.to_string(),
        event: Some(Event::Error(pb::RequestError { code: e.code() as i32, message: e.to_string() })),
    }
}

fn cancel_all(live: &Live) {
    if let Ok(map) = live.lock() {
        map.values().for_each(CancelToken::cancel);
    }
}

/// Reads the client's messages until it half-closes or goes away. Events keep flowing until
/// every live request has finished; the call ends when the last sender is dropped.
pub async fn run(core: Arc<Core>, mut inbound: Streaming<pb::StreamRequest>, out: Out, limit: usize, span: Span) {
    let live: Live = Arc::default();
    loop {
        let msg = tokio::select! {
            m = inbound.message() => m,
            _ = out.closed() => {
                cancel_all(&live);
                break;
            }
        };
        let kind = match msg {
            Ok(Some(m)) => m.kind,
            Ok(None) => break,
            Err(status) => {
                tracing::debug!(%status, "stream ended by the client");
                cancel_all(&live);
                break;
            }
        };
        let reply = match kind {
            Some(Kind::Generate(req)) => start(&core, req, &out, &live, limit, &span).await,
            Some(Kind::Cancel(c)) => {
                let token = live.lock().ok().and_then(|m| m.get(&c.request_id).cloned());
                match token {
                    Some(t) => {
                        t.cancel();
                        Ok(())
                    }
                    None => Err((c.request_id.clone(), ServiceError::UnknownRequestId { request_id: c.request_id })),
                }
            }
            None => Err((String::new(), ServiceError::invalid("kind", "set generate or cancel"))),
        };
        if let Err((id, e)) = reply {
            core.finish("Stream", e.code());
            if out.send(Ok(error_event(&id, &e))).await.is_err() {
                cancel_all(&live);
                break;
            }
        }
    }
}

async fn start(
    core: &Arc<Core>,
    req: pb::GenerateRequest,
    out: &Out,
    live: &Live,
    limit: usize,
    span: &Span,
) -> Result<(), (String, ServiceError)> {
    let id = req.request_id.clone();
    let fail = |e| (id.clone(), e);
    if id.is_empty() {
        return Err(fail(ServiceError::invalid("request_id", "is required on Stream, to tag its events")));
    }
    {
        let map = live.lock().map_err(|_| fail(ServiceError::Internal("stream state poisoned".into())))?;
        if map.contains_key(&id) {
            return Err(fail(ServiceError::DuplicateRequestId { request_id: id.clone() }));
        }
        if map.len() >= limit {
            return Err(fail(ServiceError::Exhausted { what: "live requests on one stream (limits.max_requests_per_stream)", limit }));
        }
    }
    let g = core.start(&req, span.clone()).await.map_err(fail)?;
    if let Ok(mut map) = live.lock() {
        map.insert(id.clone(), g.cancel.clone());
    }
    tokio::spawn(forward(core.clone(), g, id, out.clone(), live.clone()).instrument(span.clone()));
    Ok(())
}

/// Relays one request's events, in order, then forgets its id.
async fn forward(core: Arc<Core>, mut g: Started, id: String, out: Out, live: Live) {
    let mut first = true;
    let mut code = Code::Ok;
    while let Some(ev) = core.next_event(&mut g, &id, &mut first).await {
        let ev = ev.unwrap_or_else(|e| {
            code = e.code();
            error_event(&id, &e)
        });
        // The id is free again before the client can see the request end, so it may reuse it.
        if matches!(ev.event, Some(Event::Complete(_) | Event::Error(_))) {
            if let Ok(mut map) = live.lock() {
                map.remove(&id);
            }
        }
        if out.send(Ok(ev)).await.is_err() {
            g.cancel.cancel();
            code = Code::Cancelled;
            break;
        }
    }
    if let Ok(mut map) = live.lock() {
        map.remove(&id);
    }
    core.finish("Stream", code);
}
