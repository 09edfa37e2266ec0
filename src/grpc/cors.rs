//! CORS for gRPC-Web on the gRPC port: which browser pages may call the API.
//!
//! Off by default (`cors_origins` empty). A request that carries an `Origin`
//! header is a browser's; it goes through only when that origin is listed:
//!
//! - a preflight (`OPTIONS` with `Access-Control-Request-Method`) from a
//!   listed origin is answered here, 204 with the `Access-Control-*` headers
//!   gRPC-Web needs; from any other origin it is refused with 403 and no
//!   `Access-Control-*` header, so the browser never sends the call;
//! - any other request from a listed origin reaches the service, and its
//!   answer carries `Access-Control-Allow-Origin` and exposes the gRPC
//!   status headers; from an origin not listed it is refused with 403 before
//!   it reaches a service. Browsers send `Origin` on every cross-origin call
//!   and on same-origin POSTs too, so a page on another site (or a site
//!   whose name was rebound to this address) cannot call the API even where
//!   no token is set.
//!
//! The server's own origin is allowed with no listing, when the request
//! names the server by an IP address or `localhost` (`Origin` equal to
//! `http://` + `Host`): the board this server serves calling back. A DNS name
//! must be listed, since another site can rebind its own name to this
//! address and so look same-origin.
//!
//! Requests without `Origin` (native gRPC clients, the CLI, curl) pass
//! untouched and get no CORS headers.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::codegen::http::{self, HeaderValue, Method, Request, Response, StatusCode, header};
use tower::{Layer, Service};

/// The request headers a gRPC-Web client sends, allowed on a preflight.
pub const ALLOWED_HEADERS: &str =
    "authorization, content-type, x-grpc-web, x-user-agent, grpc-timeout";
/// The response headers a page may read: a call's status when it comes in
/// the headers (an error with no messages).
pub const EXPOSED_HEADERS: &str = "grpc-status, grpc-message, grpc-status-details-bin";
/// How long a browser may keep a preflight's answer, in seconds.
const MAX_AGE_SECONDS: &str = "600";

/// An origin as a browser sends it in `Origin`: `scheme://host[:port]`, the
/// scheme `http` or `https`, lower case, no default port, no path. The
/// error says what is wrong with `text`.
pub fn parse_origin(text: &str) -> Result<String, String> {
    let example = "e.g. `http://localhost:5173` or `https://board.example.com`";
    let text = text.trim();
    if text == "*" {
        return Err(format!(
            "`*` is not accepted: list each origin the pages are served from, {example}"
        ));
    }
    let Some((scheme, rest)) = text.split_once("://") else {
        return Err(format!(
            "`{text}` is not an origin: it is scheme://host[:port], {example}"
        ));
    };
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => {
            return Err(format!(
                "`{text}`: the scheme must be http or https, {example}"
            ));
        }
    };
    if let Some(c) = rest.chars().find(|c| "/?#@\\".contains(*c)) {
        return Err(format!(
            "`{text}`: an origin is scheme://host[:port] only, without `{c}` (no path, not \
             even a trailing `/`, no query, no user), {example}"
        ));
    }
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let Some((addr, after)) = v6.split_once(']') else {
            return Err(format!("`{text}`: an IPv6 host is written `[::1]`"));
        };
        let ok = !addr.is_empty() && addr.chars().all(|c| c.is_ascii_hexdigit() || c == ':');
        if !ok {
            return Err(format!("`{text}`: `[{addr}]` is not an IPv6 address"));
        }
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| format!("`{text}`: only `:port` may follow the IPv6 host"))?,
            ),
        };
        (format!("[{}]", addr.to_ascii_lowercase()), port)
    } else {
        let (host, port) = match rest.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        };
        let ok = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
        if !ok {
            return Err(format!(
                "`{text}`: `{host}` is not a host name (letters, digits, `-` and `.`), {example}"
            ));
        }
        (host.to_ascii_lowercase(), port)
    };
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(0) | Err(_) => {
                return Err(format!("`{text}`: `{p}` is not a port (1 to 65535)"));
            }
            Ok(p) if p == default_port => None, // a browser leaves it out
            Ok(p) => Some(p),
        },
    };
    Ok(match port {
        Some(port) => format!("{scheme}://{host}:{port}"),
        None => format!("{scheme}://{host}"),
    })
}

/// Whether `origin` is the server's own as the request reached it: a page
/// this server served (the board) calling back. Only for an IP address or
/// `localhost`: a name in DNS could be rebound to this address by another
/// site, whose pages would then look same-origin (list such names in
/// `cors_origins`).
fn is_own_origin(origin: &str, request: &Request<Body>) -> bool {
    // HTTP/1.1 names the host in `Host`, HTTP/2 in `:authority`.
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()));
    let Some(host) = host else {
        return false;
    };
    // The server speaks plain HTTP: its own pages are `http://`.
    let Ok(own) = parse_origin(&format!("http://{host}")) else {
        return false;
    };
    let Ok(origin) = parse_origin(origin) else {
        return false;
    };
    if origin != own {
        return false;
    }
    let name = own.trim_start_matches("http://");
    let name = match name.rsplit_once(':') {
        Some((name, port)) if !name.ends_with(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            name
        }
        _ => name,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name == "localhost" || name.parse::<std::net::IpAddr>().is_ok()
}

/// The CORS check in front of every service; `origins` as [`parse_origin`]
/// returns them (empty: no browser page may call).
#[derive(Clone)]
pub struct CorsLayer {
    origins: Arc<[String]>,
}

impl CorsLayer {
    pub fn new(origins: Vec<String>) -> Self {
        CorsLayer {
            origins: origins.into(),
        }
    }
}

impl<S> Layer<S> for CorsLayer {
    type Service = Cors<S>;

    fn layer(&self, inner: S) -> Cors<S> {
        Cors {
            inner,
            origins: self.origins.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Cors<S> {
    inner: S,
    origins: Arc<[String]>,
}

type BoxFuture<E> = Pin<Box<dyn Future<Output = Result<Response<Body>, E>> + Send>>;

impl<S> Service<Request<Body>> for Cors<S>
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
        let Some(origin) = request.headers().get(header::ORIGIN).cloned() else {
            return Box::pin(self.inner.call(request));
        };
        let listed = origin.to_str().is_ok_and(|origin| {
            self.origins
                .iter()
                .any(|allowed| allowed.eq_ignore_ascii_case(origin))
                || is_own_origin(origin, &request)
        });
        let preflight = request.method() == Method::OPTIONS
            && request
                .headers()
                .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        if !listed {
            tracing::debug!(origin = ?origin, preflight, "refused a call from an origin not in cors_origins");
            return Box::pin(std::future::ready(Ok(refused(&origin))));
        }
        if preflight {
            return Box::pin(std::future::ready(Ok(preflight_answer(origin))));
        }
        let answer = self.inner.call(request);
        Box::pin(async move {
            let mut response = answer.await?;
            let headers = response.headers_mut();
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            headers.insert(
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static(EXPOSED_HEADERS),
            );
            headers.append(header::VARY, HeaderValue::from_static("origin"));
            Ok(response)
        })
    }
}

/// 403 with the reason as text, and no `Access-Control-*` header.
fn refused(origin: &HeaderValue) -> Response<Body> {
    let origin = String::from_utf8_lossy(origin.as_bytes());
    let reason = format!(
        "origin `{origin}` is not allowed to call this server: list it in the server's \
         cors_origins\n"
    );
    let mut response = Response::new(Body::new(reason));
    *response.status_mut() = StatusCode::FORBIDDEN;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn preflight_answer(origin: HeaderValue) -> Response<Body> {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    let headers: &mut http::HeaderMap = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST, OPTIONS"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(ALLOWED_HEADERS),
    );
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static(MAX_AGE_SECONDS),
    );
    headers.insert(
        header::VARY,
        HeaderValue::from_static(
            "origin, access-control-request-method, access-control-request-headers",
        ),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::{is_own_origin, parse_origin};
    use tonic::body::Body;
    use tonic::codegen::http::Request;

    #[test]
    fn the_own_origin_is_an_ip_address_or_localhost_the_request_names() {
        let own = |origin: &str, host: &str| {
            let request = Request::builder()
                .header("host", host)
                .body(Body::empty())
                .unwrap();
            is_own_origin(origin, &request)
        };
        assert!(own("http://127.0.0.1:7070", "127.0.0.1:7070"));
        assert!(own("http://[::1]:7070", "[::1]:7070"));
        assert!(own("http://localhost:7070", "LOCALHOST:7070"));
        assert!(own("http://10.0.0.5", "10.0.0.5:80"));
        // Another port, scheme or host is another origin.
        assert!(!own("http://127.0.0.1:7071", "127.0.0.1:7070"));
        assert!(!own("https://127.0.0.1:7070", "127.0.0.1:7070"));
        assert!(!own("http://localhost:7070", "127.0.0.1:7070"));
        // A DNS name may have been rebound to this address by its owner.
        assert!(!own("http://evil.example:7070", "evil.example:7070"));
        assert!(!own("null", "127.0.0.1:7070"));
    }

    #[test]
    fn origins_are_read_as_a_browser_sends_them() {
        for (text, origin) in [
            ("http://localhost:5173", "http://localhost:5173"),
            ("HTTPS://Board.Example.com", "https://board.example.com"),
            ("https://board.example.com:443", "https://board.example.com"),
            ("http://127.0.0.1:80", "http://127.0.0.1"),
            (" http://[::1]:8080 ", "http://[::1]:8080"),
        ] {
            assert_eq!(parse_origin(text).as_deref(), Ok(origin), "{text}");
        }
        for (text, says) in [
            ("*", "`*` is not accepted"),
            ("localhost:5173", "is not an origin"),
            ("ftp://example.com", "http or https"),
            ("http://localhost:5173/", "without `/`"),
            ("https://example.com/board", "without `/`"),
            ("http://user@example.com", "without `@`"),
            ("http://", "is not a host name"),
            ("http://exa mple.com", "is not a host name"),
            ("http://localhost:0", "is not a port"),
            ("http://localhost:99999", "is not a port"),
            ("http://[::1", "IPv6"),
        ] {
            let err = parse_origin(text).unwrap_err();
            assert!(err.contains(says), "{text}: {err}");
        }
    }
}
