//! The listener on `http_listen`: one task per connection, each bounded in
//! time and all of them in number, so that stalled or flooding senders cost
//! a fixed amount and cannot keep anyone else out.
//!
//! - A request's headers must arrive within `header_timeout` (hyper's
//!   header read timeout; it also closes a connection that sends nothing).
//! - At most `max_connections` at once. At the cap a new connection takes
//!   the slot of the oldest connection with no request in progress (one
//!   stalled in its headers, or idle between requests), which is closed;
//!   when every connection is in the middle of a request, the new one is
//!   closed at once.
//! - The body's own bounds (size, time, signature first) are the handler's:
//!   see [`super::github`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use tracing::{debug, warn};

/// What one client may hold of the listener (`[http]`).
#[derive(Clone, Copy, Debug)]
pub struct ListenerLimits {
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub max_connections: usize,
    /// Request body bytes buffered at once, over every connection.
    pub max_buffered_bytes: usize,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        ListenerLimits {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_connections: 256,
            max_buffered_bytes: 32 * 1024 * 1024,
        }
    }
}

/// Serves `router` until `shutdown` fires; connections with a request in
/// progress then finish it.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ListenerLimits,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let slots = Slots::new(limits.max_connections);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_headers(100)
        .max_buf_size(64 * 1024);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
            // Reap finished connection tasks as we go.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors (EMFILE) or a connection reset before
                // it was taken: wait a moment instead of spinning.
                warn!(error = %e, "http: cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(slot) = slots.take() else {
            debug!("http: every connection is busy with a request; closing a new one");
            drop(stream);
            continue;
        };
        connections.spawn(connection(
            stream,
            router.clone(),
            http.clone(),
            slot,
            shutdown.clone(),
        ));
    }
    // Requests in progress finish; idle connections close.
    while connections.join_next().await.is_some() {}
    Ok(())
}

async fn connection(
    stream: TcpStream,
    router: Router,
    http: hyper::server::conn::http1::Builder,
    slot: Slot,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let busy = slot.busy.clone();
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let in_request = InRequest::enter(busy.clone());
        let router = router.clone();
        async move {
            let _in_request = in_request;
            router.oneshot(request.map(axum::body::Body::new)).await
        }
    });
    let conn = http.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        served = conn.as_mut() => {
            if let Err(e) = served {
                debug!(error = %e, "http: connection ended");
            }
        }
        // Its slot was given to a newer connection: dropping `conn` closes it.
        _ = slot.evicted.cancelled() => debug!("http: idle connection closed for a new one"),
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// Marks a connection busy while one of its requests is being handled.
struct InRequest(Arc<AtomicUsize>);

impl InRequest {
    fn enter(busy: Arc<AtomicUsize>) -> Self {
        busy.fetch_add(1, Ordering::SeqCst);
        InRequest(busy)
    }
}

impl Drop for InRequest {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The connections held, oldest first.
#[derive(Clone)]
struct Slots {
    max: usize,
    held: Arc<Mutex<Held>>,
}

#[derive(Default)]
struct Held {
    next: u64,
    open: BTreeMap<u64, Holder>,
}

struct Holder {
    busy: Arc<AtomicUsize>,
    evicted: CancellationToken,
}

/// A connection's place; given back when dropped.
struct Slot {
    id: u64,
    busy: Arc<AtomicUsize>,
    evicted: CancellationToken,
    slots: Slots,
}

impl Slots {
    fn new(max: usize) -> Self {
        Slots {
            max: max.max(1),
            held: Arc::default(),
        }
    }

    /// A place for a new connection: a free one, else the one of the oldest
    /// connection with no request in progress (which is told to close), else
    /// none.
    fn take(&self) -> Option<Slot> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if held.open.len() >= self.max {
            let idle = held
                .open
                .iter()
                .find(|(_, h)| h.busy.load(Ordering::SeqCst) == 0)
                .map(|(id, _)| *id)?;
            if let Some(holder) = held.open.remove(&idle) {
                holder.evicted.cancel();
            }
        }
        let id = held.next;
        held.next += 1;
        let busy = Arc::new(AtomicUsize::new(0));
        let evicted = CancellationToken::new();
        held.open.insert(
            id,
            Holder {
                busy: busy.clone(),
                evicted: evicted.clone(),
            },
        );
        Some(Slot {
            id,
            busy,
            evicted,
            slots: self.clone(),
        })
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .open
            .len()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self.slots.held.lock().unwrap_or_else(|e| e.into_inner());
        held.open.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_the_cap_the_oldest_idle_connection_makes_room() {
        let slots = Slots::new(2);
        let first = slots.take().unwrap();
        let second = slots.take().unwrap();
        first.busy.fetch_add(1, Ordering::SeqCst);
        // The first is busy: the second, idle, gives its place.
        let third = slots.take().unwrap();
        assert!(second.evicted.is_cancelled());
        assert!(!first.evicted.is_cancelled());
        assert_eq!(slots.len(), 2);
        // Both busy: a new connection gets nothing.
        third.busy.fetch_add(1, Ordering::SeqCst);
        assert!(slots.take().is_none());
        // A connection that ends gives its place back.
        drop(first);
        assert_eq!(slots.len(), 1);
        let fourth = slots.take().unwrap();
        assert_eq!(slots.len(), 2);
        drop((second, third, fourth));
        assert_eq!(slots.len(), 0);
    }
}
