//! deploy/envoy/envoy.yaml: Envoy itself validates it, and every model route leads to a cluster
//! whose gRPC health check asks for that same model, which is what makes routing reach only
//! the replicas holding the model (see the comment at the top of envoy.yaml).

mod tools;

use std::collections::BTreeMap;
use std::time::Duration;

use tools::{repo_path, run};

const CONFIG: &str = "deploy/envoy/envoy.yaml";

#[test]
fn envoy_validates_the_shipped_config() {
    let r = run("envoy", &["--mode", "validate", "-c", CONFIG], None, Duration::from_secs(120));
    r.assert_success("envoy --mode validate");
    let report = format!("{}{}", r.stdout, r.stderr);
    assert!(report.contains(&format!("configuration '{CONFIG}' OK")), "{}", r.both());
    // Deprecated fields are removed in later Envoy releases; keep the config on current ones.
    assert!(!report.contains("Deprecated field") && !report.contains("][warning]["), "envoy warns about the config:\n{report}");
}

#[test]
fn envoy_rejects_a_broken_config_so_validation_can_fail() {
    let dir = tools::scratch_dir("envoy-broken");
    let text = std::fs::read_to_string(repo_path(CONFIG)).expect("envoy.yaml");
    let broken = dir.join("envoy.yaml");
    std::fs::write(&broken, text.replacen("lb_policy: ROUND_ROBIN", "lb_policy: ROUND_ROBIN_NOT_A_POLICY", 1)).expect("write");
    let r = run("envoy", &["--mode", "validate", "-c", broken.to_str().expect("utf-8 path")], None, Duration::from_secs(120));
    assert!(!r.status.success(), "envoy accepted an invalid lb_policy:\n{}", r.both());
}

/// (header value -> cluster) for each model route, and (cluster -> health-checked service).
fn routes_and_health(text: &str) -> (Vec<(String, String)>, BTreeMap<String, String>) {
    let field = |line: &str, key: &str| -> Option<String> {
        let rest = &line[line.find(key)? + key.len()..];
        let end = rest.find(['}', ',']).unwrap_or(rest.len());
        Some(rest[..end].trim().trim_matches('"').to_string())
    };
    let mut routes = Vec::new();
    let mut pending: Option<String> = None;
    let mut health = BTreeMap::new();
    let mut cluster: Option<String> = None;
    let mut in_clusters = false;
    for line in text.lines() {
        if line.trim_start().starts_with('#') {
            continue;
        }
        if line.starts_with("  clusters:") {
            in_clusters = true;
        }
        if !in_clusters {
            if let Some(model) = field(line, "exact:") {
                pending = Some(model);
            } else if let (Some(model), Some(c)) = (pending.as_ref(), field(line, "route: {cluster:")) {
                routes.push((model.clone(), c));
                pending = None;
            }
        } else if let Some(name) = line.strip_prefix("    - name: ") {
            cluster = Some(name.trim().to_string());
        } else if let (Some(c), Some(svc)) = (cluster.as_ref(), field(line, "service_name:")) {
            health.insert(c.clone(), svc);
        }
    }
    (routes, health)
}

#[test]
fn every_model_route_goes_to_a_cluster_health_checked_for_that_model() {
    let text = std::fs::read_to_string(repo_path(CONFIG)).expect("envoy.yaml");
    assert!(text.contains("name: x-hangar-model"), "the routes do not match on x-hangar-model");
    let (routes, health) = routes_and_health(&text);
    assert!(routes.len() >= 2, "expected at least two model routes, found {routes:?}");
    for (model, cluster) in &routes {
        let svc = health.get(cluster).unwrap_or_else(|| panic!("route for {model} goes to {cluster}, which has no gRPC health check"));
        assert_eq!(svc, model, "cluster {cluster} (route for model {model}) health-checks service {svc:?}");
    }
    // The fallback for requests without the header checks the whole server.
    assert_eq!(health.get("hangar_any").map(String::as_str), Some(""), "hangar_any must check the server (\"\")");
    // Panic mode would send a model's traffic to replicas that do not hold it.
    assert_eq!(text.matches("common_lb_config: *no_panic").count() + 1, health.len(), "a cluster lacks healthy_panic_threshold 0");
}
