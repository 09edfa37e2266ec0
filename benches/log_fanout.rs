//! Log fan-out: one execution emitting events at a high rate, followed live
//! by many `StreamLogs` subscribers over real gRPC. The server runs in this
//! process (`claudomator::app::start`); events go in through the server's own
//! `LogHub` (`running.tasks().logs()`), for an execution row written through
//! the server's store, so the whole path is measured: `LogWriter::append`
//! (disk, then broadcast) → the hub's per-subscriber feeder → tonic → client.
//!
//! Each event carries its emit time (nanoseconds on this process' monotonic
//! clock) in its payload; subscribers record emit-to-receive latency in
//! log-linear histograms (~1.6 % resolution). Runs: as fast as one
//! thread can emit, and rate-limited. In the same run, the same events go
//! through two baselines: a bare `tokio::sync::broadcast` to in-process
//! receivers (lossless: capacity = all events), and a bare tonic server
//! stream of the same messages (lossless broadcast → one feeder task and a
//! 256-slot channel per subscriber, as the hub has, but no file).
//!
//! Prints figures and ratios; asserts nothing.
//!
//! `cargo bench --bench log_fanout`. Environment:
//! - BENCH_EVENTS (200000): events of the as-fast-as-possible run;
//! - BENCH_SUBSCRIBERS (100);
//! - BENCH_RATES (`20000,500`): one rate-limited run per rate (ev/s), each
//!   BENCH_RATE_SECONDS (10) long: 20k/s × 100 subscribers is 2M deliveries/s,
//!   past what bare tonic does on 2 cores; 500/s is well within it;
//! - BENCH_EVENT_BYTES (200): text in each event;
//! - BENCH_TIMEOUT (300): seconds per scenario;
//! - BENCH_MAX_RSS_MB (2048): how much the process may grow in one scenario
//!   before it is cut short (the hub's catch-up path can use gigabytes);
//!   BENCH_MAX_VM_MB (16384) caps the address space as a last resort;
//! - BENCH_BURST_PREFIXES (`1000,10000`), BENCH_BURST_RATE (500),
//!   BENCH_BURST_EVENTS (3000): one run per prefix, that many events at the
//!   burst rate, then the burst as fast as possible; the burst's own latency
//!   is printed (how a catch-up costs as the log grows);
//! - BENCH_RUNS (`fast,rate,burst`), BENCH_TRANSPORTS
//!   (`claudomator,tonic,broadcast`).

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use claudomator::config::{Config, ExecutorSection, ProjectConfig};
use claudomator::core::logs::{LogEvent, LogKind, SharedEvent};
use claudomator::core::model::{AgentType, Execution, now_millis};
use claudomator::proto as pb;
use claudomator::proto::claudomator_service_client::ClaudomatorServiceClient;
use prost::Message;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::codegen::{Body, BoxFuture, StdError, http};
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Server};
use tonic::{Request, Response, Status};

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Nanoseconds since the first call, on a monotonic clock shared by every
/// thread of this process.
fn now_ns() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

// ---------------------------------------------------------------- histogram

const SUB_BITS: u32 = 6;
const SUB: u64 = 1 << SUB_BITS;
const BUCKETS: usize = (2 * SUB + (64 - SUB_BITS as u64) * SUB) as usize;

/// Log-linear histogram of nanoseconds: exact below 128 ns, then 64
/// buckets per power of two.
#[derive(Clone)]
struct Hist {
    counts: Vec<u64>,
    n: u64,
    max: u64,
}

impl Hist {
    fn new() -> Self {
        Hist {
            counts: vec![0; BUCKETS],
            n: 0,
            max: 0,
        }
    }

    fn index(v: u64) -> usize {
        if v < 2 * SUB {
            return v as usize;
        }
        let e = 63 - v.leading_zeros() - SUB_BITS; // v >> e in [64, 128)
        (2 * SUB + u64::from(e - 1) * SUB + ((v >> e) - SUB)) as usize
    }

    /// The middle of a bucket.
    fn value(index: usize) -> u64 {
        let i = index as u64;
        if i < 2 * SUB {
            return i;
        }
        let e = (i - 2 * SUB) / SUB + 1;
        let m = (i - 2 * SUB) % SUB + SUB;
        (m << e) + (1 << e) / 2
    }

    fn record(&mut self, v: u64) {
        self.counts[Self::index(v)] += 1;
        self.n += 1;
        self.max = self.max.max(v);
    }

    fn merge(&mut self, other: &Hist) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.n += other.n;
        self.max = self.max.max(other.max);
    }

    fn quantile(&self, q: f64) -> u64 {
        if self.n == 0 {
            return 0;
        }
        let rank = ((self.n as f64 * q).ceil() as u64).clamp(1, self.n);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Self::value(i).min(self.max);
            }
        }
        self.max
    }
}

// ------------------------------------------------------------ process stats

fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The 1-minute load average.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .next()
        .unwrap_or("?")
        .to_string()
}

/// Resets VmHWM to the current RSS (Linux ≥ 4.0).
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// User + system CPU seconds of this process.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after ')'.
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz.max(1.0)
}

// ------------------------------------------------------------------- events

/// What one event looks like: a Claude-like stream-json line, parsed as the
/// payload and kept verbatim as `raw`, with its emit time in `t_ns`.
struct EventMaker {
    filler: String,
}

impl EventMaker {
    fn make(&self, seq: u64) -> (String, Value, String) {
        let payload = json!({
            "type": "assistant",
            "seq": seq,
            "t_ns": now_ns(),
            "message": {"content": [{"type": "text", "text": self.filler}]},
        });
        let raw = payload.to_string();
        (format!("assistant text #{seq}"), payload, raw)
    }
}

/// How events are emitted: at `rate`/s (or as fast as possible) for the
/// first `paced`, then as fast as possible (a burst).
#[derive(Clone, Copy)]
struct Schedule {
    rate: Option<f64>,
    paced: u64,
}

impl Schedule {
    fn label(&self, n: u64) -> String {
        match self.rate {
            None => String::new(),
            Some(r) if self.paced >= n => format!(" ({r:.0}/s)"),
            Some(r) => format!(" ({}@{r:.0}/s+burst)", self.paced),
        }
    }
}

/// The first offset counted as part of a burst (see [`SubStats::burst`]).
static BURST_FROM: AtomicU64 = AtomicU64::new(u64::MAX);

/// Calls `emit(seq)` for seq in 1..=n on `schedule`.
/// Returns (first emit, last emit) in `now_ns` time.
fn pace(n: u64, schedule: Schedule, mut emit: impl FnMut(u64)) -> (u64, u64) {
    let start = now_ns();
    for seq in 1..=n {
        if let (Some(rate), true) = (schedule.rate, seq <= schedule.paced) {
            let due = start + ((seq - 1) as f64 * 1e9 / rate) as u64;
            let now = now_ns();
            if due > now {
                std::thread::sleep(Duration::from_nanos(due - now));
            }
        }
        emit(seq);
    }
    (start, now_ns())
}

/// Pulls `t_ns` out of a payload serialized by serde_json, without parsing
/// the rest.
fn t_ns_of(payload_json: &str) -> Option<u64> {
    let at = payload_json.find("\"t_ns\":")? + 7;
    let digits: &str = &payload_json[at..];
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse().ok()
}

// -------------------------------------------------------------- subscribers

/// What one subscriber saw.
struct SubStats {
    hist: Hist,
    /// Latency of the events from `BURST_FROM` on.
    burst: Hist,
    received: u64,
    /// Events not in offset order 1, 2, … (gaps, repeats).
    out_of_order: u64,
    last_ns: u64,
    error: Option<String>,
}

impl SubStats {
    fn new() -> Self {
        SubStats {
            hist: Hist::new(),
            burst: Hist::new(),
            received: 0,
            out_of_order: 0,
            last_ns: 0,
            error: None,
        }
    }

    /// One event: offset 0 is the marker every subscriber gets first.
    fn see(&mut self, offset: u64, t_ns: Option<u64>) {
        let now = now_ns();
        if offset == 0 {
            return;
        }
        if offset != self.received + 1 {
            self.out_of_order += 1;
        }
        self.received += 1;
        self.last_ns = now;
        if let Some(t) = t_ns {
            self.hist.record(now.saturating_sub(t));
            if offset >= BURST_FROM.load(Ordering::Relaxed) {
                self.burst.record(now.saturating_sub(t));
            }
        }
    }
}

/// A gRPC StreamLogs follower from offset 0; says `ready` once it has the
/// marker event (offset 0), so it is following live before emitting starts.
async fn grpc_subscriber(
    channel: Channel,
    execution_id: String,
    ready: mpsc::Sender<()>,
    stop: CancellationToken,
) -> SubStats {
    let mut stats = SubStats::new();
    let mut client = ClaudomatorServiceClient::new(channel).max_decoding_message_size(64 << 20);
    let request = pb::StreamLogsRequest {
        execution_id,
        from_offset: 0,
        follow: true,
        ..Default::default()
    };
    let mut stream = match client.stream_logs(request).await {
        Ok(r) => r.into_inner(),
        Err(e) => {
            stats.error = Some(e.to_string());
            let _ = ready.send(()).await;
            return stats;
        }
    };
    let mut ready = Some(ready);
    loop {
        let next = tokio::select! {
            next = stream.message() => next,
            _ = stop.cancelled() => {
                stats.error = Some("stopped (see the scenario's note)".into());
                break;
            }
        };
        match next {
            Ok(Some(msg)) => {
                let Some(event) = msg.event else { continue };
                stats.see(event.offset, t_ns_of(&event.payload_json));
                if let Some(r) = ready.take() {
                    let _ = r.send(()).await;
                }
            }
            Ok(None) => break,
            Err(e) => {
                stats.error = Some(e.to_string());
                break;
            }
        }
    }
    stats
}

async fn connect(addr: std::net::SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("connects")
}

// ------------------------------------------------------------------ results

struct Figures {
    label: String,
    events: u64,
    subscribers: usize,
    emit: (u64, u64),
    stats: Vec<SubStats>,
    cpu: f64,
    rss_before_kb: u64,
    rss_after_kb: u64,
    rss_peak_kb: u64,
    cut: Cut,
    /// The 1-minute load average at the end (other work on the machine).
    load: String,
    /// Extra line.
    note: String,
}

impl Figures {
    fn hist(&self) -> Hist {
        let mut all = Hist::new();
        for s in &self.stats {
            all.merge(&s.hist);
        }
        all
    }

    fn delivered(&self) -> u64 {
        self.stats.iter().map(|s| s.received).sum()
    }

    /// First emit to the last event received by anyone.
    fn span(&self) -> f64 {
        let last = self.stats.iter().map(|s| s.last_ns).max().unwrap_or(0);
        (last.saturating_sub(self.emit.0)) as f64 / 1e9
    }

    fn delivered_rate(&self) -> f64 {
        self.delivered() as f64 / self.span().max(1e-9)
    }

    fn emit_rate(&self) -> f64 {
        self.events as f64 / ((self.emit.1 - self.emit.0) as f64 / 1e9).max(1e-9)
    }

    fn complete(&self) -> usize {
        self.stats
            .iter()
            .filter(|s| s.received == self.events && s.out_of_order == 0 && s.error.is_none())
            .count()
    }

    fn print(&self) {
        let h = self.hist();
        let ms = |ns: u64| ns as f64 / 1e6;
        println!(
            "{:<26} emit {:>8.0} ev/s  delivered {:>9.0} ev/s total, {:>7.0} ev/s/sub over {:>6.2} s  \
             latency p50 {:>8.3} ms  p99 {:>8.3} ms  max {:>8.3} ms  complete {}/{}  CPU {:>5.1} s  \
             RSS {} -> {} MiB (peak {} MiB)  load {}{}",
            self.label,
            self.emit_rate(),
            self.delivered_rate(),
            self.delivered_rate() / self.subscribers as f64,
            self.span(),
            ms(h.quantile(0.50)),
            ms(h.quantile(0.99)),
            ms(h.max),
            self.complete(),
            self.subscribers,
            self.cpu,
            self.rss_before_kb / 1024,
            self.rss_after_kb / 1024,
            self.rss_peak_kb / 1024,
            self.load,
            match self.cut {
                Cut::No => "",
                Cut::TimedOut => "  CUT: TIMED OUT",
                Cut::RssLimit => "  CUT: RSS GREW PAST BENCH_MAX_RSS_MB",
            },
        );
        if !self.note.is_empty() {
            println!("{:<26} {}", "", self.note);
        }
        let mut burst = Hist::new();
        for s in &self.stats {
            burst.merge(&s.burst);
        }
        if burst.n > 0 {
            println!(
                "{:<26} burst events only: latency p50 {:.3} ms  p99 {:.3} ms  max {:.3} ms",
                "",
                ms(burst.quantile(0.50)),
                ms(burst.quantile(0.99)),
                ms(burst.max)
            );
        }
        let errors: Vec<&String> = self.stats.iter().filter_map(|s| s.error.as_ref()).collect();
        let disorder: u64 = self.stats.iter().map(|s| s.out_of_order).sum();
        if !errors.is_empty() || disorder > 0 {
            println!(
                "{:<26} {} subscriber error(s) (first: {}), {} out-of-order events",
                "",
                errors.len(),
                errors.first().map_or("-", |e| e.as_str()),
                disorder
            );
        }
    }
}

/// Measures around `body`: CPU, RSS before/after, peak RSS.
struct Meter {
    cpu: f64,
    rss_before_kb: u64,
}

impl Meter {
    fn start() -> Self {
        // Hand freed memory back first, so "before" is what is live now.
        // SAFETY: malloc_trim only releases free heap pages.
        unsafe { libc::malloc_trim(0) };
        reset_peak_rss();
        Meter {
            cpu: cpu_seconds(),
            rss_before_kb: status_kb("VmRSS:"),
        }
    }

    fn finish(
        self,
        label: String,
        events: u64,
        subscribers: usize,
        emit: (u64, u64),
        stats: Vec<SubStats>,
        cut: Cut,
    ) -> Figures {
        Figures {
            label,
            events,
            subscribers,
            emit,
            stats,
            cpu: cpu_seconds() - self.cpu,
            rss_before_kb: self.rss_before_kb,
            rss_after_kb: status_kb("VmRSS:"),
            rss_peak_kb: status_kb("VmHWM:"),
            cut,
            load: load_average(),
            note: String::new(),
        }
    }
}

/// Why a scenario was cut short.
#[derive(Clone, Copy, PartialEq)]
enum Cut {
    No,
    TimedOut,
    RssLimit,
}

/// Waits for every subscriber. Past the deadline, or when this process'
/// RSS grows by more than `max_rss_kb` (checked every 10 ms from a thread of its own,
/// so a busy runtime cannot delay it), `stop` is fired: subscribers end and
/// report what they saw, and their streams close, so the server's feeders
/// end too.
async fn collect(
    handles: Vec<tokio::task::JoinHandle<SubStats>>,
    deadline: Instant,
    max_rss_kb: u64,
    stop: CancellationToken,
) -> (Vec<SubStats>, Cut) {
    let done = Arc::new(AtomicBool::new(false));
    let limit = status_kb("VmRSS:") + max_rss_kb;
    let watchdog = {
        let (done, stop) = (done.clone(), stop.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                if Instant::now() > deadline {
                    stop.cancel();
                    return Cut::TimedOut;
                }
                if status_kb("VmRSS:") > limit {
                    stop.cancel();
                    return Cut::RssLimit;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Cut::No
        })
    };
    let mut stats = Vec::new();
    for handle in handles {
        stats.push(handle.await.unwrap_or_else(|e| {
            let mut s = SubStats::new();
            s.error = Some(format!("subscriber panicked: {e}"));
            s
        }));
    }
    done.store(true, Ordering::SeqCst);
    (stats, watchdog.join().unwrap())
}

struct Params {
    events: u64,
    subscribers: usize,
    filler: String,
    timeout: Duration,
    max_rss_kb: u64,
}

// ---------------------------------------------------------------- scenarios

/// Through claudomator: the server's own hub, real StreamLogs clients.
async fn run_hub(
    server: &claudomator::app::Running,
    task: &claudomator::core::model::Task,
    attempt: u32,
    n: u64,
    schedule: Schedule,
    p: &Params,
    channels: &[Channel],
) -> Figures {
    let tasks = server.tasks();
    let execution = Execution::start(task, attempt, AgentType::Claude, "claude-sonnet-4-5");
    tasks
        .store()
        .save_execution(execution.clone())
        .await
        .expect("execution saved");
    let mut writer = tasks.logs().writer(execution.id).expect("log writer");
    writer
        .append(LogKind::System, "start", Value::Null, "")
        .unwrap();

    let meter = Meter::start();
    let stop = CancellationToken::new();
    let (ready_tx, mut ready_rx) = mpsc::channel(p.subscribers);
    let handles: Vec<_> = (0..p.subscribers)
        .map(|i| {
            tokio::spawn(grpc_subscriber(
                channels[i % channels.len()].clone(),
                execution.id.to_string(),
                ready_tx.clone(),
                stop.clone(),
            ))
        })
        .collect();
    drop(ready_tx);
    for _ in 0..p.subscribers {
        ready_rx.recv().await;
    }

    let maker = EventMaker {
        filler: p.filler.clone(),
    };
    let emitter = std::thread::spawn(move || {
        let span = pace(n, schedule, |seq| {
            let (text, payload, raw) = maker.make(seq);
            writer
                .append(LogKind::Text, text, payload, raw)
                .expect("append");
        });
        drop(writer); // the execution's log ends: followers finish
        span
    });
    let deadline = Instant::now() + p.timeout;
    let (stats, cut) = collect(handles, deadline, p.max_rss_kb, stop).await;
    let emit = emitter.join().unwrap();
    let label = format!("claudomator StreamLogs{}", schedule.label(n));
    let log_bytes = std::fs::metadata(tasks.logs().path(execution.id)).map_or(0, |m| m.len());
    let mut figures = meter.finish(label, n, p.subscribers, emit, stats, cut);
    figures.note = format!(
        "log file {:.1} MiB ({} bytes per event on disk)",
        log_bytes as f64 / 1048576.0,
        log_bytes / (n + 1)
    );
    figures
}

/// Baseline: the same events through a bare broadcast to in-process tasks.
async fn run_broadcast(n: u64, schedule: Schedule, p: &Params) -> Figures {
    let meter = Meter::start();
    let stop = CancellationToken::new();
    let (sender, _) = broadcast::channel::<Arc<SharedEvent>>(n as usize + 16);
    let handles: Vec<_> = (0..p.subscribers)
        .map(|_| {
            let mut rx = sender.subscribe();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut stats = SubStats::new();
                loop {
                    let next = tokio::select! {
                        next = rx.recv() => next,
                        _ = stop.cancelled() => break,
                    };
                    match next {
                        Ok(event) => stats.see(event.offset, t_ns_of(&event.payload_json)),
                        Err(broadcast::error::RecvError::Lagged(k)) => stats.out_of_order += k,
                        Err(broadcast::error::RecvError::Closed) => break,
                    }
                }
                stats
            })
        })
        .collect();
    let maker = EventMaker {
        filler: p.filler.clone(),
    };
    let emitter = std::thread::spawn(move || {
        pace(n, schedule, |seq| {
            let (text, payload, raw) = maker.make(seq);
            // Built once per event, shared by the subscribers, as the hub does.
            let _ = sender.send(Arc::new(SharedEvent::new(LogEvent {
                offset: seq,
                at: now_millis(),
                kind: LogKind::Text,
                text,
                payload,
                raw,
            })));
        })
    });
    let deadline = Instant::now() + p.timeout;
    let (stats, cut) = collect(handles, deadline, p.max_rss_kb, stop).await;
    let emit = emitter.join().unwrap();
    let label = format!("bare broadcast{}", schedule.label(n));
    meter.finish(label, n, p.subscribers, emit, stats, cut)
}

/// Baseline server: only `StreamLogs`, fed from a lossless broadcast, one
/// feeder task and a 256-slot channel per subscriber (as the hub), the same
/// conversion to proto, no file and no store.
#[derive(Clone)]
struct BareLogs {
    /// Taken out (and dropped) when emitting ends, so the feeders see the
    /// channel close.
    events: Arc<Mutex<Option<broadcast::Sender<Arc<SharedEvent>>>>>,
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::StreamLogsResponse, Status>> + Send>>;

struct BareStreamLogs(Option<broadcast::Receiver<Arc<SharedEvent>>>);

impl tonic::server::ServerStreamingService<pb::StreamLogsRequest> for BareStreamLogs {
    type Response = pb::StreamLogsResponse;
    type ResponseStream = EventStream;
    type Future = BoxFuture<Response<EventStream>, Status>;

    fn call(&mut self, request: Request<pb::StreamLogsRequest>) -> Self::Future {
        let live = self.0.take();
        let execution_id = request.into_inner().execution_id;
        let (tx, rx) = mpsc::channel::<Result<Arc<SharedEvent>, String>>(256);
        tokio::spawn(async move {
            let marker = Arc::new(SharedEvent::new(LogEvent {
                offset: 0,
                at: now_millis(),
                kind: LogKind::System,
                text: "start".into(),
                payload: Value::Null,
                raw: String::new(),
            }));
            if tx.send(Ok(marker)).await.is_err() {
                return;
            }
            let Some(mut live) = live else { return };
            loop {
                match live.recv().await {
                    Ok(event) => {
                        if tx.send(Ok(event)).await.is_err() {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(k)) => {
                        let _ = tx.send(Err(format!("lagged {k}"))).await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        let stream =
            tokio_stream::StreamExt::map(ReceiverStream::new(rx), move |item| match item {
                Ok(event) => Ok(pb::StreamLogsResponse {
                    event: Some(claudomator::grpc::convert::log_event_to_pb(
                        &execution_id,
                        &event,
                    )),
                }),
                Err(message) => Err(Status::internal(message)),
            });
        Box::pin(async move { Ok::<_, Status>(Response::new(Box::pin(stream) as EventStream)) })
    }
}

impl<B> tonic::codegen::Service<http::Request<B>> for BareLogs
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let live = self.events.lock().unwrap().as_ref().map(|s| s.subscribe());
        let method = BareStreamLogs(live);
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
            Ok::<_, Infallible>(grpc.server_streaming(method, req).await)
        })
    }
}

impl tonic::server::NamedService for BareLogs {
    // The client's path, /claudomator.v1.ClaudomatorService/StreamLogs; every
    // other method of the service is not served here.
    const NAME: &'static str = "claudomator.v1.ClaudomatorService";
}

/// Baseline: a bare tonic server stream of the same messages.
async fn run_bare_tonic(n: u64, schedule: Schedule, p: &Params) -> Figures {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (sender, _) = broadcast::channel::<Arc<SharedEvent>>(n as usize + 16);
    let stop = CancellationToken::new();
    let shared = Arc::new(Mutex::new(Some(sender.clone())));
    let server = tokio::spawn({
        let svc = BareLogs {
            events: shared.clone(),
        };
        let stop = stop.clone();
        Server::builder()
            .add_service(svc)
            .serve_with_incoming_shutdown(
                TcpIncoming::from(listener).with_nodelay(Some(true)),
                async move { stop.cancelled().await },
            )
    });
    let mut channels = Vec::new();
    for _ in 0..p.subscribers {
        channels.push(connect(addr).await);
    }

    let meter = Meter::start();
    let stop_subscribers = CancellationToken::new();
    let (ready_tx, mut ready_rx) = mpsc::channel(p.subscribers);
    let handles: Vec<_> = channels
        .iter()
        .map(|c| {
            tokio::spawn(grpc_subscriber(
                c.clone(),
                "bare".into(),
                ready_tx.clone(),
                stop_subscribers.clone(),
            ))
        })
        .collect();
    drop(ready_tx);
    for _ in 0..p.subscribers {
        ready_rx.recv().await;
    }
    let maker = EventMaker {
        filler: p.filler.clone(),
    };
    let emitter = std::thread::spawn(move || {
        let span = pace(n, schedule, |seq| {
            let (text, payload, raw) = maker.make(seq);
            // Built once per event, shared by the subscribers, as the hub does.
            let _ = sender.send(Arc::new(SharedEvent::new(LogEvent {
                offset: seq,
                at: now_millis(),
                kind: LogKind::Text,
                text,
                payload,
                raw,
            })));
        });
        shared.lock().unwrap().take();
        span
    });
    let deadline = Instant::now() + p.timeout;
    let (stats, cut) = collect(handles, deadline, p.max_rss_kb, stop_subscribers).await;
    let emit = emitter.join().unwrap();
    stop.cancel();
    drop(channels);
    let _ = server.await;
    let label = format!("bare tonic stream{}", schedule.label(n));
    meter.finish(label, n, p.subscribers, emit, stats, cut)
}

/// After a scenario: waits until the process' RSS stops moving (a cut
/// scenario leaves server feeders finishing what they read), handing freed
/// memory back, so the next scenario starts clean. Returns the RSS in KiB.
async fn settle() -> u64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut previous = status_kb("VmRSS:");
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        // SAFETY: malloc_trim only releases free heap pages.
        unsafe { libc::malloc_trim(0) };
        let now = status_kb("VmRSS:");
        if now.abs_diff(previous) < 8 * 1024 || Instant::now() > deadline {
            return now;
        }
        previous = now;
    }
}

/// Keeps a runaway scenario from taking the machine down: this process is
/// the OOM killer's first choice, and its address space is capped (an
/// allocation past the cap aborts the bench, nothing else).
fn protect_the_machine(max_vm_mb: u64) {
    let _ = std::fs::write("/proc/self/oom_score_adj", "1000");
    let limit = libc::rlimit {
        rlim_cur: max_vm_mb << 20,
        rlim_max: max_vm_mb << 20,
    };
    // SAFETY: setrlimit reads the struct it is given.
    unsafe { libc::setrlimit(libc::RLIMIT_AS, &limit) };
}

fn print_ratios(ours: &Figures, bare_tonic: &Figures, broadcast: &Figures) {
    let p99 = |f: &Figures| f.hist().quantile(0.99) as f64 / 1e6;
    println!(
        "ratios: delivered claudomator/bare tonic {:.2}, claudomator/bare broadcast {:.3}; \
         p99 claudomator/bare tonic {:.2}, claudomator/bare broadcast {:.1}",
        ours.delivered_rate() / bare_tonic.delivered_rate(),
        ours.delivered_rate() / broadcast.delivered_rate(),
        p99(ours) / p99(bare_tonic).max(1e-6),
        p99(ours) / p99(broadcast).max(1e-6),
    );
    println!(
        "claudomator p99 {:.3} ms (target < 50 ms: {})",
        p99(ours),
        if p99(ours) < 50.0 && ours.complete() == ours.subscribers {
            "met"
        } else {
            "missed"
        }
    );
}

#[tokio::main]
async fn main() {
    now_ns();
    protect_the_machine(env_number("BENCH_MAX_VM_MB", 16384));
    let p = Params {
        events: env_number("BENCH_EVENTS", 200_000),
        subscribers: env_number("BENCH_SUBSCRIBERS", 100).max(1) as usize,
        filler: "x".repeat(env_number("BENCH_EVENT_BYTES", 200) as usize),
        timeout: Duration::from_secs(env_number("BENCH_TIMEOUT", 300)),
        max_rss_kb: env_number("BENCH_MAX_RSS_MB", 2048) * 1024,
    };
    let rates: Vec<f64> = std::env::var("BENCH_RATES")
        .unwrap_or_else(|_| "20000,500".into())
        .split(',')
        .filter_map(|r| r.trim().parse().ok())
        .collect();
    let rate_seconds = env_number("BENCH_RATE_SECONDS", 10);
    let burst_prefixes: Vec<u64> = std::env::var("BENCH_BURST_PREFIXES")
        .unwrap_or_else(|_| "1000,10000".into())
        .split(',')
        .filter_map(|r| r.trim().parse().ok())
        .collect();
    let burst_rate = env_number("BENCH_BURST_RATE", 500) as f64;
    let burst_events = env_number("BENCH_BURST_EVENTS", 3000);

    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("bench/.git")).unwrap();
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        http_listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().join("data"),
        projects: vec![ProjectConfig::new("bench", dir.path().join("bench"))],
        executor: ExecutorSection {
            enabled: false,
            ..Default::default()
        },
        ..Config::default()
    };
    let rss_start = status_kb("VmRSS:");
    let server = claudomator::app::start(config)
        .await
        .expect("server starts");
    let channel = connect(server.grpc_addr).await;
    let task = ClaudomatorServiceClient::new(channel)
        .submit_task(pb::SubmitTaskRequest {
            spec: Some(pb::TaskSpec {
                instructions: "emit a lot of log events".into(),
                project: "bench".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("submit")
        .into_inner()
        .task
        .unwrap();
    let task = server
        .tasks()
        .store()
        .get_task(task.id.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    // One connection per subscriber, as separate clients would have.
    let mut channels = Vec::new();
    for _ in 0..p.subscribers {
        channels.push(connect(server.grpc_addr).await);
    }
    let sample = EventMaker {
        filler: p.filler.clone(),
    }
    .make(1);
    println!(
        "claudomator log fan-out bench: {} events, {} StreamLogs subscribers (one connection each, \
         follow from offset 0), ~{} bytes per event line, rate-limited runs at {rates:?} ev/s for {rate_seconds} s, {} cores; \
         process RSS {} MiB before the server, {} MiB with it and {} connections; peak RSS reset per scenario: {}",
        p.events,
        p.subscribers,
        sample.2.len(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        rss_start / 1024,
        status_kb("VmRSS:") / 1024,
        p.subscribers,
        if reset_peak_rss() {
            "yes"
        } else {
            "no (peak is since start)"
        },
    );
    let (text, payload, raw) = sample;
    let wire = pb::StreamLogsResponse {
        event: Some(claudomator::grpc::convert::log_event_to_pb(
            &task.id.to_string(),
            &SharedEvent::new(LogEvent {
                offset: 1,
                at: now_millis(),
                kind: LogKind::Text,
                text,
                payload,
                raw,
            }),
        )),
    }
    .encoded_len();
    println!(
        "{wire} bytes per StreamLogsResponse on the wire (the line once, as payload_json with raw_is_payload); load average {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    println!(
        "(latency = emit to receive by the client; RSS and CPU are this whole process: server, clients and emitter)"
    );

    let runs = std::env::var("BENCH_RUNS").unwrap_or_else(|_| "fast,rate,burst".into());
    let transports =
        std::env::var("BENCH_TRANSPORTS").unwrap_or_else(|_| "claudomator,tonic,broadcast".into());
    let mut attempt = 0;
    let fast = Schedule {
        rate: None,
        paced: 0,
    };
    let mut plan = vec![("fast", fast, p.events)];
    for rate in &rates {
        let n = ((rate * rate_seconds as f64) as u64).clamp(1, p.events);
        let schedule = Schedule {
            rate: Some(*rate),
            paced: n,
        };
        plan.push(("rate", schedule, n));
    }
    for prefix in &burst_prefixes {
        let schedule = Schedule {
            rate: Some(burst_rate),
            paced: *prefix,
        };
        plan.push(("burst", schedule, prefix + burst_events));
    }
    for (name, schedule, n) in plan {
        if !runs.split(',').any(|r| r == name) {
            continue;
        }
        BURST_FROM.store(u64::MAX, Ordering::Relaxed);
        match schedule.rate {
            None => println!("\n== as fast as possible: {n} events"),
            Some(rate) if schedule.paced >= n => {
                println!("\n== rate-limited at {rate:.0} ev/s: {n} events")
            }
            Some(rate) => {
                BURST_FROM.store(schedule.paced + 1, Ordering::Relaxed);
                println!(
                    "\n== {} events at {rate:.0} ev/s, then a burst of {} as fast as possible \
                     (a catch-up after a long live follow)",
                    schedule.paced,
                    n - schedule.paced
                )
            }
        }
        let mut ours = None;
        let mut tonic = None;
        let mut bcast = None;
        for transport in transports.split(',') {
            let figures = match transport {
                "claudomator" => {
                    attempt += 1;
                    &*ours
                        .insert(run_hub(&server, &task, attempt, n, schedule, &p, &channels).await)
                }
                "tonic" => &*tonic.insert(run_bare_tonic(n, schedule, &p).await),
                "broadcast" => &*bcast.insert(run_broadcast(n, schedule, &p).await),
                other => {
                    println!("unknown transport {other} (claudomator, tonic, broadcast)");
                    continue;
                }
            };
            figures.print();
            // Let what a cut scenario left behind finish before the next.
            let rss = settle().await;
            if figures.cut != Cut::No {
                println!(
                    "{:<26} RSS {} MiB once the server's feeders wound down",
                    "",
                    rss / 1024
                );
            }
        }
        if let (Some(ours), Some(tonic), Some(bcast)) = (&ours, &tonic, &bcast) {
            print_ratios(ours, tonic, bcast);
        }
    }
    drop(channels);
    server.stop().await.expect("clean shutdown");
}
