//! Optional bearer-token auth for the Inference service.

use std::sync::Arc;

use tonic::service::Interceptor;
use tonic::{Request, Status};

use super::error::ServiceError;

/// Checks `authorization: Bearer <token>` when a token is configured.
#[derive(Clone)]
pub struct BearerAuth {
    token: Option<Arc<str>>,
}

impl BearerAuth {
    /// An empty `token` turns auth off.
    pub fn new(token: &str) -> Self {
        BearerAuth { token: (!token.is_empty()).then(|| Arc::from(token)) }
    }
}

/// Compares in time independent of where the bytes differ, so the token cannot be guessed a
/// byte at a time from response latency.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Interceptor for BearerAuth {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        let Some(token) = &self.token else { return Ok(req) };
        let given = match req.metadata().get("authorization").map(|v| v.to_str()) {
            None => return Err(ServiceError::Unauthenticated("missing authorization metadata; send \"authorization: Bearer <token>\"".into()).into()),
            Some(Err(_)) => return Err(ServiceError::Unauthenticated("authorization metadata is not ASCII".into()).into()),
            Some(Ok(v)) => v,
        };
        let Some(given) = given.strip_prefix("Bearer ") else {
            return Err(ServiceError::Unauthenticated("authorization metadata must be \"Bearer <token>\"".into()).into());
        };
        if constant_time_eq(given.trim().as_bytes(), token.as_bytes()) {
            Ok(req)
        } else {
            Err(ServiceError::Unauthenticated("the bearer token is not valid".into()).into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(auth: &mut BearerAuth, header: Option<&str>) -> Result<(), tonic::Code> {
        let mut req = Request::new(());
        if let Some(h) = header {
            req.metadata_mut().insert("authorization", h.parse().unwrap());
        }
        auth.call(req).map(|_| ()).map_err(|s| s.code())
    }

    #[test]
    fn only_the_configured_bearer_token_passes() {
        let mut auth = BearerAuth::new("s3cret");
        assert_eq!(call(&mut auth, Some("Bearer s3cret")), Ok(()));
        assert_eq!(call(&mut auth, None), Err(tonic::Code::Unauthenticated));
        assert_eq!(call(&mut auth, Some("Bearer s3cres")), Err(tonic::Code::Unauthenticated));
        assert_eq!(call(&mut auth, Some("Basic s3cret")), Err(tonic::Code::Unauthenticated));
        assert_eq!(call(&mut BearerAuth::new(""), None), Ok(()));
    }
}
