//! Configuration: the example file, layering (file < env < flags), and every kind of bad
//! config failing at start with exit code 2 and a message naming the key.

use crate::common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Output;

use common::*;
use meteomesh::config::{CliOverrides, Config};

fn keys(prefix: &str, table: &toml::Table, out: &mut BTreeSet<String>) {
    for (k, v) in table {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::Table(t) => keys(&key, t, out),
            _ => {
                out.insert(key);
            }
        }
    }
}

#[test]
fn example_config_documents_every_option_with_its_default() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml");
    let loaded = Config::load(Some(&path), Vec::new(), &CliOverrides::default()).unwrap();
    assert_eq!(
        loaded.config.to_redacted_toml(),
        Config::default().to_redacted_toml(),
        "config.example.toml must set every option to its default"
    );
    let text = std::fs::read_to_string(&path).unwrap();
    let mut documented = BTreeSet::new();
    keys("", &toml::from_str(&text).unwrap(), &mut documented);
    let mut all = BTreeSet::new();
    keys(
        "",
        &toml::from_str(&Config::default().to_redacted_toml()).unwrap(),
        &mut all,
    );
    // The service-account list is empty by default and shown as a commented example.
    all.remove("bus.users");
    assert!(text.contains("# [[bus.users]]"));
    assert_eq!(
        documented, all,
        "options missing from or unknown to the example"
    );
}

fn run(dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> Output {
    bin()
        .args(args)
        .envs(envs.iter().copied())
        .current_dir(dir)
        .output()
        .unwrap()
}

fn printed(out: &Output) -> toml::Table {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    toml::from_str(&String::from_utf8_lossy(&out.stdout)).unwrap()
}

#[test]
fn layers_apply_in_order_defaults_file_env_flags() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("custom.toml");
    std::fs::write(
        &file,
        "[http]\nlisten = \"127.0.0.1:7001\"\nmax_body_bytes = 2048\n[log]\nlevel = \"debug\"\n",
    )
    .unwrap();
    let f = file.to_str().unwrap();

    // Defaults only.
    let t = printed(&run(dir.path(), &["print-config"], &[]));
    assert_eq!(t["http"]["listen"].as_str(), Some("0.0.0.0:8080"));
    assert_eq!(t["storage"]["path"].as_str(), Some("./data/meteomesh.db"));

    // File over defaults.
    let t = printed(&run(dir.path(), &["--config", f, "print-config"], &[]));
    assert_eq!(t["http"]["listen"].as_str(), Some("127.0.0.1:7001"));
    assert_eq!(t["http"]["max_body_bytes"].as_integer(), Some(2048));

    // Env over file.
    let env = [("METEOMESH__HTTP__LISTEN", "127.0.0.1:7002")];
    let t = printed(&run(dir.path(), &["--config", f, "print-config"], &env));
    assert_eq!(t["http"]["listen"].as_str(), Some("127.0.0.1:7002"));
    assert_eq!(t["http"]["max_body_bytes"].as_integer(), Some(2048));

    // Flags over env.
    let args = [
        "--config",
        f,
        "--listen",
        "127.0.0.1:7003",
        "--log-level",
        "warn",
        "--database",
        "/tmp/x.db",
        "print-config",
    ];
    let t = printed(&run(dir.path(), &args, &env));
    assert_eq!(t["http"]["listen"].as_str(), Some("127.0.0.1:7003"));
    assert_eq!(t["log"]["level"].as_str(), Some("warn"));
    assert_eq!(t["storage"]["path"].as_str(), Some("/tmp/x.db"));

    // ./meteomesh.toml is read when no --config is given.
    std::fs::write(
        dir.path().join("meteomesh.toml"),
        "[http]\nlisten = \"127.0.0.1:7004\"\n",
    )
    .unwrap();
    let t = printed(&run(dir.path(), &["print-config"], &[]));
    assert_eq!(t["http"]["listen"].as_str(), Some("127.0.0.1:7004"));
    let out = run(dir.path(), &["check-config"], &[]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("meteomesh.toml"));
}

/// Runs `check-config` with `file_text` and/or `envs`; expects exit 2 and every needle
/// in stderr.
fn assert_rejected(file_text: Option<&str>, envs: &[(&str, &str)], needles: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let mut args = Vec::new();
    let path = dir.path().join("bad.toml");
    if let Some(text) = file_text {
        std::fs::write(&path, text).unwrap();
        args.extend(["--config", path.to_str().unwrap()]);
    }
    args.push("check-config");
    let out = run(dir.path(), &args, envs);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "expected exit 2, got {out:?}");
    for needle in needles {
        assert!(stderr.contains(needle), "missing {needle:?} in: {stderr}");
    }
}

#[test]
fn bad_configs_fail_with_exit_2_and_name_the_key() {
    // Unknown keys: top level, nested, and through the environment.
    assert_rejected(Some("colour = 1\n"), &[], &["colour", "spelling"]);
    assert_rejected(
        Some("[http]\nlisen = \"0.0.0.0:1\"\n"),
        &[],
        &["lisen", "spelling"],
    );
    assert_rejected(
        None,
        &[("METEOMESH__BUS__TYPO", "1")],
        &["typo", "spelling"],
    );
    // Bad addresses.
    assert_rejected(
        Some("[http]\nlisten = \"localhost\"\n"),
        &[],
        &["http.listen", "IP:PORT"],
    );
    assert_rejected(
        None,
        &[("METEOMESH__BUS__TCP_LISTEN", "1.2.3.4")],
        &["tcp_listen", "IP:PORT"],
    );
    // Bad durations.
    assert_rejected(
        Some("[storage]\nbusy_timeout = \"soon\"\n"),
        &[],
        &["busy_timeout", "duration"],
    );
    assert_rejected(
        Some("[storage]\nbusy_timeout = \"0s\"\n"),
        &[],
        &["storage.busy_timeout"],
    );
    assert_rejected(
        Some("[http]\nrequest_timeout = 30\n"),
        &[],
        &["request_timeout"],
    );
    // Bad enum and types.
    assert_rejected(
        Some("[bus]\nmode = \"cloud\"\n"),
        &[],
        &["cloud", "embedded", "external"],
    );
    assert_rejected(
        Some("[bus]\nmax_inflight = \"many\"\n"),
        &[],
        &["max_inflight"],
    );
    assert_rejected(
        Some("[bus]\nmax_inflight = 0\n"),
        &[],
        &["bus.max_inflight"],
    );
    assert_rejected(
        Some("[bus]\nmax_inflight = 70000\n"),
        &[],
        &["max_inflight"],
    );
    assert_rejected(
        Some("[bus]\nmax_packet_size = 10\n"),
        &[],
        &["bus.max_packet_size"],
    );
    assert_rejected(
        Some("[bus]\nmax_connections = 0\n"),
        &[],
        &["bus.max_connections"],
    );
    assert_rejected(
        Some("[bus]\nmax_queued_messages = 0\n"),
        &[],
        &["bus.max_queued_messages"],
    );
    assert_rejected(
        Some("[http]\nmax_body_bytes = 10\n"),
        &[],
        &["http.max_body_bytes"],
    );
    assert_rejected(Some("[storage]\npath = \"\"\n"), &[], &["storage.path"]);
    assert_rejected(Some("[log]\nlevel = \"[[\"\n"), &[], &["log.level"]);
    assert_rejected(
        Some("[bus]\nclient_id_prefix = \"a b\"\n"),
        &[],
        &["bus.client_id_prefix"],
    );
    // Clashing listeners.
    assert_rejected(
        Some("[bus]\ntcp_listen = \"0.0.0.0:8080\"\n"),
        &[],
        &["bus.tcp_listen", "http.listen"],
    );
    assert_rejected(
        Some("[bus]\nws_listen = \"0.0.0.0:1883\"\n"),
        &[],
        &["bus.ws_listen", "bus.tcp_listen"],
    );
    // External mode needs a usable URL.
    assert_rejected(
        Some("[bus]\nmode = \"external\"\nurl = \"http://broker:1883\"\n"),
        &[],
        &["bus.url", "mqtt://"],
    );
    // Service accounts.
    assert_rejected(
        Some("[[bus.users]]\nusername = \"svc\"\npassword = \"short\"\n"),
        &[],
        &["bus.users[0].password", "8 characters"],
    );
    assert_rejected(
        Some("[[bus.users]]\nusername = \"$sys\"\npassword = \"long-enough\"\n"),
        &[],
        &["bus.users[0].username"],
    );
    assert_rejected(
        Some(
            "[[bus.users]]\nusername = \"a\"\npassword = \"long-enough\"\n\
             [[bus.users]]\nusername = \"a\"\npassword = \"long-enough2\"\n",
        ),
        &[],
        &["bus.users[1].username", "twice"],
    );
    assert_rejected(
        None,
        &[("METEOMESH__BUS__USERS", "svc")],
        &["METEOMESH__BUS__USERS"],
    );
    // TOML syntax errors point at the line.
    assert_rejected(Some("[http\nlisten = 1\n"), &[], &["bad.toml", "line 1"]);
}

#[test]
fn missing_config_file_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), &["--config", "nope.toml", "check-config"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope.toml"));
}

#[test]
fn bad_cli_flags_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), &["--listen", "nowhere", "check-config"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--listen"));
    let out = run(dir.path(), &["frobnicate"], &[]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn version_flag() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), &["--version"], &[]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("meteomesh {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn secrets_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("meteomesh.toml"),
        "[bus]\nmode = \"external\"\npassword = \"ext-secret-123\"\n\
         [[bus.users]]\nusername = \"svc\"\npassword = \"svc-secret-456\"\n",
    )
    .unwrap();
    let out = run(dir.path(), &["print-config"], &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(!stdout.contains("ext-secret-123") && !stdout.contains("svc-secret-456"));
    assert!(stdout.contains("[redacted]"));
}

/// A running server with debug logging never writes a configured secret to its log.
#[test]
fn secrets_never_logged() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_test_config(dir.path(), "");
    let p = ServeProcess::start(
        dir.path(),
        &["--config", config.to_str().unwrap(), "--log-level", "debug"],
        &[],
    );
    let (status, mut log) = p.terminate();
    assert!(status.success());
    log.retain(|l| l.contains(SERVICE_PASSWORD));
    assert!(log.is_empty(), "secret in log: {log:?}");
}
