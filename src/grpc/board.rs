//! The web board's files, served on the gRPC port (the page's own origin is
//! then the API's, so its gRPC-Web calls need no `cors_origins`).
//!
//! The files are `web/dist/`, built from `web/src/` by `web/build` and
//! committed, embedded here at compile time: `cargo build` needs no Node.js
//! and the running server reads no file. Every `GET` and `HEAD` is answered
//! here (gRPC and gRPC-Web calls are all `POST`); everything else passes
//! through to the API. Each file has an `ETag` (its SHA-256) and
//! `Cache-Control: no-cache`, so a browser revalidates and gets 304 until the
//! server is upgraded; `board.js` is sent gzipped (the committed
//! `board.js.gz`) to a browser that accepts it.

use std::future::Future;
use std::pin::Pin;
use std::sync::LazyLock;
use std::task::{Context, Poll};

use sha2::{Digest, Sha256};
use tonic::body::Body;
use tonic::codegen::http::{HeaderValue, Method, Request, Response, StatusCode, header};
use tower::{Layer, Service};

/// One file of the board.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
    /// The same bytes gzipped, when a compressed copy is worth sending.
    gzipped: Option<&'static [u8]>,
}

const ASSETS: &[Asset] = &[
    Asset {
        path: "/index.html",
        content_type: "text/html; charset=utf-8",
        bytes: include_bytes!("../../web/dist/index.html"),
        gzipped: None,
    },
    Asset {
        path: "/board.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../web/dist/board.js"),
        gzipped: Some(include_bytes!("../../web/dist/board.js.gz")),
    },
    Asset {
        path: "/board.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../../web/dist/board.css"),
        gzipped: None,
    },
];

/// The page may load only its own files and call only its own origin.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// Each asset's ETag (a quoted prefix of its SHA-256), computed once.
static ETAGS: LazyLock<Vec<HeaderValue>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|asset| {
            let digest = Sha256::digest(asset.bytes);
            HeaderValue::try_from(format!("\"{}\"", hex::encode(&digest[..12])))
                .expect("hex is a valid header value")
        })
        .collect()
});

/// The board in front of the API: answers `GET`/`HEAD`, passes the rest on.
#[derive(Clone, Default)]
pub struct BoardLayer;

impl<S> Layer<S> for BoardLayer {
    type Service = Board<S>;

    fn layer(&self, inner: S) -> Board<S> {
        Board { inner }
    }
}

#[derive(Clone)]
pub struct Board<S> {
    inner: S,
}

type BoxFuture<E> = Pin<Box<dyn Future<Output = Result<Response<Body>, E>> + Send>>;

impl<S> Service<Request<Body>> for Board<S>
where
    S: Service<Request<Body>, Response = Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        if request.method() == Method::GET || request.method() == Method::HEAD {
            return Box::pin(std::future::ready(Ok(answer(&request))));
        }
        Box::pin(self.inner.call(request))
    }
}

/// The answer to a `GET` or `HEAD` of `request`'s path.
fn answer(request: &Request<Body>) -> Response<Body> {
    let path = match request.uri().path() {
        "/" => "/index.html",
        path => path,
    };
    let Some(index) = ASSETS.iter().position(|a| a.path == path) else {
        return plain(
            StatusCode::NOT_FOUND,
            "not found: the board is at /, the API is gRPC (or gRPC-Web, POST) on this port\n",
        );
    };
    let asset = &ASSETS[index];
    let etag = ETAGS[index].clone();
    let headers = request.headers();
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let gzip = asset
        .gzipped
        .filter(|_| accepts_gzip(headers.get(header::ACCEPT_ENCODING)));
    let mut response = if fresh {
        status_only(StatusCode::NOT_MODIFIED)
    } else {
        let bytes = gzip.unwrap_or(asset.bytes);
        let mut response = Response::new(Body::new(axum::body::Body::from(bytes)));
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        );
        if gzip.is_some() {
            headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        response
    };
    let headers = response.headers_mut();
    headers.insert(header::ETAG, etag);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if asset.gzipped.is_some() {
        headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
    security_headers(&mut response);
    response
}

/// Whether an `Accept-Encoding` value takes gzip (and does not refuse it with `q=0`).
fn accepts_gzip(value: Option<&HeaderValue>) -> bool {
    let Some(value) = value.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    value.split(',').any(|coding| {
        let mut parts = coding.split(';').map(str::trim);
        let name = parts.next().unwrap_or_default();
        let refused = parts.any(|p| {
            p.strip_prefix("q=")
                .and_then(|q| q.parse::<f32>().ok())
                .is_some_and(|q| q == 0.0)
        });
        (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
    })
}

fn status_only(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = status;
    response
}

fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::new(axum::body::Body::from(text)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    security_headers(&mut response);
    response
}

fn security_headers(response: &mut Response<Body>) {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

#[cfg(test)]
mod tests {
    use super::accepts_gzip;
    use tonic::codegen::http::HeaderValue;

    #[test]
    fn gzip_is_sent_only_where_accepted() {
        for (value, gzip) in [
            ("gzip, deflate, br, zstd", true),
            ("br;q=1.0, gzip;q=0.8", true),
            ("*", true),
            ("identity", false),
            ("gzip;q=0", false),
            ("deflate", false),
        ] {
            let header = HeaderValue::from_static(value);
            assert_eq!(accepts_gzip(Some(&header)), gzip, "{value}");
        }
        assert!(!accepts_gzip(None));
    }
}
