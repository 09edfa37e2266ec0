//! `claudomator run FILE`: submits a file of tasks that may depend on each
//! other by names local to the file.
//!
//! The file is checked whole before anything is sent: every task parses
//! (the fields of a task spec, plus `id` and `idempotency_key`; anything else
//! is an error), names are unique, every `depends_on` entry is a task of the
//! file or a task id the server knows, the file's tasks form no cycle, and
//! each task passes the server's field checks. Then each task gets an id of
//! the client's choosing and is submitted after the tasks it depends on,
//! which so name it by id.
//!
//! Idempotency: a task's key is `run:<h>:<name>`, where `<h>` is the 128-bit
//! FNV-1a hash of the file's bytes (32 hex digits) and `<name>` its local
//! name (`#N`, its 1-based position, when it has none); an explicit
//! `idempotency_key` replaces it. Running the same file again therefore
//! returns the tasks submitted the first time (and submits those a failed
//! first run did not reach) instead of creating new ones; changing the file
//! in any way, even a comment, makes a new batch.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use tonic::Code;

use super::client::{Client, Failure, connect, decode_task, usage};
use super::logs::{self, get_task, is_stopped, outcome_code, severity};
use super::{Connection, exit, output};
use crate::core::model::{Id, SubmitRequest, Task, TaskSpec, now_millis};
use crate::core::validate::{TaskRules, validate};
use crate::grpc::convert::spec_to_pb;
use crate::proto as pb;

/// How often `--wait` looks at the tasks.
const POLL: Duration = Duration::from_millis(300);
/// Local names are at most this long, so that keys stay within the server's
/// 200-character limit.
const MAX_NAME_CHARS: usize = 100;

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The task file: .yaml/.yml, .json, or else TOML.
    pub file: PathBuf,
    /// Wait until every task stops, then exit with the worst outcome: 10
    /// failed, 11 timed out, 12 budget exceeded, 14 blocked, 13 cancelled
    /// (in that order); 0 when all completed (or are ready for review).
    #[arg(long)]
    pub wait: bool,
    #[command(flatten)]
    pub connection: Connection,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Yaml,
    Toml,
    Json,
}

impl Format {
    fn of(path: &Path) -> Format {
        match path.extension().and_then(|e| e.to_str()) {
            Some("yaml" | "yml") => Format::Yaml,
            Some("json") => Format::Json,
            _ => Format::Toml,
        }
    }
}

/// A task as the file writes it.
#[derive(Debug)]
struct Written {
    /// `id`, or `#N` by position.
    name: String,
    spec: TaskSpec,
    idempotency_key: Option<String>,
}

/// Reads the list of tasks out of a file's text.
fn parse(text: &str, format: Format) -> Result<Vec<Written>, String> {
    let value: serde_json::Value = match format {
        Format::Yaml => serde_norway::from_str(text).map_err(|e| e.to_string())?,
        Format::Toml => toml::from_str(text).map_err(|e| e.to_string())?,
        Format::Json => serde_json::from_str(text).map_err(|e| e.to_string())?,
    };
    let items = match value {
        serde_json::Value::Array(items) => items,
        serde_json::Value::Object(mut top) => {
            let tasks = top.remove("tasks");
            if let Some(other) = top.keys().next() {
                return Err(format!(
                    "unknown top-level key `{other}`; the file holds `tasks` only"
                ));
            }
            match tasks {
                Some(serde_json::Value::Array(items)) => items,
                Some(_) => return Err("`tasks` must be a list of tasks".into()),
                None => Vec::new(),
            }
        }
        serde_json::Value::Null => Vec::new(),
        _ => return Err("expected a list of tasks, or `tasks:` holding one".into()),
    };
    if items.is_empty() {
        return Err("no tasks in the file".into());
    }
    let mut written = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let position = format!("#{}", i + 1);
        let serde_json::Value::Object(mut fields) = item else {
            return Err(format!("task {position}: expected the fields of a task"));
        };
        let name = match fields.remove("id") {
            None => position.clone(),
            Some(serde_json::Value::String(name)) => {
                let name = name.trim().to_string();
                if name.is_empty()
                    || name.chars().count() > MAX_NAME_CHARS
                    || name.chars().any(char::is_control)
                {
                    return Err(format!(
                        "task {position}: `id` must be a name of 1 to {MAX_NAME_CHARS} characters on one line"
                    ));
                }
                name
            }
            Some(_) => return Err(format!("task {position}: `id` must be a string")),
        };
        let idempotency_key = match fields.remove("idempotency_key") {
            None => None,
            Some(serde_json::Value::String(key)) => Some(key),
            Some(_) => {
                return Err(format!("task `{name}`: `idempotency_key` must be a string"));
            }
        };
        let spec: TaskSpec = serde_json::from_value(serde_json::Value::Object(fields))
            .map_err(|e| format!("task `{name}`: {e}"))?;
        written.push(Written {
            name,
            spec,
            idempotency_key,
        });
    }
    Ok(written)
}

/// The 128-bit FNV-1a hash of `bytes`, as 32 hex digits.
fn content_hash(bytes: &[u8]) -> String {
    const OFFSET_BASIS: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013b;
    let hash = bytes.iter().fold(OFFSET_BASIS, |hash, byte| {
        (hash ^ u128::from(*byte)).wrapping_mul(PRIME)
    });
    format!("{hash:032x}")
}

/// What a `depends_on` entry names.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Dep {
    /// Another task of the file, by index.
    Local(usize),
    /// A task already on the server.
    Existing(String),
}

/// A task ready to submit.
#[derive(Debug)]
struct Entry {
    name: String,
    spec: TaskSpec,
    key: String,
    deps: Vec<Dep>,
}

/// The file's tasks, checked, and the order to submit them in.
#[derive(Debug)]
struct Plan {
    entries: Vec<Entry>,
    order: Vec<usize>,
}

/// Resolves names, derives keys and orders the tasks; every problem found,
/// one per line.
fn plan(written: Vec<Written>, hash: &str) -> Result<Plan, String> {
    let mut problems = Vec::new();
    let mut by_name: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, w) in written.iter().enumerate() {
        by_name.entry(w.name.as_str()).or_default().push(i);
    }
    let mut duplicates: Vec<(&str, &Vec<usize>)> = by_name
        .iter()
        .filter(|(_, at)| at.len() > 1)
        .map(|(name, at)| (*name, at))
        .collect();
    duplicates.sort_by_key(|(_, at)| at[0]);
    for (name, at) in duplicates {
        let positions: Vec<String> = at.iter().map(|i| format!("#{}", i + 1)).collect();
        problems.push(format!(
            "the name `{name}` is used by more than one task ({})",
            positions.join(", ")
        ));
    }

    let mut entries = Vec::new();
    for w in &written {
        let mut deps = Vec::new();
        for dep in &w.spec.depends_on {
            let dep = dep.trim();
            if let Some(at) = by_name.get(dep) {
                deps.push(Dep::Local(at[0]));
            } else if dep.parse::<Id>().is_ok() {
                deps.push(Dep::Existing(dep.to_string()));
            } else {
                problems.push(format!(
                    "task `{}` depends on `{dep}`, which is neither a task of this file nor a task id",
                    w.name
                ));
            }
        }
        entries.push(Entry {
            name: w.name.clone(),
            spec: w.spec.clone(),
            key: w
                .idempotency_key
                .clone()
                .unwrap_or_else(|| format!("run:{hash}:{}", w.name)),
            deps,
        });
    }
    if !problems.is_empty() {
        return Err(problems.join("\n"));
    }
    let order = topological_order(&entries).map_err(|cycle| {
        let names: Vec<String> = cycle
            .iter()
            .map(|i| format!("`{}`", entries[*i].name))
            .collect();
        format!(
            "dependency cycle among the file's tasks: {} (each depends on the next)",
            names.join(" → ")
        )
    })?;
    Ok(Plan { entries, order })
}

fn local_deps(entry: &Entry) -> impl Iterator<Item = usize> + '_ {
    entry.deps.iter().filter_map(|d| match d {
        Dep::Local(i) => Some(*i),
        Dep::Existing(_) => None,
    })
}

/// Every task after the tasks it depends on, otherwise in file order; or a
/// cycle, as the indices along it with the first repeated at the end.
fn topological_order(entries: &[Entry]) -> Result<Vec<usize>, Vec<usize>> {
    let mut waiting_on: Vec<BTreeSet<usize>> =
        entries.iter().map(|e| local_deps(e).collect()).collect();
    let mut ready: BTreeSet<usize> = (0..entries.len())
        .filter(|i| waiting_on[*i].is_empty())
        .collect();
    let mut order = Vec::new();
    while let Some(next) = ready.pop_first() {
        order.push(next);
        for (i, deps) in waiting_on.iter_mut().enumerate() {
            if deps.remove(&next) && deps.is_empty() {
                ready.insert(i);
            }
        }
    }
    if order.len() == entries.len() {
        return Ok(order);
    }
    // Every task left waits on another task left: walking from one to a
    // dependency it waits on must come back around.
    let start = (0..entries.len())
        .find(|i| !waiting_on[*i].is_empty())
        .expect("a task is left");
    let mut path = vec![start];
    loop {
        let here = *path.last().expect("non-empty");
        let dep = *waiting_on[here].first().expect("it waits on a task");
        if let Some(at) = path.iter().position(|i| *i == dep) {
            let mut cycle = path.split_off(at);
            cycle.push(dep);
            return Err(cycle);
        }
        path.push(dep);
    }
}

/// Ids for every task, and each spec as it will be sent, run through the
/// server's field checks with limits that only the server knows left open:
/// a mistake in any task stops the batch before anything is sent.
fn check_fields(plan: &Plan, ids: &[Id]) -> Result<(), String> {
    let mut problems = Vec::new();
    for (i, entry) in plan.entries.iter().enumerate() {
        let project = entry.spec.project.trim();
        let rules = TaskRules {
            projects: vec![
                if project.is_empty() {
                    "default"
                } else {
                    project
                }
                .to_string(),
            ],
            max_instructions_bytes: usize::MAX,
            max_timeout: Duration::MAX,
            max_attempts_limit: u32::MAX,
            ..TaskRules::default()
        };
        let request = SubmitRequest {
            spec: spec_with_ids(entry, ids),
            idempotency_key: entry.key.clone(),
            task_id: ids[i].to_string(),
        };
        if let Err(e) = validate(&request, &rules) {
            problems.push(format!("task `{}`: {e}", entry.name));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}

/// The entry's spec with its dependencies as task ids.
fn spec_with_ids(entry: &Entry, ids: &[Id]) -> TaskSpec {
    let mut spec = entry.spec.clone();
    spec.depends_on = entry
        .deps
        .iter()
        .map(|d| match d {
            Dep::Local(i) => ids[*i].to_string(),
            Dep::Existing(id) => id.clone(),
        })
        .collect();
    spec
}

/// One task of the batch as the server has it.
struct Submitted {
    name: String,
    task: Task,
    created: bool,
}

pub async fn run(args: RunArgs) -> Result<(), Failure> {
    let path = &args.file;
    let bytes =
        std::fs::read(path).map_err(|e| usage(format!("cannot read {}: {e}", path.display())))?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|e| usage(format!("{}: not UTF-8 text: {e}", path.display())))?;
    let written = parse(text, Format::of(path))
        .map_err(|e| usage(format!("{}: nothing submitted:\n{e}", path.display())))?;
    let plan = plan(written, &content_hash(&bytes))
        .map_err(|e| usage(format!("{}: nothing submitted:\n{e}", path.display())))?;
    // Ids that sort in submission order, as server-chosen ones would (ids
    // made in the same millisecond are otherwise in random order).
    let mut fresh: Vec<Id> = plan.entries.iter().map(|_| Id::new()).collect();
    fresh.sort();
    let mut ids = fresh.clone();
    for (i, id) in plan.order.iter().zip(fresh) {
        ids[*i] = id;
    }
    check_fields(&plan, &ids)
        .map_err(|e| usage(format!("{}: nothing submitted:\n{e}", path.display())))?;

    let mut client = connect(&args.connection).await?;
    check_existing_deps(&mut client, &plan, path).await?;

    // The ids the server actually holds: a task submitted by an earlier run
    // of the same file keeps its first id, and its dependents name that one.
    let mut actual = ids.clone();
    let mut submitted: Vec<Option<Submitted>> = plan.entries.iter().map(|_| None).collect();
    for i in &plan.order {
        let entry = &plan.entries[*i];
        let request = pb::SubmitTaskRequest {
            spec: Some(spec_to_pb(&spec_with_ids(entry, &actual))),
            idempotency_key: entry.key.clone(),
            task_id: ids[*i].to_string(),
            require_agent: false,
        };
        let response = match client.submit_task(request).await {
            Ok(response) => response.into_inner(),
            Err(status) => {
                let Failure(message, code) = status.into();
                return Err(Failure(
                    partial_failure(&entry.name, &message, &submitted),
                    code,
                ));
            }
        };
        let task = decode_task(response.task)?;
        super::client::warn_unavailable(&task, &response.agent_unavailable);
        actual[*i] = task.id;
        submitted[*i] = Some(Submitted {
            name: entry.name.clone(),
            task,
            created: response.created,
        });
    }
    let mut batch: Vec<Submitted> = submitted.into_iter().flatten().collect();

    if !args.wait {
        print_batch(&batch, &args.connection, false);
        return Ok(());
    }
    if !args.connection.json {
        print_batch(&batch, &args.connection, false);
        println!();
    }
    let waited = logs::until_interrupted(wait_all(&mut client, &mut batch)).await;
    match waited {
        None => {
            return Err(Failure(
                "interrupted; the tasks keep running on the server".into(),
                exit::INTERRUPTED,
            ));
        }
        Some(result) => result?,
    }
    print_batch(&batch, &args.connection, true);
    let worst = batch
        .iter()
        .map(|s| s.task.state)
        .max_by_key(|state| severity(*state));
    match worst.map(outcome_code).unwrap_or(0) {
        0 => Ok(()),
        code => Err(Failure(
            format!(
                "not every task completed (worst: {})",
                worst.expect("a task")
            ),
            code,
        )),
    }
}

/// Every `depends_on` id that is not a task of the file must be on the
/// server.
async fn check_existing_deps(client: &mut Client, plan: &Plan, path: &Path) -> Result<(), Failure> {
    let mut problems = Vec::new();
    let mut checked: HashMap<String, bool> = HashMap::new();
    for entry in &plan.entries {
        for dep in &entry.deps {
            let Dep::Existing(id) = dep else { continue };
            let known = match checked.get(id) {
                Some(known) => *known,
                None => {
                    let known = match client.get_task(pb::GetTaskRequest { id: id.clone() }).await {
                        Ok(_) => true,
                        Err(status) if status.code() == Code::NotFound => false,
                        Err(status) => return Err(status.into()),
                    };
                    checked.insert(id.clone(), known);
                    known
                }
            };
            if !known {
                problems.push(format!(
                    "task `{}` depends on task {id}, which is not on the server",
                    entry.name
                ));
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(usage(format!(
            "{}: nothing submitted:\n{}",
            path.display(),
            problems.join("\n")
        )))
    }
}

fn partial_failure(name: &str, message: &str, submitted: &[Option<Submitted>]) -> String {
    let done: Vec<String> = submitted
        .iter()
        .flatten()
        .map(|s| format!("`{}` ({})", s.name, s.task.id))
        .collect();
    if done.is_empty() {
        format!("task `{name}` was refused, nothing submitted: {message}")
    } else {
        format!(
            "task `{name}` was refused: {message}\nalready submitted: {}; running the same file again submits the rest without duplicating these",
            done.join(", ")
        )
    }
}

/// Polls every task until all have stopped, noting each change on stderr.
async fn wait_all(client: &mut Client, batch: &mut [Submitted]) -> Result<(), Failure> {
    let width = batch
        .iter()
        .map(|s| s.name.chars().count())
        .max()
        .unwrap_or(0);
    loop {
        let mut all_stopped = true;
        for entry in batch.iter_mut() {
            if is_stopped(entry.task.state) {
                continue;
            }
            let task = decode_task(Some(get_task(client, &entry.task.id.to_string()).await?))?;
            if task.state != entry.task.state {
                let reason = if task.state_reason.is_empty() {
                    String::new()
                } else {
                    format!(": {}", task.state_reason)
                };
                eprintln!(
                    "{} {:<width$}  {}{reason}",
                    output::clock(now_millis()),
                    entry.name,
                    task.state
                );
            }
            all_stopped &= is_stopped(task.state);
            entry.task = task;
        }
        if all_stopped {
            return Ok(());
        }
        tokio::time::sleep(POLL).await;
    }
}

fn print_batch(batch: &[Submitted], connection: &Connection, waited: bool) {
    if connection.json {
        let tasks: Vec<serde_json::Value> = batch
            .iter()
            .map(|s| {
                serde_json::json!({
                    "name": s.name,
                    "id": s.task.id,
                    "state": s.task.state,
                    "state_reason": s.task.state_reason,
                    "created": s.created,
                    "idempotency_key": s.task.idempotency_key,
                    "depends_on": s.task.depends_on,
                })
            })
            .collect();
        output::json(&serde_json::json!({ "tasks": tasks }));
        return;
    }
    let mut header = vec!["NAME", "TASK ID", "STATE"];
    let rows: Vec<Vec<String>> = batch
        .iter()
        .map(|s| {
            let mut row = vec![
                s.name.clone(),
                s.task.id.to_string(),
                s.task.state.to_string(),
            ];
            if waited {
                row.push(s.task.state_reason.clone());
            } else {
                row.push(if s.created { "new" } else { "existing" }.to_string());
            }
            row
        })
        .collect();
    header.push(if waited { "REASON" } else { "SUBMITTED" });
    output::table(&header, &rows);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn planned(yaml: &str) -> Result<Plan, String> {
        plan(parse(yaml, Format::Yaml)?, "h")
    }

    fn names(plan: &Plan) -> Vec<&str> {
        plan.order
            .iter()
            .map(|i| plan.entries[*i].name.as_str())
            .collect()
    }

    #[test]
    fn the_hash_is_fnv1a_128() {
        assert_eq!(content_hash(b""), "6c62272e07bb014262b821756295c58d");
        assert_eq!(content_hash(b"a"), "d228cb696f1a8caf78912b704e4a8964");
    }

    #[test]
    fn dependencies_come_first_and_keys_name_the_task() {
        let plan = planned(
            "- {id: c, instructions: x, depends_on: [a, b]}\n- {id: a, instructions: x}\n- {instructions: x, depends_on: [c, 01ARZ3NDEKTSV4RRFFQ69G5FAV]}\n- {id: b, instructions: x, idempotency_key: mine}\n",
        )
        .unwrap();
        assert_eq!(names(&plan), ["a", "b", "c", "#3"]);
        assert_eq!(plan.entries[0].key, "run:h:c");
        assert_eq!(plan.entries[2].key, "run:h:#3");
        assert_eq!(plan.entries[3].key, "mine");
        assert_eq!(
            plan.entries[2].deps,
            [
                Dep::Local(0),
                Dep::Existing("01ARZ3NDEKTSV4RRFFQ69G5FAV".into())
            ]
        );
    }

    #[test]
    fn the_three_file_shapes_read_alike() {
        let yaml = parse("tasks:\n  - {id: a, instructions: x}\n", Format::Yaml).unwrap();
        let toml = parse(
            "[[tasks]]\nid = \"a\"\ninstructions = \"x\"\n",
            Format::Toml,
        )
        .unwrap();
        let json = parse(r#"[{"id": "a", "instructions": "x"}]"#, Format::Json).unwrap();
        for w in [&yaml[0], &toml[0], &json[0]] {
            assert_eq!((w.name.as_str(), w.spec.instructions.as_str()), ("a", "x"));
        }
    }

    #[test]
    fn mistakes_are_named() {
        let err = |yaml: &str| planned(yaml).unwrap_err();
        let cycle = err(
            "- {id: a, instructions: x, depends_on: [c]}\n- {id: b, instructions: x, depends_on: [a]}\n- {id: c, instructions: x, depends_on: [b]}\n- {id: d, instructions: x, depends_on: [a]}\n",
        );
        assert!(cycle.contains("cycle"), "{cycle}");
        assert!(cycle.contains("`a` → `c` → `b` → `a`"), "{cycle}");
        assert!(err("- {id: a, instructions: x, depends_on: [a]}\n").contains("`a` → `a`"));
        let unknown = err("- {id: a, instructions: x, depends_on: [nope]}\n");
        assert!(unknown.contains("`a` depends on `nope`"), "{unknown}");
        let twice = err("- {id: a, instructions: x}\n- {id: a, instructions: y}\n");
        assert!(
            twice.contains("`a` is used by more than one task (#1, #2)"),
            "{twice}"
        );
        let field = err("- {id: a, instructions: x, colour: red}\n");
        assert!(
            field.contains("task `a`") && field.contains("colour"),
            "{field}"
        );
        assert!(err("tasks: []\n").contains("no tasks"));
        assert!(err("jobs: []\n").contains("`jobs`"));
    }

    #[test]
    fn field_mistakes_are_caught_before_sending() {
        let plan = planned("- {id: a, instructions: x, timeout: soon}\n").unwrap();
        let err = check_fields(&plan, &[Id::new()]).unwrap_err();
        assert!(err.contains("task `a`: spec.timeout"), "{err}");
        let plan = planned("- {id: a, instructions: x, project: p, timeout: 90h}\n").unwrap();
        check_fields(&plan, &[Id::new()]).unwrap();
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(200))]

        /// Whatever a task file holds, reading and planning it answers
        /// (a list or an error); it never panics.
        #[test]
        fn any_file_text_is_read_without_panics(text in "(?s).{0,400}", format in 0..3u8) {
            let format = [Format::Yaml, Format::Toml, Format::Json][format as usize];
            if let Ok(written) = parse(&text, format) {
                let _ = plan(written, "h");
            }
        }

        /// Files shaped like task lists, with odd values and names.
        #[test]
        fn odd_task_lists_are_read_without_panics(
            ids in proptest::collection::vec(proptest::option::of(".{0,8}"), 0..6),
            deps in proptest::collection::vec(".{0,8}", 0..4),
            instructions in ".{0,40}",
            extra in proptest::option::of(proptest::prelude::any::<i64>()),
        ) {
            let tasks: Vec<serde_json::Value> = ids
                .iter()
                .map(|id| {
                    let mut task = serde_json::json!({
                        "instructions": instructions,
                        "depends_on": deps,
                    });
                    if let Some(id) = id {
                        task["id"] = serde_json::json!(id);
                    }
                    if let Some(n) = extra {
                        task["max_attempts"] = serde_json::json!(n);
                    }
                    task
                })
                .collect();
            let text = serde_json::json!({ "tasks": tasks }).to_string();
            if let Ok(written) = parse(&text, Format::Json) {
                let _ = plan(written, "h");
            }
        }
    }
}
