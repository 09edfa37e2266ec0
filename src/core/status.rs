//! What `doctor` shows and the scheduler relies on: which agents can run
//! here (CLI found, version, credentials), how busy each is, which are set
//! aside and until when, and whether git, the data dir and the database work.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use super::CoreResult;
use super::model::{AgentType, TaskState, UnixMillis};
use super::tasks::TaskService;
use crate::runners::{AgentProbe, PriceTable, Runner};

/// One check: whether it is fine, and the detail a person needs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Check {
    pub ok: bool,
    pub detail: String,
}

#[derive(Clone, Debug)]
pub struct AgentStatus {
    pub agent: AgentType,
    pub probe: AgentProbe,
    pub running: usize,
    /// Queued tasks that name this agent.
    pub queued: u64,
    /// This agent's own cap (the global cap when it has none).
    pub max_concurrent: usize,
    /// Set aside after a rate limit or a spent quota, until then.
    pub limited_until: Option<UnixMillis>,
}

#[derive(Clone, Debug)]
pub struct SystemStatus {
    pub version: String,
    pub executor_enabled: bool,
    pub max_concurrent: usize,
    pub running: usize,
    pub queued: u64,
    /// Queued tasks with agent `auto`.
    pub queued_auto: u64,
    pub agents: Vec<AgentStatus>,
    pub git: Check,
    pub data_dir: Check,
    pub database: Check,
    pub local_model: Check,
    /// Webhook notifications: off, or how they have fared.
    pub notifications: Check,
    /// The servers sharing the database (seen within a lease) and the
    /// agents each runs.
    pub cluster: Check,
    /// Whether agents get an OS sandbox on this machine.
    pub isolation: Check,
    /// Whether every model whose cost is estimated has a price; if not,
    /// which, and the `[prices]` line to add.
    pub prices: Check,
    /// Each project's GitHub credentials: who, and whether they may push
    /// and open pull requests (what is missing if not).
    pub github: Vec<super::codehost::HostCheck>,
}

/// The settings the report names.
#[derive(Clone, Debug)]
pub struct StatusConfig {
    pub data_dir: PathBuf,
    pub executor_enabled: bool,
    pub max_concurrent: usize,
    pub agent_limits: HashMap<AgentType, usize>,
    /// This server's id, and how recently a server must have announced
    /// itself to count as alive (the lease).
    pub server_id: String,
    pub lease: std::time::Duration,
    /// USD per million tokens by model (`[prices]`).
    pub prices: Arc<PriceTable>,
    /// The models configured for agents that report no cost (their cost is
    /// estimated from `prices`).
    pub estimated_models: Vec<(AgentType, String)>,
}

#[derive(Clone)]
pub struct StatusService {
    tasks: TaskService,
    runners: Vec<Arc<dyn Runner>>,
    config: StatusConfig,
    code_hosts: super::codehost::CodeHosts,
}

impl StatusService {
    pub fn new(tasks: TaskService, runners: Vec<Arc<dyn Runner>>, config: StatusConfig) -> Self {
        StatusService {
            tasks,
            runners,
            config,
            code_hosts: Default::default(),
        }
    }

    /// The projects' code hosts, whose credentials the report checks.
    pub fn with_code_hosts(mut self, code_hosts: super::codehost::CodeHosts) -> Self {
        self.code_hosts = code_hosts;
        self
    }

    pub async fn status(&self) -> CoreResult<SystemStatus> {
        let activity = self.tasks.activity();
        let (queued_counts, database) =
            match self.tasks.store().count_by_agent(TaskState::Queued).await {
                Ok(counts) => (
                    counts,
                    Check {
                        ok: true,
                        detail: "reachable".into(),
                    },
                ),
                Err(e) => (
                    Vec::new(),
                    Check {
                        ok: false,
                        detail: e.to_string(),
                    },
                ),
            };
        let queued_of = |name: &str| {
            queued_counts
                .iter()
                .filter(|(agent, _)| agent == name)
                .map(|(_, n)| *n as u64)
                .sum::<u64>()
        };
        let probes = probe_in_order(self.runners.iter().map(|r| r.probe())).await;
        let agents = self
            .runners
            .iter()
            .zip(probes)
            .map(|(runner, probe)| {
                let agent = runner.agent();
                AgentStatus {
                    agent,
                    probe,
                    running: activity.running_of(agent),
                    queued: queued_of(agent.as_str()),
                    max_concurrent: self
                        .config
                        .agent_limits
                        .get(&agent)
                        .copied()
                        .unwrap_or(self.config.max_concurrent),
                    limited_until: activity.limited_until(agent),
                }
            })
            .collect::<Vec<AgentStatus>>();
        // The `local` agent's probe is the endpoint's reachability.
        let local_model = agents
            .iter()
            .find(|a| a.agent == AgentType::Local)
            .map(|a| Check {
                ok: a.probe.available,
                detail: a.probe.detail.clone(),
            })
            .unwrap_or(Check {
                ok: false,
                detail: "no [local_model] endpoint configured".into(),
            });
        Ok(SystemStatus {
            version: env!("CARGO_PKG_VERSION").to_string(),
            executor_enabled: self.config.executor_enabled,
            max_concurrent: self.config.max_concurrent,
            running: activity.running_count(),
            queued: queued_counts.iter().map(|(_, n)| *n as u64).sum(),
            queued_auto: queued_of(AgentType::Auto.as_str()),
            agents,
            git: git_check().await,
            data_dir: writable(&self.config.data_dir),
            database: Check {
                detail: format!("{} ({})", self.tasks.store().description(), database.detail),
                ..database
            },
            local_model,
            notifications: notifications_check(self.tasks.event_sink()),
            cluster: self.cluster_check().await,
            isolation: isolation_check().await,
            prices: self.prices_check().await,
            github: self.code_hosts.check_all().await,
        })
    }

    /// The models configured for agents that report no cost and those of
    /// executions whose cost was unknown, that the price table still lacks,
    /// each with the line to add.
    async fn prices_check(&self) -> Check {
        let mut wanted = self.config.estimated_models.clone();
        match self.tasks.store().unknown_cost_models().await {
            Ok(seen) => wanted.extend(seen),
            Err(e) => {
                return Check {
                    ok: false,
                    detail: e.to_string(),
                };
            }
        }
        wanted.retain(|(_, model)| !model.is_empty() && !self.config.prices.contains_key(model));
        wanted.sort_by(|a, b| (a.1.as_str(), a.0.as_str()).cmp(&(b.1.as_str(), b.0.as_str())));
        wanted.dedup();
        if wanted.is_empty() {
            return Check {
                ok: true,
                detail: format!(
                    "every model in use has a price ({} priced)",
                    self.config.prices.len()
                ),
            };
        }
        let missing: Vec<String> = wanted
            .iter()
            .map(|(agent, model)| {
                format!(
                    "no price for model {model} ({agent}), so its cost shows as unknown: add \
                     under [prices] in the config the line {} with its USD per million input \
                     and output tokens",
                    crate::runners::price_line(model)
                )
            })
            .collect();
        Check {
            ok: false,
            detail: missing.join("; "),
        }
    }

    /// Why no live server can run `agent` now, if none can: not this one
    /// (its CLI missing, or no executor here) and no other seen within a
    /// lease announced it. For `auto`: no agent at all.
    pub async fn agent_unavailable(&self, agent: AgentType) -> CoreResult<Option<String>> {
        let here: Vec<(AgentType, Option<String>)> = self
            .runners
            .iter()
            .filter(|r| agent == AgentType::Auto || r.agent() == agent)
            .map(|r| (r.agent(), r.unavailable()))
            .collect();
        if self.config.executor_enabled && here.iter().any(|(_, why)| why.is_none()) {
            return Ok(None);
        }
        let since = super::model::now_millis() - self.config.lease.as_millis() as i64;
        let others: Vec<(String, Vec<AgentType>)> = self
            .tasks
            .store()
            .servers_seen_since(since)
            .await?
            .into_iter()
            .filter(|(id, _)| *id != self.config.server_id)
            .collect();
        let runs_it = |agents: &[AgentType]| {
            agents
                .iter()
                .any(|a| agent == AgentType::Auto || *a == agent)
        };
        if others.iter().any(|(_, agents)| runs_it(agents)) {
            return Ok(None);
        }
        let local = if !self.config.executor_enabled {
            "this server runs no tasks (its executor is off)".to_string()
        } else if here.is_empty() {
            format!("this server has no {agent} agent configured")
        } else {
            let reasons: Vec<String> = here
                .into_iter()
                .filter_map(|(a, why)| why.map(|why| format!("{a}: {why}")))
                .collect();
            format!("here {}", reasons.join("; "))
        };
        let elsewhere = if others.is_empty() {
            "no other live server shares the database".to_string()
        } else {
            let listed: Vec<String> = others
                .iter()
                .map(|(id, agents)| {
                    let names: Vec<&str> = agents.iter().map(|a| a.as_str()).collect();
                    format!("{id} ({})", names.join(", "))
                })
                .collect();
            format!("the other live servers run none: {}", listed.join(", "))
        };
        let what = match agent {
            AgentType::Auto => "any agent".to_string(),
            _ => format!("agent {agent}"),
        };
        Ok(Some(format!(
            "no live server can run {what} now: {local}; {elsewhere}"
        )))
    }

    /// "this server a; 2 servers …: a (claude, local), b (gemini)".
    async fn cluster_check(&self) -> Check {
        let lease = self.config.lease;
        let since = super::model::now_millis() - lease.as_millis() as i64;
        match self.tasks.store().servers_seen_since(since).await {
            Ok(servers) => {
                let listed: Vec<String> = servers
                    .iter()
                    .map(|(id, agents)| {
                        let names: Vec<&str> = agents.iter().map(|a| a.as_str()).collect();
                        format!("{id} ({})", names.join(", "))
                    })
                    .collect();
                Check {
                    ok: true,
                    detail: format!(
                        "this server is {}; {} server(s) seen within {}: {}",
                        self.config.server_id,
                        servers.len(),
                        humantime::format_duration(lease),
                        listed.join(", ")
                    ),
                }
            }
            Err(e) => Check {
                ok: false,
                detail: e.to_string(),
            },
        }
    }
}

/// Off, or what became of the notifications since the server started: fine
/// while none failed or was dropped.
async fn isolation_check() -> Check {
    match crate::runners::confine::os_sandbox().await {
        Ok(bwrap) => Check {
            ok: true,
            detail: format!("agents run in an OS sandbox ({})", bwrap.display()),
        },
        Err(why) => Check {
            ok: false,
            detail: format!(
                "agents run WITHOUT an OS sandbox: {why}; tasks whose project or agent \
                 says isolation = \"sandbox\" or network = \"none\" fail"
            ),
        },
    }
}

fn notifications_check(sink: Option<&super::events::EventSink>) -> Check {
    let Some(sink) = sink else {
        return Check {
            ok: true,
            detail: "off (no [notifications] url)".into(),
        };
    };
    let stats = sink.stats();
    let mut detail = format!(
        "{} delivered, {} not delivered, {} dropped (queue full)",
        stats.delivered, stats.failed, stats.dropped
    );
    if !stats.last_failure.is_empty() {
        detail.push_str(&format!("; last failure: {}", stats.last_failure));
    }
    Check {
        ok: stats.failed == 0 && stats.dropped == 0,
        detail,
    }
}

/// Runs the probes one after another (they are few and quick), keeping order.
async fn probe_in_order<F: std::future::Future<Output = AgentProbe>>(
    probes: impl Iterator<Item = F>,
) -> Vec<AgentProbe> {
    let mut out = Vec::new();
    for probe in probes {
        out.push(probe.await);
    }
    out
}

async fn git_check() -> Check {
    match tokio::process::Command::new("git")
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .output()
        .await
    {
        Ok(out) if out.status.success() => Check {
            ok: true,
            detail: String::from_utf8_lossy(&out.stdout).trim().to_string(),
        },
        Ok(out) => Check {
            ok: false,
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        },
        Err(e) => Check {
            ok: false,
            detail: format!("git is not installed ({e}); sandboxes need it"),
        },
    }
}

fn writable(dir: &std::path::Path) -> Check {
    let probe = dir.join(format!(".doctor-{}", std::process::id()));
    let result = std::fs::create_dir_all(dir)
        .and_then(|_| std::fs::write(&probe, b"ok"))
        .and_then(|_| std::fs::remove_file(&probe));
    match result {
        Ok(()) => Check {
            ok: true,
            detail: format!("{} is writable", dir.display()),
        },
        Err(e) => Check {
            ok: false,
            detail: format!("{} is not writable: {e}", dir.display()),
        },
    }
}
