//! The plumbing every scripted model server shares: an axum app on
//! `127.0.0.1:0`, served on a thread of its own with its own tokio runtime,
//! so a mock works from plain `#[test]`s and from any `#[tokio::test]`
//! flavour alike. Dropping it (or [`HttpThread::shutdown`]) stops the server
//! and cuts every connection still open (a slow stream, say).
//!
//! A mock file names it as `super::http_thread`: from `mod support;` that is
//! this file; a test or bench that takes one mock by `#[path]` declares
//! `#[path = ".../support/http_thread.rs"] mod http_thread;` beside it.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::thread::JoinHandle;
use std::time::Duration;

use axum::Router;

pub struct HttpThread {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl HttpThread {
    /// Binds `127.0.0.1:0` and serves `app` there; `name` names the thread
    /// and the server's errors.
    pub fn serve(name: &str, app: Router) -> HttpThread {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("mock binds 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let addr = listener.local_addr().expect("mock local addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let label = name.to_string();
        let thread = std::thread::Builder::new()
            .name(format!("{name}-{}", addr.port()))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("mock runtime");
                rt.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                    tokio::select! {
                        res = axum::serve(listener, app) => {
                            if let Err(e) = res {
                                eprintln!("{label}: server error: {e}");
                            }
                        }
                        _ = stopped => {}
                    }
                });
                // Cuts every connection still open (e.g. a slow stream).
                rt.shutdown_timeout(Duration::from_millis(100));
            })
            .expect("spawn mock thread");
        HttpThread {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the server and cuts open connections. Idempotent.
    pub fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for HttpThread {
    fn drop(&mut self) {
        self.shutdown();
    }
}
