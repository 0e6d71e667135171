//! The Helm chart in deploy/helm/hangar: `helm lint`, then every rendering validated against the
//! Kubernetes 1.34 schemas by kubernetes-validate (strict: unknown fields are errors), with the
//! defaults and with every optional feature on; then the wiring the schemas cannot see.

mod tools;

use std::time::Duration;

use tools::{helm_template, rendered, run};

/// Every optional feature on: GPU, ServiceMonitor, HPA, PDB, OTLP, preloaded models, hostPath.
const ALL_FEATURES: &[&str] = &[
    "--set", "gpu.enabled=true",
    "--set", "gpu.runtimeClassName=nvidia",
    "--set-string", "nodeSelector.nvidia\\.com/gpu\\.present=true",
    "--set", "tolerations[0].key=nvidia.com/gpu,tolerations[0].operator=Exists,tolerations[0].effect=NoSchedule",
    "--set", "preload={smollm2,gemma-3}",
    "--set", "otlp.endpoint=http://otel-collector.observability:4317",
    "--set", "metrics.serviceMonitor.enabled=true",
    "--set", "autoscaling.enabled=true",
    "--set", "podDisruptionBudget.enabled=true",
    "--set", "models.type=hostPath",
    "--set", "replicaCount=3",
];

/// Feeds a rendering to kubernetes-validate and returns its report; fails on any error.
#[track_caller]
fn validate(manifests: &str) -> String {
    let r = run("kubernetes-validate", &["-k", "1.34", "--strict", "-"], Some(manifests.as_bytes()), Duration::from_secs(180));
    r.assert_success("kubernetes-validate -k 1.34 --strict");
    let report = format!("{}{}", r.stdout, r.stderr);
    assert!(!report.contains("ERROR"), "kubernetes-validate reported errors:\n{report}");
    report
}

#[track_caller]
fn assert_validated(report: &str, resources: &[&str]) {
    for res in resources {
        assert!(report.contains(&format!("passed for resource {res}")), "{res} was not validated:\n{report}");
    }
}

#[test]
fn chart_passes_helm_lint_with_defaults_and_with_every_feature() {
    run("helm", &["lint", "--strict", "deploy/helm/hangar"], None, Duration::from_secs(120)).assert_success("helm lint");
    let mut args = vec!["lint", "--strict", "deploy/helm/hangar"];
    args.extend_from_slice(ALL_FEATURES);
    run("helm", &args, None, Duration::from_secs(120)).assert_success("helm lint with every feature");
}

#[test]
fn default_rendering_is_valid_kubernetes_1_34() {
    let out = helm_template(&[]);
    let report = validate(&out);
    assert_validated(
        &report,
        &["deployment/hangar", "service/hangar", "configmap/hangar", "persistentvolumeclaim/hangar-models"],
    );
    for absent in ["kind: HorizontalPodAutoscaler", "kind: ServiceMonitor", "kind: PodDisruptionBudget"] {
        assert!(!out.contains(absent), "{absent} rendered although its feature is off");
    }
}

#[test]
fn rendering_with_every_optional_feature_is_valid_kubernetes_1_34() {
    let out = helm_template(ALL_FEATURES);
    let report = validate(&out);
    assert_validated(
        &report,
        &[
            "deployment/hangar",
            "service/hangar",
            "configmap/hangar",
            "horizontalpodautoscaler/hangar",
            "poddisruptionbudget/hangar",
        ],
    );
    // hostPath replaces the claim.
    assert!(!out.contains("kind: PersistentVolumeClaim"), "a PVC rendered with models.type=hostPath");
    // kubernetes-validate has no schema for the Operator's CRD, so check what Prometheus needs:
    // the ServiceMonitor selects the Service's labels and names its metrics port.
    let sm = rendered(&out, "servicemonitor.yaml");
    let svc = rendered(&out, "service.yaml");
    assert!(sm.contains("apiVersion: monitoring.coreos.com/v1") && sm.contains("kind: ServiceMonitor"), "{sm}");
    for label in ["app.kubernetes.io/name: hangar", "app.kubernetes.io/instance: hangar"] {
        assert!(sm.contains(label) && svc.contains(label), "ServiceMonitor selector and Service disagree on {label}");
    }
    assert!(sm.contains("- port: metrics") && svc.contains("- name: metrics"), "ServiceMonitor port is not a Service port");
}

#[test]
fn an_existing_claim_or_emptydir_replaces_the_chart_made_claim() {
    let out = helm_template(&["--set", "models.pvc.existingClaim=shared-models"]);
    validate(&out);
    assert!(!out.contains("kind: PersistentVolumeClaim"));
    assert!(rendered(&out, "deployment.yaml").contains("claimName: shared-models"));
    let out = helm_template(&["--set", "models.type=emptyDir"]);
    validate(&out);
    assert!(rendered(&out, "deployment.yaml").contains("emptyDir: {}"));
}

/// `helm template` with `args` must fail, saying `why`.
#[track_caller]
fn refused(args: &[&str], why: &str) {
    let mut all = vec!["template", "hangar", "deploy/helm/hangar"];
    all.extend_from_slice(args);
    let r = run("helm", &all, None, Duration::from_secs(60));
    assert!(!r.status.success(), "helm rendered {args:?}:\n{}", r.both());
    assert!(r.stderr.contains(why), "{args:?} was refused for another reason than {why:?}:\n{}", r.both());
}

#[test]
fn values_schema_refuses_typos_and_wrong_types_at_render_time() {
    refused(&["--set", "models.type=nfs"], "value must be one of 'pvc', 'hostPath', 'emptyDir'");
    refused(&["--set", "replicas=3"], "additional properties 'replicas' not allowed");
    // Kubernetes wants label values as strings; --set would pass a boolean.
    refused(&["--set", "nodeSelector.gpu=true"], "got boolean, want string");
    refused(&["--set", "preload[0]=../etc/passwd"], "/preload/0");
}

#[test]
fn pods_are_probed_through_grpc_health_and_ready_only_with_their_first_model() {
    let out = helm_template(&["--set", "preload={smollm2,gemma-3}"]);
    let dep = rendered(&out, "deployment.yaml");
    // Native gRPC probes (grpc.health.v1): liveness and startup on the whole server,
    // readiness on the first preloaded model, which reports NOT_SERVING while it loads.
    let probe = |name: &str| {
        let start = dep.find(&format!("{name}:")).unwrap_or_else(|| panic!("no {name} in:\n{dep}"));
        let block = &dep[start..];
        let body = block.find('\n').map_or(block.len(), |i| i + 1);
        let rest = &block[body..];
        let end = rest.find("Probe:").unwrap_or(rest.len()).min(rest.find("resources:").unwrap_or(rest.len()));
        block[..body + end].to_string()
    };
    for p in ["startupProbe", "livenessProbe"] {
        let b = probe(p);
        assert!(b.contains("grpc:") && b.contains("port: 50051") && !b.contains("service:"), "{p}:\n{b}");
    }
    let r = probe("readinessProbe");
    assert!(r.contains("grpc:") && r.contains("port: 50051") && r.contains("service: \"smollm2\""), "readinessProbe:\n{r}");
    // Without preloaded models readiness falls back to the whole server.
    let plain = helm_template(&[]);
    assert!(!rendered(&plain, "deployment.yaml").contains("service: \""), "readiness names a model though none is preloaded");
}

#[test]
fn gpu_values_request_the_device_select_nodes_and_switch_the_backend() {
    let out = helm_template(ALL_FEATURES);
    let dep = rendered(&out, "deployment.yaml");
    for want in [
        "nvidia.com/gpu: 1",
        "runtimeClassName: nvidia",
        "nvidia.com/gpu.present: \"true\"",
        "key: nvidia.com/gpu",
        "- name: HANGAR_DEFAULTS__BACKEND\n              value: gpu",
    ] {
        assert!(dep.contains(want), "missing {want:?} in:\n{dep}");
    }
    let cpu = helm_template(&[]);
    let dep = rendered(&cpu, "deployment.yaml");
    assert!(!dep.contains("nvidia.com/gpu") && !dep.contains("HANGAR_DEFAULTS__BACKEND"), "CPU rendering asks for a GPU:\n{dep}");
}

#[test]
fn service_is_headless_and_exposes_grpc_and_metrics_ports() {
    let out = helm_template(&[]);
    let svc = rendered(&out, "service.yaml");
    assert!(svc.contains("clusterIP: None"), "{svc}");
    assert!(svc.contains("port: 50051") && svc.contains("appProtocol: kubernetes.io/h2c"), "{svc}");
    assert!(svc.contains("port: 9464"), "{svc}");
    let dep = rendered(&out, "deployment.yaml");
    for want in ["prometheus.io/scrape: \"true\"", "prometheus.io/port: \"9464\"", "prometheus.io/path: /metrics"] {
        assert!(dep.contains(want), "missing scrape annotation {want:?}");
    }
}

#[test]
fn otlp_endpoint_value_reaches_the_server_environment() {
    let out = helm_template(&["--set", "otlp.endpoint=http://collector.obs:4317"]);
    let dep = rendered(&out, "deployment.yaml");
    assert!(dep.contains("- name: HANGAR_TELEMETRY__OTLP_ENDPOINT\n              value: \"http://collector.obs:4317\""), "{dep}");
    let off = helm_template(&[]);
    assert!(!rendered(&off, "deployment.yaml").contains("OTLP_ENDPOINT"), "export is on without an endpoint");
}

#[test]
fn configmap_hangar_toml_matches_the_pod_ports_and_mounts() {
    let out = helm_template(&["--set", "ports.grpc=6000", "--set", "ports.metrics=6001", "--set", "preload={a,b}"]);
    let cm = rendered(&out, "configmap.yaml");
    for want in [
        "listen = \"0.0.0.0:6000\"",
        "metrics_listen = \"0.0.0.0:6001\"",
        "model_dir = \"/models\"",
        "preload = [\"a\", \"b\"]",
        "max_concurrent_requests = 64\n",
    ] {
        assert!(cm.contains(want), "missing {want:?} in hangar.toml:\n{cm}");
    }
    let dep = rendered(&out, "deployment.yaml");
    assert!(dep.contains("containerPort: 6000") && dep.contains("port: 6000") && dep.contains("containerPort: 6001"), "{dep}");
    assert!(dep.contains("mountPath: /models") && dep.contains("mountPath: /etc/hangar"), "{dep}");
    assert!(dep.contains("args: [\"serve\", \"--config\", \"/etc/hangar/hangar.toml\"]"), "{dep}");
}

#[test]
fn hpa_scales_the_deployment_on_per_pod_queue_depth() {
    let out = helm_template(&["--set", "autoscaling.enabled=true", "--set", "autoscaling.maxReplicas=8"]);
    let hpa = rendered(&out, "hpa.yaml");
    for want in ["kind: Deployment", "name: hangar\n", "type: Pods", "name: hangar_queue_depth", "averageValue: \"4\"", "maxReplicas: 8"] {
        assert!(hpa.contains(want), "missing {want:?} in:\n{hpa}");
    }
    // The HPA owns the replica count.
    assert!(!rendered(&out, "deployment.yaml").contains("replicas:"), "Deployment fixes replicas under an HPA");
}
