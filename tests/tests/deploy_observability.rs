//! The observability configs: promtool checks the Prometheus scrape config (and the rule file it
//! loads), and a real collector, rotel, runs with deploy/otel/rotel.env and forwards an OTLP
//! span through its shipped pipeline to a second rotel standing in for the tracing backend.

mod tools;

use std::process::Command;
use std::time::Duration;

use tools::{free_port, repo_path, run, scratch_dir, tool, wait_for, Daemon};

#[test]
fn promtool_accepts_the_prometheus_config_and_its_rules() {
    let r = run("promtool", &["check", "config", "deploy/prometheus/prometheus.yml"], None, Duration::from_secs(60));
    r.assert_success("promtool check config");
    let report = format!("{}{}", r.stdout, r.stderr);
    assert!(report.contains("prometheus.yml is valid prometheus config file syntax"), "{report}");
    assert!(report.contains("SUCCESS: 1 rule files found"), "the rule file was not checked:\n{report}");
}

#[test]
fn promtool_rejects_a_broken_rule_so_the_check_can_fail() {
    let dir = scratch_dir("promtool-broken");
    std::fs::copy(repo_path("deploy/prometheus/prometheus.yml"), dir.join("prometheus.yml")).expect("copy");
    let rules = std::fs::read_to_string(repo_path("deploy/prometheus/hangar-rules.yml")).expect("rules");
    std::fs::write(dir.join("hangar-rules.yml"), rules.replacen("sum by (model)", "sum by (model", 1)).expect("write");
    let cfg = dir.join("prometheus.yml");
    let r = run("promtool", &["check", "config", cfg.to_str().expect("utf-8")], None, Duration::from_secs(60));
    assert!(!r.status.success(), "promtool accepted an unbalanced expression:\n{}", r.both());
}

/// KEY=VALUE pairs of deploy/otel/rotel.env; malformed lines fail the test.
fn rotel_env() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(repo_path("deploy/otel/rotel.env")).expect("rotel.env");
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap_or_else(|| panic!("rotel.env line without '=': {l}"));
            assert!(k.starts_with("ROTEL_") && !k.contains(' '), "rotel.env key {k:?}");
            assert!(!v.starts_with('"') && !v.starts_with('\''), "env-file values are not unquoted by docker/k8s: {l}");
            (k.to_string(), v.to_string())
        })
        .collect()
}

fn rotel() -> std::path::PathBuf {
    tool("rotel-agent", "ROTEL_AGENT")
}

/// rotel with no ROTEL_* variables inherited from the test's environment.
fn rotel_command() -> Command {
    let mut cmd = Command::new(rotel());
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("ROTEL_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

#[test]
fn rotel_env_file_sets_only_variables_rotel_reads() {
    // rotel ignores unknown variables, so a typo would silently fall back to a default.
    let help = run(rotel(), &["start", "--help"], None, Duration::from_secs(30));
    help.assert_success("rotel-agent start --help");
    let env = rotel_env();
    assert!(env.len() >= 5, "rotel.env looks empty: {env:?}");
    for (k, _) in &env {
        assert!(help.stdout.contains(&format!("[env: {k}=")), "rotel-agent does not read {k}");
    }
}

#[test]
fn rotel_with_the_shipped_config_forwards_an_otlp_span_to_the_backend() {
    let dir = scratch_dir("rotel-pipeline");
    let (backend_grpc, backend_http) = (free_port(), free_port());
    let (grpc, http) = (free_port(), free_port());

    // The tracing backend: a second rotel that prints every span it receives.
    let mut cmd = rotel_command();
    cmd.args(["start", "--exporter", "blackhole", "--debug-log", "traces", "--debug-log-verbosity", "detailed"]).args([
        "--otlp-grpc-endpoint",
        &format!("127.0.0.1:{backend_grpc}"),
        "--otlp-http-endpoint",
        &format!("127.0.0.1:{backend_http}"),
        "--pid-file",
        dir.join("backend.pid").to_str().expect("utf-8"),
        "--log-file",
        dir.join("backend.rotel.log").to_str().expect("utf-8"),
    ]);
    let mut backend = Daemon::spawn("rotel (backend)", cmd, dir.join("backend.log"));

    // The collector: exactly rotel.env, with loopback ports and the backend's address.
    let mut cmd = rotel_command();
    cmd.arg("start").envs(rotel_env()).envs([
        ("ROTEL_OTLP_GRPC_ENDPOINT", format!("127.0.0.1:{grpc}")),
        ("ROTEL_OTLP_HTTP_ENDPOINT", format!("127.0.0.1:{http}")),
        ("ROTEL_OTLP_EXPORTER_ENDPOINT", format!("http://127.0.0.1:{backend_grpc}")),
        ("ROTEL_PID_FILE", dir.join("collector.pid").display().to_string()),
        ("ROTEL_LOG_FILE", dir.join("collector.rotel.log").display().to_string()),
    ]);
    let mut collector = Daemon::spawn("rotel (collector, deploy/otel/rotel.env)", cmd, dir.join("collector.log"));

    let trace_id = format!("{:032x}", 0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736u128 ^ std::process::id() as u128);
    let span = "hangar.deploy.otel-test";
    let send = run(
        "python3",
        &["tests/scripts/otlp_send_span.py", &format!("127.0.0.1:{grpc}"), "hangar-deploy-test", span, &trace_id],
        None,
        Duration::from_secs(60),
    );
    collector.assert_running();
    send.assert_success(&format!("OTLP export to the collector\n--- collector log\n{}", collector.log_text()));

    let seen = wait_for("the span at the backend", Duration::from_secs(30), || {
        backend.assert_running();
        collector.assert_running();
        let log = backend.log_text();
        (log.contains(&format!("Trace ID       : {trace_id}")) && log.contains(&format!("Name           : {span}"))).then_some(log)
    });
    // The collector's own processing happened: the resource attribute from rotel.env was added.
    assert!(seen.contains("deployment.environment: Str(production)"), "resource attributes from rotel.env missing:\n{seen}");
    assert!(seen.contains("service.name: Str(hangar-deploy-test)"), "{seen}");
}
