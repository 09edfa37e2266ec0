//! The local-model path's own overhead: each operation (classify,
//! Elaborate; more can be added to `main`) timed end to end through
//! claudomator's code against the real llama.cpp server, beside a raw
//! `POST /chat/completions` of the very same request body with a bare
//! reqwest client, in the same run. The two are interleaved sample by
//! sample, so both see the same server and machine; requests use
//! temperature 0, so the server generates the same answer both ways. Prints p50/p99 of each and the ratio (target ≤ 1.05);
//! asserts nothing.
//!
//! `cargo bench --bench local_model` (it starts `../shared/tools/local-llm`
//! unless CLAUDOMATOR_BENCH_LOCAL_LLM names an endpoint; BENCH_SAMPLES sets
//! the samples per side, default 30; BENCH_CASES=classify runs only those).

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use claudomator::core::classify::{AgentState, classify, classify_request};
use claudomator::core::elaborate::{
    ElaborateConfig, ElaborateRequest, ElaborateSource, Elaborator,
};
use claudomator::core::llm::ChatModel;
use claudomator::core::model::{AgentType, SubmitRequest, Task, TaskSpec, now_millis};
use claudomator::llm::{ClientSettings, OpenAiClient};

type Timed<'a> = Pin<Box<dyn Future<Output = ()> + 'a>>;

/// One operation to measure: through claudomator, and the raw request body
/// that path sends.
struct Case<'a> {
    name: &'static str,
    body: serde_json::Value,
    through_claudomator: Box<dyn Fn() -> Timed<'a> + 'a>,
}

fn endpoint() -> String {
    if let Ok(endpoint) = std::env::var("CLAUDOMATOR_BENCH_LOCAL_LLM") {
        return endpoint;
    }
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/tools/local-llm");
    let out = std::process::Command::new(&script)
        .arg("start")
        .output()
        .expect("runs local-llm");
    assert!(
        out.status.success(),
        "local-llm start: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn task() -> Task {
    let request = SubmitRequest {
        spec: TaskSpec {
            name: "fix flaky test".into(),
            instructions: "The test `retries_on_503` in tests/client.rs fails about one run in \
                           ten on CI with a timeout. Find out why and make it reliable without \
                           slowing the suite."
                .into(),
            project: "demo".into(),
            ..TaskSpec::default()
        },
        ..SubmitRequest::default()
    };
    let rules = claudomator::core::validate::TaskRules {
        projects: vec!["demo".into()],
        ..Default::default()
    };
    claudomator::core::validate::validate(&request, &rules).expect("valid task")
}

fn states() -> Vec<AgentState> {
    let free = |agent, running| AgentState {
        agent,
        unavailable: None,
        running,
        max_concurrent: 2,
        limited_until: None,
        models: Vec::new(),
    };
    vec![
        AgentState {
            models: vec!["claude-sonnet-4-5".into()],
            ..free(AgentType::Claude, 1)
        },
        AgentState {
            limited_until: Some(now_millis() + 600_000),
            ..free(AgentType::Codex, 0)
        },
        AgentState {
            unavailable: Some("the `gemini` CLI is not installed".into()),
            ..free(AgentType::Gemini, 0)
        },
        free(AgentType::Local, 0),
    ]
}

const ORDER: [AgentType; 4] = [
    AgentType::Claude,
    AgentType::Codex,
    AgentType::Gemini,
    AgentType::Local,
];

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let samples: usize = std::env::var("BENCH_SAMPLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let endpoint = endpoint();
    let mut settings = ClientSettings::new(&endpoint);
    settings.timeout = Duration::from_secs(120);
    let client = OpenAiClient::new(settings).expect("client");
    let raw = reqwest::Client::new();
    let url = format!("{}/chat/completions", endpoint.trim_end_matches('/'));

    let task = task();
    let states = states();
    let free = [AgentType::Claude, AgentType::Local];
    let timeout = Duration::from_secs(120);
    let classify_body =
        client.request_body(&classify_request(&task, &states, &free, timeout), false);
    // Elaborate with the local model and no agent CLIs: the local path, then
    // (when the tiny model's answer is no valid spec) the template at once.
    let elaborator = Elaborator::new(
        claudomator::core::validate::TaskRules {
            projects: vec!["demo".into()],
            ..Default::default()
        },
        Some(std::sync::Arc::new(client.clone())),
        Vec::new(),
        ElaborateConfig::new(std::env::temp_dir(), Default::default()),
        tokio_util::sync::CancellationToken::new(),
    );
    let elaborate_request = ElaborateRequest {
        text: "add a --json flag to the list command".into(),
        project: "demo".into(),
        agent: String::new(),
    };
    let elaborate_body = client.request_body(
        &elaborator
            .local_model_request(&elaborate_request)
            .expect("a valid request"),
        false,
    );
    let cases = vec![
        Case {
            name: "classify",
            body: classify_body,
            through_claudomator: Box::new(|| {
                Box::pin(async {
                    let model: &dyn ChatModel = &client;
                    let choice = classify(Some(model), &task, &states, &ORDER, timeout).await;
                    assert!(choice.is_some(), "an agent can start");
                })
            }),
        },
        Case {
            name: "elaborate",
            body: elaborate_body,
            through_claudomator: Box::new(|| {
                Box::pin(async {
                    let done = elaborator
                        .elaborate(elaborate_request.clone())
                        .await
                        .expect("a spec");
                    assert!(
                        matches!(
                            done.source,
                            ElaborateSource::LocalModel | ElaborateSource::Template
                        ),
                        "{:?}",
                        done.source
                    );
                })
            }),
        },
    ];

    println!("local model at {endpoint}; {samples} samples per side, interleaved");
    let only = std::env::var("BENCH_CASES").ok();
    for case in cases {
        if let Some(only) = &only
            && !only.split(',').any(|name| name.trim() == case.name)
        {
            continue;
        }
        let raw_call = || async {
            let response = raw
                .post(&url)
                .json(&case.body)
                .send()
                .await
                .expect("raw request");
            assert!(response.status().is_success(), "{}", response.status());
            response.text().await.expect("raw body");
        };
        // Warm up both paths (connections, the server's prompt cache).
        for _ in 0..2 {
            raw_call().await;
            (case.through_claudomator)().await;
        }
        let mut raw_times = Vec::with_capacity(samples);
        let mut ours = Vec::with_capacity(samples);
        for i in 0..samples {
            // Alternate which goes first, so neither always follows the other.
            for first_raw in [i % 2 == 0, i % 2 != 0] {
                let started = Instant::now();
                if first_raw {
                    raw_call().await;
                    raw_times.push(started.elapsed());
                } else {
                    (case.through_claudomator)().await;
                    ours.push(started.elapsed());
                }
            }
        }
        // Paired: each sample against its neighbour on the other side, so
        // drift in the machine's load cancels out.
        let mut pair_ratios: Vec<f64> = ours
            .iter()
            .zip(&raw_times)
            .map(|(o, r)| o.as_secs_f64() / r.as_secs_f64())
            .collect();
        pair_ratios.sort_by(f64::total_cmp);
        let mut pair_overheads: Vec<f64> = ours
            .iter()
            .zip(&raw_times)
            .map(|(o, r)| ms(*o) - ms(*r))
            .collect();
        pair_overheads.sort_by(f64::total_cmp);
        raw_times.sort();
        ours.sort();
        let (raw50, raw99) = (percentile(&raw_times, 0.5), percentile(&raw_times, 0.99));
        let (our50, our99) = (percentile(&ours, 0.5), percentile(&ours, 0.99));
        println!(
            "{:<10} raw /chat/completions  p50 {:>8.1} ms  p99 {:>8.1} ms",
            case.name,
            ms(raw50),
            ms(raw99)
        );
        println!(
            "{:<10} through claudomator    p50 {:>8.1} ms  p99 {:>8.1} ms",
            case.name,
            ms(our50),
            ms(our99)
        );
        println!(
            "{:<10} ratio (ours / raw)     p50 {:>8.3}     p99 {:>8.3}     (target <= 1.05)",
            case.name,
            our50.as_secs_f64() / raw50.as_secs_f64(),
            our99.as_secs_f64() / raw99.as_secs_f64()
        );
        println!(
            "{:<10} paired median ratio {:.3}, median overhead {:+.1} ms per call",
            case.name,
            pair_ratios[pair_ratios.len() / 2],
            pair_overheads[pair_overheads.len() / 2]
        );
    }
}
