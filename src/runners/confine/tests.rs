//! Unit tests of `runners::confine` that need no bubblewrap (the OS
//! sandbox itself is tested for real in `tests/isolation.rs`).

use super::*;

fn spec(data_dir: &Path) -> CommandSpec {
    CommandSpec {
        program: PathBuf::from("claude"),
        home: data_dir.join("agents/claude"),
        data_dir: data_dir.to_path_buf(),
        ..CommandSpec::default()
    }
}

#[test]
fn the_environment_is_the_allow_list_and_what_the_runner_set() {
    // SAFETY: tests in this binary do not read these variables meanwhile.
    unsafe {
        std::env::set_var("CLAUDOMATOR_TOKENS", "secret-token");
        std::env::set_var("CLAUDOMATOR_GITHUB_WEBHOOK_SECRET", "hook");
        std::env::set_var("ANTHROPIC_API_KEY", "sk-ant");
        std::env::set_var("OPENAI_API_KEY", "sk-openai");
        std::env::set_var("MY_TOOL_TOKEN", "passed on request");
        std::env::set_var("LC_TIME", "C");
    }
    let dir = tempfile::tempdir().unwrap();
    let mut spec = spec(dir.path());
    spec.pass_env = vec!["MY_TOOL_TOKEN".into()];
    let launch = Launch {
        agent: Some(AgentType::Claude),
        spec: &spec,
        confinement: Confinement::default(),
        state: Vec::new(),
    };
    let explicit = vec![
        ("TMPDIR".into(), Some("/somewhere".into())),
        ("PATH".into(), None),
    ];
    let env = agent_env(&launch, &explicit);
    let get = |name: &str| env.get(OsStr::new(name)).map(|v| v.to_str().unwrap());
    assert_eq!(get("CLAUDOMATOR_TOKENS"), None);
    assert_eq!(get("CLAUDOMATOR_GITHUB_WEBHOOK_SECRET"), None);
    assert_eq!(get("ANTHROPIC_API_KEY"), Some("sk-ant"));
    assert_eq!(get("OPENAI_API_KEY"), None, "another agent's key");
    assert_eq!(get("MY_TOOL_TOKEN"), Some("passed on request"));
    assert_eq!(get("LC_TIME"), Some("C"));
    assert_eq!(get("TMPDIR"), Some("/somewhere"));
    assert_eq!(get("PATH"), None, "the runner removed it");
    assert!(
        env.keys()
            .all(|k| !k.to_string_lossy().starts_with("CLAUDOMATOR")),
        "{env:?}"
    );
}

#[test]
fn the_project_wins_over_the_agent_and_no_network_wins_over_network() {
    let project = |isolation, network| Confinement {
        isolation,
        network,
        max_processes: None,
    };
    let agent = project(Some(Isolation::Sandbox), None);
    assert_eq!(
        project(None, None).over(agent),
        (Isolation::Sandbox, Network::On)
    );
    assert_eq!(
        project(Some(Isolation::None), None).over(agent),
        (Isolation::None, Network::On)
    );
    assert_eq!(
        project(None, Some(Network::None)).over(Confinement::default()),
        (Isolation::Auto, Network::None)
    );
    assert_eq!(
        project(None, Some(Network::On)).over(project(None, Some(Network::None))),
        (Isolation::Auto, Network::None)
    );
}

#[test]
fn a_node_package_brings_its_node_modules_and_not_the_system() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let package = root.join("prefix/node_modules/@scope/cli");
    std::fs::create_dir_all(package.join("bin")).unwrap();
    std::fs::create_dir_all(root.join("prefix/node_modules/.bin")).unwrap();
    std::fs::write(package.join("bin/cli.exe"), "\x7fELF").unwrap();
    let link = root.join("prefix/node_modules/.bin/cli");
    std::os::unix::fs::symlink("../@scope/cli/bin/cli.exe", &link).unwrap();
    assert_eq!(
        program_dirs(&link),
        vec![
            root.join("prefix/node_modules"),
            root.join("prefix/node_modules/.bin"),
        ]
    );
    assert!(program_dirs(Path::new("/usr/bin/git")).is_empty());
}

#[test]
fn state_dirs_are_the_agent_home_and_the_dirs_its_variables_name() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(dir.path());
    std::fs::create_dir_all(&spec.home).unwrap();
    let config = dir.path().join("claude-config");
    std::fs::create_dir_all(&config).unwrap();
    let launch = Launch {
        agent: Some(AgentType::Claude),
        spec: &spec,
        confinement: Confinement::default(),
        state: vec![dir.path().join("missing")],
    };
    let explicit = vec![
        ("CLAUDE_CONFIG_DIR".into(), Some(config.clone().into())),
        (
            "ANTHROPIC_BASE_URL".into(),
            Some("http://127.0.0.1:1".into()),
        ),
    ];
    let mut expected = vec![spec.home.clone(), config];
    expected.sort();
    assert_eq!(state_paths(&launch, &explicit), expected);
}
