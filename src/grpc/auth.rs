//! Bearer-token auth for every service but health. With no tokens
//! configured, every call is let through.

use std::sync::Arc;

use subtle::ConstantTimeEq;
use tonic::service::Interceptor;
use tonic::{Request, Status};

#[derive(Clone)]
pub struct BearerAuth {
    tokens: Arc<Vec<String>>,
}

impl BearerAuth {
    pub fn new(tokens: Vec<String>) -> Self {
        BearerAuth {
            tokens: Arc::new(tokens),
        }
    }

    fn accepts(&self, presented: &str) -> bool {
        // Compare against every token, in constant time each, so timing does
        // not tell which token (or how much of one) matched.
        self.tokens.iter().fold(false, |found, token| {
            found | bool::from(token.as_bytes().ct_eq(presented.as_bytes()))
        })
    }
}

impl Interceptor for BearerAuth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        if self.tokens.is_empty() {
            return Ok(request);
        }
        let Some(header) = request.metadata().get("authorization") else {
            return Err(Status::unauthenticated(
                "missing `authorization: Bearer <token>` metadata",
            ));
        };
        let presented = header
            .to_str()
            .ok()
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim);
        match presented {
            Some(token) if self.accepts(token) => Ok(request),
            Some(_) => Err(Status::unauthenticated("invalid bearer token")),
            None => Err(Status::unauthenticated(
                "the authorization metadata must be `Bearer <token>`",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(auth: &mut BearerAuth, header: Option<&str>) -> Result<(), tonic::Code> {
        let mut req = Request::new(());
        if let Some(h) = header {
            req.metadata_mut()
                .insert("authorization", h.parse().unwrap());
        }
        auth.call(req).map(|_| ()).map_err(|s| s.code())
    }

    #[test]
    fn tokens_are_checked_when_configured() {
        let mut open = BearerAuth::new(vec![]);
        assert_eq!(call(&mut open, None), Ok(()));

        let mut auth = BearerAuth::new(vec!["alpha".into(), "beta".into()]);
        assert_eq!(call(&mut auth, Some("Bearer beta")), Ok(()));
        assert_eq!(call(&mut auth, None), Err(tonic::Code::Unauthenticated));
        assert_eq!(
            call(&mut auth, Some("Bearer alph")),
            Err(tonic::Code::Unauthenticated)
        );
        assert_eq!(
            call(&mut auth, Some("Basic alpha")),
            Err(tonic::Code::Unauthenticated)
        );
    }
}
