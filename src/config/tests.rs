use super::*;

#[test]
fn unknown_keys_are_named() {
    let err = format!(
        "{:#}",
        Config::from_toml("listn = \"127.0.0.1:1\"").unwrap_err()
    );
    assert!(err.contains("listn"), "{err}");
    let err = format!("{:#}", Config::from_toml("[auth]\ntoken = []").unwrap_err());
    assert!(err.contains("token"), "{err}");
}

/// The line `doctor` says to add, under `[prices]`, prices its model
/// and keeps the built-in prices.
#[test]
fn a_prices_line_adds_to_the_built_in_prices() {
    let line = crate::runners::price_line("gpt-5.5")
        .replace("IN", "1.25")
        .replace("OUT", "10");
    let config = Config::from_toml(&format!("[prices]\n{line}\n")).unwrap();
    assert_eq!(config.prices["gpt-5.5"].output_per_mtok, 10.0);
    for (model, price) in default_prices() {
        assert_eq!(config.prices[&model], price, "{model}");
    }
}

#[test]
fn choices_are_read_once_and_a_wrong_one_is_named() {
    let config = Config::from_toml(
        "[executor]\nshutdown = \"finish\"\non_restart = \"fail\"\nshare_logs = \"on\"\n",
    )
    .unwrap();
    assert_eq!(config.executor.shutdown, ShutdownMode::Finish);
    assert_eq!(config.executor.on_restart, OnRestart::Fail);
    assert!(config.shares_logs());
    assert!(!config.executor_config().requeue_on_restart);
    for (line, expected) in [
        ("shutdown = \"later\"", "expected `requeue` or `finish`"),
        ("on_restart = \"retry\"", "expected `requeue` or `fail`"),
        (
            "share_logs = \"yes\"",
            "expected one of `auto`, `on`, `off`",
        ),
    ] {
        let err = format!(
            "{:#}",
            Config::from_toml(&format!("[executor]\n{line}\n")).unwrap_err()
        );
        assert!(err.contains(line) && err.contains(expected), "{err}");
    }
}

#[test]
fn cors_origins_are_off_by_default_and_a_wrong_one_is_named_with_its_line() {
    assert!(Config::default().cors_origins.is_empty());
    let config = Config::from_toml(
        "cors_origins = [\"http://localhost:5173\", \"HTTPS://Board.Example.com:443\"]\n",
    )
    .unwrap();
    assert_eq!(
        config.cors_origins,
        ["http://localhost:5173", "https://board.example.com"]
    );
    config.validate().unwrap();
    let err = format!(
        "{:#}",
        Config::from_toml(
            "listen = \"127.0.0.1:7070\"\ncors_origins = [\"http://localhost:5173/\"]\n"
        )
        .unwrap_err()
    );
    assert!(
        err.contains("line 2")
            && err.contains("`http://localhost:5173/`")
            && err.contains("without `/`"),
        "{err}"
    );
    let mut config = Config {
        cors_origins: vec!["*".into()],
        ..Config::default()
    };
    let err = config.validate().unwrap_err().to_string();
    assert!(
        err.starts_with("cors_origins: `*` is not accepted"),
        "{err}"
    );
    config.cors_origins = vec!["http://Localhost:80".into()];
    let err = config.validate().unwrap_err().to_string();
    assert!(err.contains("`http://localhost`"), "{err}");
}

#[test]
fn the_triage_agent_is_read_once_and_a_wrong_one_is_named() {
    let config = Config::from_toml("[github]\nagent = \"Claude\"\n").unwrap();
    assert_eq!(config.github.agent, AgentType::Claude);
    assert_eq!(config.github.triage_settings().agent, AgentType::Claude);
    assert_eq!(Config::default().github.agent, AgentType::Auto);
    let err = format!(
        "{:#}",
        Config::from_toml("[github]\nagent = \"claudee\"\n").unwrap_err()
    );
    assert!(
        err.contains("agent = \"claudee\"")
            && err.contains("unknown value `claudee`")
            && err.contains("expected one of auto, claude, gemini, codex, local"),
        "{err}"
    );
}

#[test]
fn flags_win_over_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    std::fs::write(
        &file,
        "listen = \"127.0.0.1:9000\"\nhttp_listen = \"127.0.0.1:9001\"\n",
    )
    .unwrap();
    let overrides = Overrides {
        config_file: Some(file),
        listen: Some("127.0.0.1:9100".parse().unwrap()),
        ..Overrides::default()
    };
    let config = Config::load(&overrides, dir.path()).unwrap();
    assert_eq!(config.listen.port(), 9100);
    assert_eq!(config.http_listen.port(), 9001);
}

#[test]
fn public_addresses_need_tokens() {
    let mut config = Config {
        listen: "0.0.0.0:7070".parse().unwrap(),
        ..Config::default()
    };
    let err = config.validate().unwrap_err().to_string();
    assert!(err.contains("without auth tokens"), "{err}");
    config.auth.tokens = vec!["s3cret-token".into()];
    config.validate().unwrap();
}

#[test]
fn unsigned_deliveries_are_only_allowed_on_loopback() {
    let mut config = Config {
        http_listen: "0.0.0.0:7071".parse().unwrap(),
        ..Config::default()
    };
    config.auth.tokens = vec!["s3cret-token".into()];
    config.github.allow_unsigned = true;
    let err = config.validate().unwrap_err().to_string();
    assert!(err.starts_with("github.allow_unsigned:"), "{err}");
    config.http_listen = "127.0.0.1:7071".parse().unwrap();
    config.validate().unwrap();
}

#[test]
fn http_limits_are_checked() {
    for (toml, key) in [
        ("header_timeout = \"0s\"", "http.header_timeout"),
        ("body_timeout = \"forever\"", "http.body_timeout"),
        ("max_connections = 0", "http.max_connections"),
    ] {
        let config = Config::from_toml(&format!("[http]\n{toml}")).unwrap();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.starts_with(key), "{toml}: {err}");
    }
}

#[test]
fn the_git_repository_started_in_is_the_default_project() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("my app");
    std::fs::create_dir_all(repo.join(".git")).unwrap();
    std::fs::create_dir_all(repo.join("src")).unwrap();
    let config = Config::load(&Overrides::default(), &repo.join("src")).unwrap();
    assert_eq!(config.projects.len(), 1);
    assert_eq!(config.projects[0].name, "my-app");
    assert_eq!(config.projects[0].path, repo);
}

#[test]
fn the_commented_default_parses_and_validates() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::from_toml(&commented_default(dir.path())).unwrap();
    config.validate().unwrap();
}

#[test]
fn the_local_model_section_is_checked_and_the_endpoint_overridable() {
    let err = format!(
        "{:#}",
        Config::from_toml("[local_model]\nendpont = \"x\"").unwrap_err()
    );
    assert!(err.contains("endpont"), "{err}");
    for (toml, key) in [
        ("endpoint = \"127.0.0.1:8080\"", "local_model.endpoint"),
        ("timeout = \"soon\"", "local_model.timeout"),
        ("classify_timeout = \"0s\"", "local_model.classify_timeout"),
        ("temperature = 3.0", "local_model.temperature"),
        ("max_tokens = 0", "local_model.max_tokens"),
        ("max_concurrent = 0", "local_model.max_concurrent"),
    ] {
        let config = Config::from_toml(&format!("[local_model]\n{toml}")).unwrap();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.starts_with(key), "{toml}: {err}");
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    std::fs::write(&file, "[local_model]\nendpoint = \"http://a:1/v1\"\n").unwrap();
    let overrides = Overrides {
        config_file: Some(file),
        local_model_endpoint: Some("http://127.0.0.1:18080/v1".into()),
        ..Overrides::default()
    };
    let config = Config::load(&overrides, dir.path()).unwrap();
    assert_eq!(config.local_model.endpoint, "http://127.0.0.1:18080/v1");
    let executor = config.executor_config();
    assert_eq!(
        executor
            .agent_limits
            .get(&crate::core::model::AgentType::Local),
        Some(&1),
        "local tasks are capped by the model's calls at once"
    );
}

#[test]
fn github_credentials_come_from_github_or_the_project_and_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let project_dir = dir.path().join("p");
    std::fs::create_dir_all(&project_dir).unwrap();
    let key = dir.path().join("app.pem");
    let made = std::process::Command::new("openssl")
        .args(["genrsa", "-traditional", "-out"])
        .arg(&key)
        .arg("2048")
        .output()
        .unwrap();
    assert!(made.status.success());
    let config_with = |github: &str, project: &str| {
        let text = format!(
            "[github]\n{github}\n[[projects]]\nname = \"p\"\npath = {:?}\ngithub = \"o/r\"\n{project}\n",
            project_dir
        );
        Config::from_toml(&text).unwrap()
    };
    let error = |github: &str, project: &str| {
        format!("{:#}", config_with(github, project).validate().unwrap_err())
    };
    // A token from a variable that is set (PATH is), for every project.
    let config = config_with("token_env = \"PATH\"", "");
    config.validate().unwrap();
    let credentials = config
        .github_credentials(&config.projects[0])
        .unwrap()
        .unwrap();
    assert_eq!(credentials.api_url, "https://api.github.com");
    assert_eq!(credentials.auth, GithubAuth::TokenEnv("PATH".into()));
    // The project's own App and API.
    let own = format!(
        "github_app_id = 9\ngithub_private_key_file = {key:?}\ngithub_api_url = \"https://ghe.example/api/v3\""
    );
    let config = config_with("token_env = \"PATH\"", &own);
    config.validate().unwrap();
    let credentials = config
        .github_credentials(&config.projects[0])
        .unwrap()
        .unwrap();
    assert_eq!(credentials.api_url, "https://ghe.example/api/v3");
    assert_eq!(
        credentials.auth,
        GithubAuth::App {
            app_id: 9,
            private_key_file: key.clone()
        }
    );
    // None: no credentials, not an error.
    let config = config_with("", "");
    assert_eq!(
        config.github_credentials(&config.projects[0]).unwrap(),
        None
    );

    let both = format!("token_env = \"PATH\"\napp_id = 9\nprivate_key_file = {key:?}");
    let e = error(&both, "");
    assert!(e.contains("github.token_env and github.app_id"), "{e}");
    let e = error("", "github_token_env = \"PATH\"\ngithub_app_id = 9");
    assert!(
        e.starts_with("projects[0].github_token_env and github_app_id"),
        "{e}"
    );
    let e = error("token_env = \"CLAUDOMATOR_TEST_UNSET_VARIABLE\"", "");
    assert!(e.contains("github.token_env: the environment variable `CLAUDOMATOR_TEST_UNSET_VARIABLE` is not set"), "{e}");
    let e = error(
        "app_id = 9\nprivate_key_file = \"/nonexistent/app.pem\"",
        "",
    );
    assert!(
        e.starts_with("github.private_key_file: cannot read /nonexistent/app.pem"),
        "{e}"
    );
    let e = error(
        "",
        &format!(
            "github_app_id = 9\ngithub_private_key_file = {:?}",
            project_dir.join("nope.pem")
        ),
    );
    assert!(
        e.starts_with("projects[0].github_private_key_file: cannot read"),
        "{e}"
    );
    let e = error("app_id = 9", "");
    assert!(
        e.starts_with("github.private_key_file: a GitHub App"),
        "{e}"
    );
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    let e = error(&format!("app_id = 9\nprivate_key_file = {not_pem:?}"), "");
    assert!(e.contains("not an RSA private key"), "{e}");
    let e = error("api_url = \"api.github.com\"", "");
    assert!(e.starts_with("github.api_url:"), "{e}");
}
