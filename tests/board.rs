//! The web board on the gRPC port: its files (content types, ETag, gzip,
//! security headers), and that the page it serves may call the API from its
//! own origin with no `cors_origins`, while other origins stay refused.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use claudomator::proto as pb;
use common::start_server;
use prost::Message;
use reqwest::StatusCode;

fn http1() -> reqwest::Client {
    reqwest::Client::builder()
        .http1_only()
        .no_gzip()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// One gRPC-Web ListTasks call, with `headers` (an `Origin`, a `Host`).
async fn list_tasks(addr: SocketAddr, headers: &[(&str, &str)]) -> reqwest::Response {
    let bytes = pb::ListTasksRequest::default().encode_to_vec();
    let mut body = vec![0u8];
    body.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    body.extend_from_slice(&bytes);
    let mut call = http1()
        .post(format!(
            "http://{addr}/claudomator.v1.ClaudomatorService/ListTasks"
        ))
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .body(body);
    for (name, value) in headers {
        call = call.header(*name, *value);
    }
    call.send().await.unwrap()
}

#[tokio::test]
async fn the_board_is_served_on_the_grpc_port() {
    let server = start_server().await;
    let base = format!("http://{}", server.addr);
    let client = http1();

    let page = client.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let headers = page.headers().clone();
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    assert_eq!(headers["cache-control"], "no-cache");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("connect-src 'self'"), "{csp}");
    let etag = headers["etag"].to_str().unwrap().to_string();
    let html = page.text().await.unwrap();
    assert!(
        html.contains(r#"<script type="module" src="/board.js">"#),
        "{html}"
    );
    assert!(html.contains(r#"href="/board.css""#), "{html}");

    // Revalidation: the same ETag is 304 with no body.
    let again = client
        .get(format!("{base}/index.html"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(again.headers()["etag"], etag.as_str());
    assert!(again.bytes().await.unwrap().is_empty());

    // The script, whole or gzipped, as the browser asks.
    let plain = client.get(format!("{base}/board.js")).send().await.unwrap();
    assert_eq!(
        plain.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    assert!(plain.headers().get("content-encoding").is_none());
    assert_eq!(plain.headers()["vary"], "accept-encoding");
    let script = plain.bytes().await.unwrap();
    let gzipped = client
        .get(format!("{base}/board.js"))
        .header("accept-encoding", "gzip, deflate, br")
        .send()
        .await
        .unwrap();
    assert_eq!(gzipped.headers()["content-encoding"], "gzip");
    let packed = gzipped.bytes().await.unwrap();
    assert_eq!(&packed[..2], &[0x1f, 0x8b], "a gzip stream");
    assert!(
        packed.len() * 2 < script.len(),
        "{} of {}",
        packed.len(),
        script.len()
    );

    let css = client
        .get(format!("{base}/board.css"))
        .send()
        .await
        .unwrap();
    assert_eq!(css.headers()["content-type"], "text/css; charset=utf-8");

    // HEAD has the headers and no body; other paths are 404.
    let head = client.head(format!("{base}/")).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(head.headers()["etag"], etag.as_str());
    let missing = client
        .get(format!("{base}/nothing-here"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);

    // gRPC beside it is untouched.
    let answer = list_tasks(server.addr, &[]).await;
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(
        answer.headers()["content-type"],
        "application/grpc-web+proto"
    );
}

#[tokio::test]
async fn the_board_calls_from_its_own_origin_with_no_cors_origins() {
    let server = start_server().await;
    assert!(server.config.cors_origins.is_empty());
    let port = server.addr.port();
    let own = format!("http://{}", server.addr);

    // The page's own origin (what a browser sends for the board): allowed.
    let answer = list_tasks(server.addr, &[("origin", &own)]).await;
    assert_eq!(answer.status(), StatusCode::OK);
    assert!(answer.headers().get("grpc-status").is_none());
    // Through `localhost` too, when the request names it.
    let localhost = format!("http://localhost:{port}");
    let host = format!("localhost:{port}");
    let answer = list_tasks(server.addr, &[("origin", &localhost), ("host", &host)]).await;
    assert_eq!(answer.status(), StatusCode::OK);

    // Another port is another origin; a DNS name that points here (DNS
    // rebinding: the Host and Origin agree) is not trusted without listing.
    let other_port = format!("http://127.0.0.1:{}", port.wrapping_add(1).max(1));
    let rebound = format!("http://evil.example:{port}");
    let rebound_host = format!("evil.example:{port}");
    for headers in [
        vec![("origin", other_port.as_str())],
        vec![("origin", "http://localhost:5173")],
        vec![
            ("origin", rebound.as_str()),
            ("host", rebound_host.as_str()),
        ],
        vec![("origin", localhost.as_str())], // Host says 127.0.0.1
    ] {
        let answer = list_tasks(server.addr, &headers).await;
        assert_eq!(answer.status(), StatusCode::FORBIDDEN, "{headers:?}");
        assert!(
            answer
                .headers()
                .get("access-control-allow-origin")
                .is_none(),
            "{headers:?}"
        );
    }
}
