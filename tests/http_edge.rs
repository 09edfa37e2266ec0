//! The HTTP listener (`http_listen`) against hostile senders: stalled
//! connections, unsigned big bodies, slow and broken bodies, forged bodies
//! filling memory, and a config
//! that would take unsigned deliveries from anywhere.

mod common;

use std::time::{Duration, Instant};

use claudomator::config::Config;
use claudomator::proto as pb;
use common::{TestServer, start_server_with};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SECRET: &str = "edge-test-secret";

async fn signed_server(adjust: impl FnOnce(&mut Config)) -> TestServer {
    start_server_with(|c| {
        c.github.webhook_secret = SECRET.into();
        adjust(c);
    })
    .await
}

/// Everything the server sends until it closes the connection (or 20 s
/// pass), as text.
async fn read_answer(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    answer.extend_from_slice(&buf[..n]);
                    if complete(&answer) {
                        break;
                    }
                }
            }
        }
    })
    .await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// Whether `answer` holds a whole HTTP response (headers and the body its
/// Content-Length announces).
fn complete(answer: &[u8]) -> bool {
    let text = String::from_utf8_lossy(answer);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    head.lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|n| n.trim().parse::<usize>().unwrap_or(0))
        })
        .is_some_and(|n| body.len() >= n)
}

/// The status and the JSON body of an answer.
fn status_and_json(answer: &str) -> (u16, serde_json::Value) {
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"));
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    let json = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("the body is not JSON ({e}): {answer:?}"));
    (status, json)
}

#[tokio::test]
async fn stalled_connections_are_closed_and_the_server_keeps_answering() {
    let server = signed_server(|_| {}).await;
    let cap = server.config.http.max_connections;
    let opened = Instant::now();
    let mut stalled = Vec::new();
    for _ in 0..600 {
        let mut stream = TcpStream::connect(server.http_addr).await.unwrap();
        // Half a header, then nothing.
        stream
            .write_all(b"POST /webhooks/github HTTP/1.1\r\nHost: x\r\nContent-Le")
            .await
            .unwrap();
        stalled.push(stream);
    }

    // gRPC and /healthz answer while they hang.
    let mut client = server.client().await;
    let status = tokio::time::timeout(
        Duration::from_secs(20),
        client.get_system_status(pb::GetSystemStatusRequest {}),
    )
    .await
    .expect("GetSystemStatus answers while 600 connections stall")
    .unwrap();
    assert!(!status.into_inner().agents.is_empty());
    let healthz = tokio::time::timeout(
        Duration::from_secs(20),
        reqwest::get(format!("http://{}/healthz", server.http_addr)),
    )
    .await
    .expect("/healthz answers while 600 connections stall")
    .unwrap();
    assert_eq!(healthz.status().as_u16(), 200);

    // The server closes every stalled connection: those beyond the cap at
    // once, the rest when their headers are late.
    let mut closing = tokio::task::JoinSet::new();
    for mut stream in stalled {
        closing.spawn(async move {
            let mut buf = [0u8; 1024];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return opened.elapsed(),
                    Ok(_) => {}
                }
            }
        });
    }
    let deadline = opened + Duration::from_secs(30);
    let mut slowest = Duration::ZERO;
    while let Some(closed) = tokio::time::timeout_at(deadline.into(), closing.join_next())
        .await
        .expect("every stalled connection is closed by the server within 30 s")
    {
        slowest = slowest.max(closed.unwrap());
    }
    eprintln!("600 stalled connections (cap {cap}): the last closed after {slowest:?}");

    // And it still serves.
    let healthz = reqwest::get(format!("http://{}/healthz", server.http_addr))
        .await
        .unwrap();
    assert_eq!(healthz.status().as_u16(), 200);
}

#[tokio::test]
async fn an_unsigned_big_body_is_refused_before_it_is_sent() {
    let server = signed_server(|_| {}).await;
    let mut stream = TcpStream::connect(server.http_addr).await.unwrap();
    // 2 MiB announced, only the headers and 1 KiB sent: the answer cannot
    // wait for (nor hold) the rest.
    stream
        .write_all(
            b"POST /webhooks/github HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              X-GitHub-Event: workflow_run\r\nContent-Length: 2097152\r\n\r\n",
        )
        .await
        .unwrap();
    stream.write_all(&[b' '; 1024]).await.unwrap();
    let started = Instant::now();
    let answer = read_answer(&mut stream).await;
    let (status, json) = status_and_json(&answer);
    assert_eq!(status, 401, "{answer}");
    assert_eq!(json["outcome"], "error");
    assert!(
        json["message"]
            .as_str()
            .unwrap()
            .contains("X-Hub-Signature-256"),
        "{json}"
    );
    eprintln!(
        "unsigned 2 MiB delivery refused after {:?}",
        started.elapsed()
    );

    // A malformed signature is refused the same way, before the body.
    let mut stream = TcpStream::connect(server.http_addr).await.unwrap();
    stream
        .write_all(
            b"POST /webhooks/github HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              X-Hub-Signature-256: sha256=zz\r\nContent-Length: 2097152\r\n\r\n",
        )
        .await
        .unwrap();
    let (status, _) = status_and_json(&read_answer(&mut stream).await);
    assert_eq!(status, 401);

    // More than max_body_bytes announced, even signed: 413 at once.
    let mut stream = TcpStream::connect(server.http_addr).await.unwrap();
    let signature = format!("sha256={}", "0".repeat(64));
    stream
        .write_all(
            format!(
                "POST /webhooks/github HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                 X-Hub-Signature-256: {signature}\r\nContent-Length: 3145728\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let (status, json) = status_and_json(&read_answer(&mut stream).await);
    assert_eq!(status, 413, "{json}");
    assert!(
        json["message"].as_str().unwrap().contains("max_body_bytes"),
        "{json}"
    );
}

#[tokio::test]
async fn slow_and_broken_bodies_get_their_own_4xx() {
    let server = signed_server(|c| c.http.body_timeout = "1s".into()).await;
    let signature = format!("sha256={}", "0".repeat(64));
    let head = format!(
        "POST /webhooks/github HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         X-GitHub-Event: ping\r\nX-Hub-Signature-256: {signature}\r\nContent-Length: 100\r\n\r\n"
    );

    // Ten bytes of a hundred, then silence: 408 naming the setting.
    let mut stream = TcpStream::connect(server.http_addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(b"{\"zen\": \"x").await.unwrap();
    let (status, json) = status_and_json(&read_answer(&mut stream).await);
    assert_eq!(status, 408, "{json}");
    assert!(
        json["message"].as_str().unwrap().contains("body_timeout"),
        "{json}"
    );

    // Ten bytes, then the sender stops writing: a read error, not "too large".
    let mut stream = TcpStream::connect(server.http_addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(b"{\"zen\": \"x").await.unwrap();
    stream.shutdown().await.unwrap();
    let (status, json) = status_and_json(&read_answer(&mut stream).await);
    assert_eq!(status, 400, "{json}");
    let message = json["message"].as_str().unwrap();
    assert!(message.contains("cannot read the body"), "{json}");
    assert!(!message.contains("max_body_bytes"), "{json}");
}

#[tokio::test]
async fn forged_bodies_share_one_budget_and_cannot_fill_memory() {
    let server = signed_server(|c| {
        c.github.max_body_bytes = 64 * 1024;
        c.http.max_buffered_bytes = 256 * 1024;
    })
    .await;
    let signature = format!("sha256={}", "0".repeat(64));
    let head = |length: usize| {
        format!(
            "POST /webhooks/github HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             X-GitHub-Event: ping\r\nX-Hub-Signature-256: {signature}\r\n\
             Content-Length: {length}\r\n\r\n"
        )
    };
    // Four senders with a forged signature send 60 KiB of 64, then stall:
    // the server holds 240 KiB of the 256 it may.
    let mut stalled = Vec::new();
    for _ in 0..4 {
        let mut stream = TcpStream::connect(server.http_addr).await.unwrap();
        stream.write_all(head(64 * 1024).as_bytes()).await.unwrap();
        stream.write_all(&[b' '; 60 * 1024]).await.unwrap();
        stalled.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // A fifth body does not fit beside them: 503 naming the setting, at
    // once, not after the body timeout.
    let started = Instant::now();
    let mut stream = TcpStream::connect(server.http_addr).await.unwrap();
    stream.write_all(head(32 * 1024).as_bytes()).await.unwrap();
    stream.write_all(&[b' '; 32 * 1024]).await.unwrap();
    let (status, json) = status_and_json(&read_answer(&mut stream).await);
    assert_eq!(status, 503, "{json}");
    assert!(
        json["message"]
            .as_str()
            .unwrap()
            .contains("max_buffered_bytes"),
        "{json}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));

    // The senders go: their share comes back, and a 32 KiB body is read
    // (and found forged: 401, past the budget).
    drop(stalled);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut stream = TcpStream::connect(server.http_addr).await.unwrap();
    stream.write_all(head(32 * 1024).as_bytes()).await.unwrap();
    stream.write_all(&[b' '; 32 * 1024]).await.unwrap();
    let (status, json) = status_and_json(&read_answer(&mut stream).await);
    assert_eq!(status, 401, "{json}");
    assert!(
        json["message"].as_str().unwrap().contains("does not match"),
        "{json}"
    );
}

#[test]
fn a_webhook_body_limit_over_the_shared_budget_is_a_config_error() {
    let mut config = Config::default();
    config.github.max_body_bytes = 4 * 1024 * 1024;
    config.http.max_buffered_bytes = 1024 * 1024;
    let error = config.validate().unwrap_err().to_string();
    assert!(error.contains("max_buffered_bytes"), "{error}");
}

#[test]
fn unsigned_deliveries_on_a_public_address_are_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("claudomator.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\nhttp_listen = \"0.0.0.0:0\"\ndata_dir = \"{}\"\n\
             [auth]\ntokens = [\"s3cret-token\"]\n[github]\nallow_unsigned = true\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_claudomator"))
        .args(["serve", "--config"])
        .arg(&config)
        .current_dir(dir.path())
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(!out.status.success(), "serve started");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("github.allow_unsigned") && stderr.contains("0.0.0.0"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("data").exists(),
        "serve created its data dir before refusing its config"
    );
}
