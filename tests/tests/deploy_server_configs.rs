//! The shipped configs against a live `hangar serve`: the hangar.toml files the image bakes and
//! the Helm chart renders are accepted by the server (it refuses unknown keys), and every metric
//! the Prometheus rules and the HPA name is one the server exports.
//!
//! Needs the gRPC server (issue 5, branch grpc): ignored until it is merged, never reported as
//! passing. Run with `HANGAR_BIN=... cargo test -p hangar-tests --test deploy_server_configs -- --ignored`.

mod tools;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use tools::{free_port, hangar_bin, health_serving, helm_template, http_get, rendered, repo_path, run, scratch_dir, wait_for, Daemon};

const MODEL: &str = "SmolLM2-135M-Instruct.Q4_1";

/// `hangar serve --config FILE` on loopback ports (flags and env beat the file's listen
/// addresses and model dir), healthy overall.
fn serve(dir: &Path, name: &str, config: &Path) -> (Daemon, String, String) {
    let (grpc, metrics) = (format!("127.0.0.1:{}", free_port()), format!("127.0.0.1:{}", free_port()));
    let mut cmd = Command::new(hangar_bin());
    cmd.args(["serve", "--config", config.to_str().expect("utf-8"), "--listen", &grpc, "--model-dir"])
        .arg(hangar_tests::model_dir())
        .env_remove("HANGAR_MODEL_DIR")
        .env("HANGAR_METRICS_LISTEN", &metrics);
    let mut daemon = Daemon::spawn(name, cmd, dir.join(format!("{name}.log")));
    wait_for(&format!("{name} to serve"), Duration::from_secs(120), || {
        daemon.assert_running();
        health_serving(&grpc, "").then_some(())
    });
    (daemon, grpc, metrics)
}

/// The hangar.toml in the chart's rendered ConfigMap.
fn chart_hangar_toml(extra: &[&str]) -> String {
    let out = helm_template(extra);
    let cm = rendered(&out, "configmap.yaml");
    let body = &cm[cm.find("hangar.toml: |\n").expect("hangar.toml key") + "hangar.toml: |\n".len()..];
    body.lines().map(|l| l.strip_prefix("    ").unwrap_or(l)).collect::<Vec<_>>().join("\n")
}

#[test]
fn baked_and_chart_rendered_hangar_toml_start_the_server() {
    let dir = scratch_dir("deploy-server-configs");
    let (_d, _, _) = serve(&dir, "baked", &repo_path("deploy/hangar.toml"));
    let file = dir.join("chart.toml");
    std::fs::write(&file, chart_hangar_toml(&["--set", &format!("preload={{{MODEL}}}")])).expect("write");
    let (mut d, grpc, _) = serve(&dir, "chart", &file);
    // The preload list from the chart is honoured: the model becomes SERVING.
    wait_for("the preloaded model", Duration::from_secs(180), || {
        d.assert_running();
        health_serving(&grpc, MODEL).then_some(())
    });
}

#[test]
fn metrics_named_by_the_rules_and_the_hpa_exist_on_a_live_server() {
    let dir = scratch_dir("deploy-server-metrics");
    let file = dir.join("hangar.toml");
    std::fs::write(&file, format!("preload = [\"{MODEL}\"]\n")).expect("write");
    let (mut d, grpc, metrics) = serve(&dir, "metrics", &file);
    wait_for("the preloaded model", Duration::from_secs(180), || {
        d.assert_running();
        health_serving(&grpc, MODEL).then_some(())
    });
    // One generation, so the request counter and the latency histogram have samples.
    let body = format!("{{\"model\":\"{MODEL}\",\"prompt\":\"Hi\",\"stopping\":{{\"maxTokens\":2}}}}");
    run("grpcurl", &["-plaintext", "-import-path", "proto", "-proto", "hangar/v1/inference.proto", "-d", &body, &grpc, "hangar.v1.Inference/Generate"], None, Duration::from_secs(120))
        .assert_success("Generate");
    let exposition = http_get(&metrics, "/metrics").expect("/metrics");

    let rules = std::fs::read_to_string(repo_path("deploy/prometheus/hangar-rules.yml")).expect("rules");
    let values = std::fs::read_to_string(repo_path("deploy/helm/hangar/values.yaml")).expect("values");
    let mut names: Vec<&str> = rules
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|w| w.starts_with("hangar_"))
        .collect();
    names.push(values.lines().find_map(|l| l.trim().strip_prefix("metricName: ")).expect("autoscaling.metricName"));
    names.sort_unstable();
    names.dedup();
    assert!(names.len() >= 3, "{names:?}");
    for name in names {
        assert!(
            exposition.lines().any(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} "))),
            "{name} (named in the rules or the HPA) is not exported:\n{exposition}"
        );
    }
}
