//! What a sandbox costs, on a repository with over 100 MB of history:
//! - preparation time (`Sandbox::prepare`: the project checks, the shared
//!   clone, the checkout, the saved config, the kept base) against
//!   `git worktree add` of the same commit, and against the full copy
//!   sandboxes were before (`git clone --no-hardlinks`);
//! - disk per sandbox against the worktree (its files and its admin dir);
//! - the OS sandbox's cost on an agent's start: `/bin/true` started bare
//!   and through `confine` (bubblewrap with the options agents get).
//!
//! The repository is built once with `git fast-import` under
//! `target/bench-repos/` (BENCH_REPO names another). Runs alternate, so
//! the page cache favours neither side. Prints figures and ratios;
//! asserts nothing.
//!
//! `cargo bench --bench sandbox`. Environment: BENCH_RUNS (7 preparations
//! each), BENCH_STARTS (200 starts each), BENCH_REPO.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use claudomator::core::runner::{Confinement, Isolation};
use claudomator::runners::CommandSpec;
use claudomator::runners::confine::{Launch, confine, os_sandbox};
use claudomator::sandbox::{Sandbox, SandboxConfig};

/// The generated repository: FILES files of FILE_BYTES in the tree, and
/// COMMITS commits each rewriting CHANGED of them, incompressible.
const FILES: usize = 2_000;
const FILE_BYTES: usize = 8 * 1024;
const COMMITS: usize = 60;
const CHANGED: usize = 220;

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// xorshift64*: incompressible bytes, the same every build.
struct Noise(u64);

impl Noise {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let word = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }
}

/// The repository, built on first use.
fn repository() -> PathBuf {
    if let Ok(path) = std::env::var("BENCH_REPO") {
        return PathBuf::from(path);
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-repos/big");
    if path.join(".git/claudomator-bench-complete").exists() {
        return path;
    }
    let _ = std::fs::remove_dir_all(&path);
    std::fs::create_dir_all(&path).unwrap();
    git(&path, &["init", "--quiet", "-b", "main"]);
    let started = Instant::now();
    let mut import = Command::new("git")
        .arg("-C")
        .arg(&path)
        .args(["fast-import", "--quiet"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("git fast-import");
    let mut stream = std::io::BufWriter::new(import.stdin.take().unwrap());
    let mut noise = Noise(0x9e37_79b9_7f4a_7c15);
    let mut blob = vec![0u8; FILE_BYTES];
    for commit in 0..COMMITS {
        writeln!(stream, "commit refs/heads/main").unwrap();
        writeln!(
            stream,
            "committer Bench <bench@example.com> {} +0000",
            1_700_000_000 + commit
        )
        .unwrap();
        let message = format!("commit {commit}");
        writeln!(stream, "data {}\n{message}", message.len()).unwrap();
        let files: Vec<usize> = if commit == 0 {
            (0..FILES).collect()
        } else {
            (0..CHANGED)
                .map(|i| (commit * 7919 + i * 31) % FILES)
                .collect()
        };
        for file in files {
            noise.fill(&mut blob);
            writeln!(
                stream,
                "M 644 inline src/dir{:02}/file{file:04}.bin",
                file % 40
            )
            .unwrap();
            writeln!(stream, "data {}", blob.len()).unwrap();
            stream.write_all(&blob).unwrap();
            writeln!(stream).unwrap();
        }
    }
    drop(stream);
    assert!(import.wait().unwrap().success(), "git fast-import failed");
    git(&path, &["reset", "--quiet", "--hard", "main"]);
    std::fs::write(path.join(".git/claudomator-bench-complete"), "").unwrap();
    println!(
        "built {} in {:.1} s",
        path.display(),
        started.elapsed().as_secs_f64()
    );
    path
}

/// Bytes the files under `path` take on disk (allocated blocks).
fn disk(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    let mut total = meta.blocks() * 512;
    if meta.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            total += disk(&entry.unwrap().path());
        }
    }
    total
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn percentile(mut values: Vec<f64>, p: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    values[((values.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

async fn preparation(repo: &Path, runs: usize) {
    let work = tempfile::tempdir().unwrap();
    let cfg = SandboxConfig {
        root: work.path().join("sandboxes"),
        author_name: "Bench".into(),
        author_email: "bench@example.com".into(),
        keep_on_failure: false,
    };
    let head = git(repo, &["rev-parse", "HEAD"]);
    let (mut ours, mut worktree, mut ours_disk, mut worktree_disk) = (Vec::new(), Vec::new(), 0, 0);
    for run in 0..runs {
        let id = format!("BENCH{run:04}");
        let started = Instant::now();
        let sandbox = Sandbox::prepare(&cfg, "big", repo, &id).await.unwrap();
        ours.push(ms(started.elapsed()));
        ours_disk = disk(&sandbox.path);
        sandbox.finish(&cfg, true).await.unwrap();

        let dir = work.path().join(format!("worktree{run}"));
        let started = Instant::now();
        git(
            repo,
            &[
                "worktree",
                "add",
                "--quiet",
                "-b",
                &format!("bench/{id}"),
                dir.to_str().unwrap(),
                &head,
            ],
        );
        worktree.push(ms(started.elapsed()));
        let name = dir.file_name().unwrap().to_str().unwrap().to_string();
        worktree_disk = disk(&dir) + disk(&repo.join(".git/worktrees").join(&name));
        git(
            repo,
            &["worktree", "remove", "--force", dir.to_str().unwrap()],
        );
        git(repo, &["branch", "--quiet", "-D", &format!("bench/{id}")]);
    }
    let checkout = disk(repo) - disk(&repo.join(".git"));

    // The full copy sandboxes were before, once.
    let copy = work.path().join("copy");
    let started = Instant::now();
    git(
        work.path(),
        &[
            "clone",
            "--quiet",
            "--no-hardlinks",
            "--no-checkout",
            repo.to_str().unwrap(),
            copy.to_str().unwrap(),
        ],
    );
    git(&copy, &["checkout", "--quiet", "-b", "bench", &head]);
    let copy_ms = ms(started.elapsed());
    let copy_disk = disk(&copy);

    let (ours_ms, worktree_ms) = (median(ours), median(worktree));
    println!("preparation, median of {runs}:");
    println!("  git worktree add        {worktree_ms:8.1} ms");
    println!(
        "  Sandbox::prepare        {ours_ms:8.1} ms   ratio {:.2}x (target <= 1.2x)",
        ours_ms / worktree_ms
    );
    println!(
        "  full copy (before)      {copy_ms:8.1} ms   ratio {:.2}x",
        copy_ms / worktree_ms
    );
    println!("disk per sandbox:");
    println!("  checkout (files only)   {:8.1} MiB", mib(checkout));
    println!("  git worktree            {:8.1} MiB", mib(worktree_disk));
    println!(
        "  sandbox                 {:8.1} MiB   ratio {:.3}x the checkout, {:.3}x the worktree (target <= 1.1x)",
        mib(ours_disk),
        ours_disk as f64 / checkout as f64,
        ours_disk as f64 / worktree_disk as f64
    );
    println!(
        "  full copy (before)      {:8.1} MiB   ratio {:.2}x the checkout",
        mib(copy_disk),
        copy_disk as f64 / checkout as f64
    );
}

async fn start_overhead(starts: usize) {
    if let Err(why) = os_sandbox().await {
        println!("OS sandbox start: not measured, {why}");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let workdir = work.path().join("sandbox");
    let data_dir = work.path().join("data");
    std::fs::create_dir_all(&workdir).unwrap();
    std::fs::create_dir_all(&data_dir).unwrap();
    let spec = CommandSpec {
        program: PathBuf::from("/bin/true"),
        home: work.path().join("home"),
        data_dir,
        ..CommandSpec::default()
    };
    let launch = Launch {
        agent: None,
        spec: &spec,
        confinement: Confinement {
            isolation: Some(Isolation::Sandbox),
            ..Confinement::default()
        },
        state: Vec::new(),
    };
    let (mut bare, mut boxed) = (Vec::new(), Vec::new());
    for _ in 0..starts {
        let started = Instant::now();
        let status = Command::new("/bin/true")
            .current_dir(&workdir)
            .status()
            .unwrap();
        bare.push(ms(started.elapsed()));
        assert!(status.success());

        let mut command = tokio::process::Command::new("/bin/true");
        command.current_dir(&workdir);
        let started = Instant::now();
        let mut confined = confine(command, &launch).await.unwrap();
        let status = confined.command.status().await.unwrap();
        boxed.push(ms(started.elapsed()));
        assert!(status.success(), "{}", confined.note);
    }
    let (bare_med, boxed_med) = (median(bare.clone()), median(boxed.clone()));
    println!("agent start (/bin/true), {starts} each:");
    println!(
        "  bare                    median {bare_med:6.2} ms  p95 {:6.2} ms",
        percentile(bare, 0.95)
    );
    println!(
        "  in the OS sandbox       median {boxed_med:6.2} ms  p95 {:6.2} ms",
        percentile(boxed, 0.95)
    );
    println!(
        "  overhead                median {:6.2} ms (target < 50 ms)",
        boxed_med - bare_med
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let repo = repository();
    let history = disk(&repo.join(".git/objects"));
    println!(
        "repository {}: {:.1} MiB of history, {} files",
        repo.display(),
        mib(history),
        git(&repo, &["ls-files"]).lines().count()
    );
    preparation(&repo, env_number("BENCH_RUNS", 7)).await;
    start_overhead(env_number("BENCH_STARTS", 200)).await;
}
