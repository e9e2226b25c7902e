//! Structural checks of the deployment files, for machines without a Docker engine or a
//! Kubernetes cluster: `docker-compose.yml`, `deploy/k8s/`, `deploy/prometheus/`,
//! `deploy/grafana/`, and the metrics and operations docs.
//!
//! What is checked is what breaks a deployment silently: every YAML file parses; every service
//! in compose and Kubernetes runs a real subcommand of the binary, and every service the binary
//! can run is deployed, scraped and on the dashboard; every `SWITCHBOARD_*` variable named there
//! is one the configuration reads, with a value it accepts (`switchboard::from_vars`, the same code
//! path as the real environment); ports, probes and scrape targets agree with the configuration;
//! Prometheus configs and rules pass `promtool check` and the rules' unit tests pass `promtool
//! test rules`; every dashboard query is valid PromQL; every metric the rules and the dashboard
//! use is in the catalogue (`switchboard::catalogue()`), and the catalogue and every alert are
//! documented.
//!
//! Needs `promtool` (Debian's `prometheus` package, which `./test` installs) and the
//! `switchboard` binary; no broker, no database.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_norway::Value;
use switchboard_core::config::{Service, Settings};
use switchboard_tests::switchboard_bin;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// One YAML document, with `<<` merge keys applied (docker compose applies them too).
fn yaml(path: &Path) -> Value {
    let mut value: Value =
        serde_norway::from_str(&read(path)).unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()));
    value.apply_merge().unwrap_or_else(|e| panic!("{}: merge keys: {e}", path.display()));
    value
}

/// Every document of a multi-document YAML file.
fn yaml_documents(path: &Path) -> Vec<Value> {
    let text = read(path);
    serde_norway::Deserializer::from_str(&text)
        .map(|document| {
            serde::Deserialize::deserialize(document)
                .unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()))
        })
        .filter(|value: &Value| !value.is_null())
        .collect()
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => panic!("expected a scalar, got {other:?}"),
    }
}

fn strings(value: &Value) -> Vec<String> {
    value.as_sequence().map(|s| s.iter().map(text).collect()).unwrap_or_default()
}

/// Whether `switchboard <name>` is a command of the binary (clap answers `--help` before any
/// configuration is read or connection made).
fn is_subcommand(name: &str) -> bool {
    Command::new(switchboard_bin())
        .args([name, "--help"])
        .output()
        .map(|out| out.status.success())
        .unwrap_or(false)
}

/// The services this build can run: those of `Service::ALL` the binary has a command for. A
/// service that gains its command must then be deployed, scraped and on the dashboard, or these
/// tests fail.
fn runnable() -> Vec<Service> {
    let services: Vec<Service> = Service::ALL.into_iter().filter(|s| is_subcommand(s.name())).collect();
    assert!(services.len() >= 5, "the binary runs the pipeline's services: {services:?}");
    assert!(!is_subcommand("no-such-service"), "is_subcommand can tell");
    services
}

fn by_name(name: &str) -> Service {
    Service::ALL.into_iter().find(|s| s.name() == name).unwrap_or_else(|| panic!("no service {name}"))
}

/// Checks a deployment's `SWITCHBOARD_*` variables: each is a key the configuration reads, and
/// together they load and validate. Returns the settings they make.
fn check_env(what: &str, env: &BTreeMap<String, String>) -> Settings {
    let known = switchboard::env_keys();
    for key in env.keys().filter(|k| k.starts_with("SWITCHBOARD_")) {
        let read = known.iter().any(|k| k == key || (k.ends_with("__") && key.starts_with(k.as_str())));
        assert!(read, "{what}: {key} is not a setting Switchboard reads (known: {known:?})");
    }
    switchboard::from_vars(env)
        .unwrap_or_else(|e| panic!("{what}: the configuration refuses its environment: {e}"))
}

fn promtool() -> &'static str {
    let found = Command::new("promtool").arg("--version").output().is_ok_and(|o| o.status.success());
    assert!(
        found,
        "promtool not found: install Debian's `prometheus` package (./test does: ensure_prometheus)"
    );
    "promtool"
}

/// Runs promtool in `dir`; panics with its output unless it succeeds.
fn run_promtool(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(promtool()).args(args).current_dir(dir).output().expect("run promtool");
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool {args:?} failed:\n{all}");
    all
}

/// The ports a compose `ports:` entry publishes, as `(host, container)`.
fn published(entry: &str) -> (u16, u16) {
    let parts: Vec<&str> = entry.split(':').collect();
    let port = |s: &str| s.split('/').next().and_then(|p| p.parse().ok()).expect("port");
    (port(parts[parts.len() - 2]), port(parts[parts.len() - 1]))
}

/// The port of the first `http://host:PORT/` in `text`.
fn url_port(text: &str) -> Option<u16> {
    let rest = &text[text.find("http://")? + "http://".len()..];
    let authority = rest.split('/').next()?;
    authority.rsplit(':').next()?.parse().ok()
}

/// A compose value as `docker compose` gives it to the container with the `.env` that
/// `deploy/compose-env.sh` writes: every `${NAME:?why}` must name a variable the script writes
/// (else compose would stop with `why`), and gets a value like the script's.
fn compose_interpolated(what: &str, value: &str) -> String {
    let script = read(&repo().join("deploy/compose-env.sh"));
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').unwrap_or_else(|| panic!("{what}: unclosed ${{ in {value:?}"));
        let inner = &rest[start + 2..start + end];
        let name = inner.split([':', '-', '?']).next().unwrap_or_default();
        assert!(
            inner.contains(":?") && script.contains(&format!(" {name}")),
            "{what}: ${{{inner}}} must be required (:?) and written by deploy/compose-env.sh"
        );
        out.push_str(&format!("{}-from-compose-env-0123456789abcdef", name.to_lowercase()));
        rest = &rest[start + end + 1..];
    }
    out.push_str(rest);
    out
}

#[test]
fn compose_runs_every_service_on_real_commands_settings_and_ports() {
    let root = repo();
    let compose = yaml(&root.join("docker-compose.yml"));
    let services = compose["services"].as_mapping().expect("services");
    let mut deployed = BTreeSet::new();
    for (name, spec) in services {
        let name = text(name);
        if spec["image"].as_str() != Some("switchboard:latest") {
            continue;
        }
        let command = strings(&spec["command"]);
        let subcommand = command.first().unwrap_or_else(|| panic!("compose {name}: no command"));
        assert!(is_subcommand(subcommand), "compose {name}: `switchboard {subcommand}` is no command");
        let env: BTreeMap<String, String> = match &spec["environment"] {
            Value::Mapping(map) => map.iter().map(|(k, v)| (text(k), text(v))).collect(),
            other => panic!("compose {name}: environment as a mapping, got {other:?}"),
        };
        let env: BTreeMap<String, String> =
            env.into_iter().map(|(k, v)| (k, compose_interpolated(&format!("compose {name}"), &v))).collect();
        let settings = check_env(&format!("compose {name}"), &env);
        assert_eq!(
            settings.kafka.brokers, "kafka:9092",
            "compose {name}: the services reach the compose Kafka"
        );
        let Some(service) = Service::ALL.into_iter().find(|s| s.name() == subcommand) else {
            continue; // init: a one-off
        };
        deployed.insert(service.name());
        assert_eq!(&name, service.name(), "compose names each service after its command");
        if let Err(error) = switchboard::check_start(&settings, service) {
            panic!("compose {name}: the service would refuse its settings: {error}");
        }

        let ops = settings.ops_listen_addr(service).port();
        let health = strings(&spec["healthcheck"]["test"]).join(" ");
        assert!(health.contains("/readyz"), "compose {name}: the healthcheck asks /readyz: {health}");
        assert_eq!(url_port(&health), Some(ops), "compose {name}: the healthcheck asks the ops port");

        let replicas = spec["deploy"]["replicas"].as_u64().unwrap_or(1);
        for entry in strings(&spec["ports"]) {
            let (_, container) = published(&entry);
            assert_eq!(
                container,
                settings.listen_addr(service).port(),
                "compose {name} publishes its own port"
            );
            if ops != settings.listen_addr(service).port() {
                assert_ne!(container, ops, "compose {name}: the ops port stays off the host");
            }
            assert_eq!(replicas, 1, "compose {name}: a host port binds once, so one replica");
        }
        if service.is_consumer() {
            assert!(replicas >= 2, "compose {name}: consumer stages run several replicas, got {replicas}");
            assert!(
                replicas <= u64::try_from(settings.kafka.partitions).unwrap_or(0),
                "compose {name}: replicas beyond the partitions would stand idle"
            );
        }
    }
    for service in runnable() {
        assert!(deployed.contains(service.name()), "compose runs no `{}`", service.name());
    }

    // Prometheus and Grafana get the files of this repository.
    for (name, _) in services.iter().filter(|(n, _)| ["prometheus", "grafana"].contains(&text(n).as_str())) {
        let name = text(name);
        for volume in strings(&services[name.as_str()]["volumes"]) {
            if let Some(source) = volume.strip_prefix("./") {
                let source = source.split(':').next().unwrap_or_default();
                assert!(root.join(source).exists(), "compose {name} mounts {source}, which is missing");
            }
        }
    }
    let prometheus = strings(&services["prometheus"]["command"]).join(" ");
    assert!(prometheus.contains("--config.file=/etc/prometheus/prometheus.yml"), "{prometheus}");
    let provider = yaml(&root.join("deploy/grafana/provisioning/dashboards/switchboard.yml"));
    let dashboards = text(&provider["providers"][0]["options"]["path"]);
    let mounted = strings(&services["grafana"]["volumes"]);
    assert!(
        mounted.iter().any(|v| v == &format!("./deploy/grafana/dashboards:{dashboards}:ro")),
        "compose grafana mounts the dashboards where the provider reads them ({dashboards}): {mounted:?}"
    );
}

/// A Kubernetes object of `deploy/k8s`.
struct Object {
    file: String,
    value: Value,
}

impl Object {
    fn kind(&self) -> &str {
        self.value["kind"].as_str().unwrap_or_default()
    }
    fn name(&self) -> String {
        text(&self.value["metadata"]["name"])
    }
    fn what(&self) -> String {
        format!("{} {} ({})", self.kind(), self.name(), self.file)
    }
}

fn k8s_objects() -> Vec<Object> {
    let dir = repo().join("deploy/k8s");
    let kustomization = yaml(&dir.join("kustomization.yaml"));
    let resources = strings(&kustomization["resources"]);
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .expect("deploy/k8s")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|f| f.ends_with(".yaml") && f != "kustomization.yaml")
        .collect();
    on_disk.sort();
    let mut listed = resources.clone();
    listed.sort();
    assert_eq!(listed, on_disk, "kustomization.yaml lists every manifest of deploy/k8s, and only those");
    resources
        .iter()
        .flat_map(|file| {
            yaml_documents(&dir.join(file)).into_iter().map(|value| Object { file: file.clone(), value })
        })
        .collect()
}

fn labels(value: &Value) -> BTreeMap<String, String> {
    value.as_mapping().map(|m| m.iter().map(|(k, v)| (text(k), text(v))).collect()).unwrap_or_default()
}

fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

#[test]
fn kubernetes_manifests_deploy_every_service_consistently() {
    let objects = k8s_objects();
    for object in &objects {
        assert!(!object.kind().is_empty() && !object.name().is_empty(), "{}: kind and name", object.file);
        assert!(object.value["apiVersion"].as_str().is_some(), "{}: apiVersion", object.what());
    }
    let of_kind = |kind: &'static str| objects.iter().filter(move |o| o.kind() == kind);
    let config = of_kind("ConfigMap").next().expect("a ConfigMap");
    let secret = of_kind("Secret").next().expect("a Secret");
    let mut shared: BTreeMap<String, String> = labels(&config.value["data"]);
    // The Secret ships placeholders, which the services refuse, so that nobody runs on them; the
    // rest of the test fills them in as an operator does.
    let placeholders = labels(&secret.value["stringData"]);
    let mut unfilled = shared.clone();
    unfilled.extend(placeholders.clone());
    let refused = switchboard::from_vars(&unfilled).expect_err("the Secret's placeholders are refused");
    assert!(refused.to_string().contains("placeholder"), "{refused}");
    shared.extend(
        placeholders
            .into_iter()
            .map(|(k, v)| (k, v.replace("CHANGE-ME", "filled-in-0123456789abcdef0123456789"))),
    );
    let partitions = check_env("k8s ConfigMap + Secret", &shared).kafka.partitions;

    // Every pod template: a real command, settings it accepts, probes on the ops port.
    let mut templates = Vec::new();
    for object in of_kind("Deployment").chain(of_kind("Job")) {
        let spec = &object.value["spec"];
        let pod = &spec["template"];
        let containers = pod["spec"]["containers"].as_sequence().expect("containers");
        assert_eq!(containers.len(), 1, "{}: one container", object.what());
        let container = &containers[0];
        let args = strings(&container["args"]);
        let command = args.first().unwrap_or_else(|| panic!("{}: args", object.what()));
        assert!(is_subcommand(command), "{}: `switchboard {command}` is no command", object.what());
        let from: Vec<String> = container["envFrom"]
            .as_sequence()
            .into_iter()
            .flatten()
            .filter_map(|e| e["configMapRef"]["name"].as_str().or(e["secretRef"]["name"].as_str()))
            .map(str::to_owned)
            .collect();
        assert!(from.contains(&config.name()), "{}: reads the ConfigMap", object.what());
        assert!(from.contains(&secret.name()), "{}: reads the Secret", object.what());
        let mut env = shared.clone();
        for var in container["env"].as_sequence().into_iter().flatten() {
            let _ = env.insert(text(&var["name"]), text(&var["value"]));
        }
        let settings = check_env(&object.what(), &env);
        if object.kind() == "Job" {
            continue;
        }
        let service = by_name(command);
        assert_eq!(object.name(), service.name(), "Deployments are named after their command");
        if let Err(error) = switchboard::check_start(&settings, service) {
            panic!("{}: the service would refuse its settings: {error}", object.what());
        }
        let template_labels = labels(&pod["metadata"]["labels"]);
        assert!(
            selects(&labels(&spec["selector"]["matchLabels"]), &template_labels),
            "{}: the selector selects its own pods",
            object.what()
        );
        let ports: BTreeMap<String, u16> = container["ports"]
            .as_sequence()
            .expect("ports")
            .iter()
            .map(|p| (text(&p["name"]), text(&p["containerPort"]).parse().expect("port")))
            .collect();
        let ops = settings.ops_listen_addr(service).port();
        let listen = settings.listen_addr(service).port();
        let named = |port: &Value| -> u16 {
            let name = text(port);
            *ports.get(&name).unwrap_or_else(|| panic!("{}: no container port {name}", object.what()))
        };
        for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
            let get = &container[probe]["httpGet"];
            assert_eq!(get["path"].as_str(), Some(path), "{}: {probe} asks {path}", object.what());
            assert_eq!(named(&get["port"]), ops, "{}: {probe} on the ops port", object.what());
        }
        assert!(ports.values().any(|p| *p == ops), "{}: exposes the ops port {ops}", object.what());
        if !service.is_consumer() {
            assert_eq!(ports.get("http"), Some(&listen), "{}: `http` is the service's port", object.what());
        }
        let annotations = labels(&pod["metadata"]["annotations"]);
        assert_eq!(annotations.get("prometheus.io/port"), Some(&ops.to_string()), "{}", object.what());
        let grace = pod["spec"]["terminationGracePeriodSeconds"].as_u64().unwrap_or(30);
        assert!(
            grace * 1000
                > settings.pipeline.drain_timeout_ms.max(settings.http.drain_timeout_ms.unwrap_or(10_000)),
            "{}: the grace period outlasts the drain",
            object.what()
        );
        templates.push((service, template_labels, ports));
    }
    let deployed: BTreeSet<&str> = templates.iter().map(|(s, _, _)| s.name()).collect();
    for service in runnable() {
        assert!(deployed.contains(service.name()), "deploy/k8s has no Deployment for {}", service.name());
    }

    // Services route to a Deployment's named port; `<service>-ops` is the headless one Prometheus
    // resolves.
    for object in of_kind("Service") {
        let selector = labels(&object.value["spec"]["selector"]);
        let (service, _, ports) = templates
            .iter()
            .find(|(_, l, _)| selects(&selector, l))
            .unwrap_or_else(|| panic!("{} selects no Deployment", object.what()));
        for port in object.value["spec"]["ports"].as_sequence().expect("ports") {
            let target = text(&port["targetPort"]);
            let number = ports.get(&target).copied().or_else(|| target.parse().ok());
            assert_eq!(
                number,
                Some(text(&port["port"]).parse().expect("port")),
                "{}: port {target}",
                object.what()
            );
        }
        if object.name().ends_with("-ops") {
            assert_eq!(object.name(), format!("{}-ops", service.name()), "{}", object.what());
            assert_eq!(
                object.value["spec"]["clusterIP"].as_str(),
                Some("None"),
                "{}: headless",
                object.what()
            );
        }
    }
    for (service, template_labels, _) in &templates {
        let name = service.name();
        let pdb = of_kind("PodDisruptionBudget")
            .find(|p| selects(&labels(&p.value["spec"]["selector"]["matchLabels"]), template_labels));
        assert!(pdb.is_some(), "{name}: no PodDisruptionBudget selects its pods");
        let hpa = of_kind("HorizontalPodAutoscaler")
            .find(|h| h.value["spec"]["scaleTargetRef"]["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("{name}: no HorizontalPodAutoscaler"));
        assert_eq!(hpa.value["spec"]["scaleTargetRef"]["kind"].as_str(), Some("Deployment"));
        let max = hpa.value["spec"]["maxReplicas"].as_i64().expect("maxReplicas");
        let min = hpa.value["spec"]["minReplicas"].as_i64().unwrap_or(1);
        assert!(min >= 2 && min <= max, "{name}: HPA keeps two replicas for the PodDisruptionBudget");
        if service.is_consumer() {
            assert!(
                max <= i64::from(partitions),
                "{name}: HPA maxReplicas {max} beyond the {partitions} partitions would stand idle"
            );
        }
    }
    let ops_services: BTreeSet<String> =
        of_kind("Service").map(Object::name).filter(|n| n.ends_with("-ops")).collect();
    let prometheus = yaml(&repo().join("deploy/prometheus/prometheus-k8s.yml"));
    for job in prometheus["scrape_configs"].as_sequence().expect("scrape_configs") {
        for name in
            job["dns_sd_configs"].as_sequence().into_iter().flatten().flat_map(|sd| strings(&sd["names"]))
        {
            let service = name.split('.').next().unwrap_or_default();
            assert!(ops_services.contains(service), "prometheus-k8s.yml resolves {name}: no such Service");
        }
    }
}

/// For each scrape job, the service it scrapes (its `service` label) and the port.
fn scrape_jobs(config: &Value) -> BTreeMap<String, u16> {
    let mut jobs = BTreeMap::new();
    for job in config["scrape_configs"].as_sequence().expect("scrape_configs") {
        let service = job["relabel_configs"]
            .as_sequence()
            .into_iter()
            .flatten()
            .find(|r| r["target_label"].as_str() == Some("service"))
            .map(|r| text(&r["replacement"]))
            .unwrap_or_else(|| panic!("job {:?} sets no `service` label", job["job_name"]));
        let ports: BTreeSet<u16> = job["dns_sd_configs"]
            .as_sequence()
            .into_iter()
            .flatten()
            .map(|sd| text(&sd["port"]).parse().expect("port"))
            .collect();
        assert_eq!(ports.len(), 1, "job for {service}: one port");
        assert_eq!(
            text(&job["job_name"]),
            format!("switchboard-{service}"),
            "the alert rules match `switchboard.*`"
        );
        let _ = jobs.insert(service, ports.into_iter().next().unwrap_or_default());
    }
    jobs
}

#[test]
fn prometheus_configs_scrape_every_service_and_pass_promtool() {
    let dir = repo().join("deploy/prometheus");
    let defaults = switchboard::from_vars(Vec::<(String, String)>::new()).expect("defaults");
    for file in ["prometheus.yml", "prometheus-k8s.yml"] {
        let out = run_promtool(&dir, &["check", "config", file]);
        assert!(out.contains("SUCCESS"), "{out}");
        let jobs = scrape_jobs(&yaml(&dir.join(file)));
        for service in runnable() {
            assert_eq!(
                jobs.get(service.name()),
                Some(&defaults.ops_listen_addr(service).port()),
                "{file} scrapes {} on its ops port",
                service.name()
            );
        }
    }
    // The compose config resolves the compose services' names.
    let compose = yaml(&repo().join("docker-compose.yml"));
    let config = yaml(&dir.join("prometheus.yml"));
    for job in config["scrape_configs"].as_sequence().expect("scrape_configs") {
        for name in
            job["dns_sd_configs"].as_sequence().into_iter().flatten().flat_map(|sd| strings(&sd["names"]))
        {
            assert!(
                !compose["services"][name.as_str()].is_null(),
                "prometheus.yml resolves {name}: no compose service"
            );
        }
    }
    let rules: Vec<String> = std::fs::read_dir(dir.join("rules"))
        .expect("rules")
        .filter_map(|e| Some(format!("rules/{}", e.ok()?.file_name().into_string().ok()?)))
        .collect();
    assert!(!rules.is_empty());
    let mut args = vec!["check", "rules"];
    args.extend(rules.iter().map(String::as_str));
    let _ = run_promtool(&dir, &args);
    let out = run_promtool(&dir, &["test", "rules", "tests/switchboard_test.yml"]);
    assert!(out.contains("SUCCESS"), "{out}");
}

/// Every `switchboard_*` and `switchboard:*` name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("switchboard") {
        let tail = &rest[at..];
        let end =
            tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')).unwrap_or(tail.len());
        let name = &tail[..end];
        if name.starts_with("switchboard_") || name.starts_with("switchboard:") {
            names.insert(name.to_owned());
        }
        rest = &tail[end.max(1)..];
    }
    names
}

/// The series names a metric of the catalogue exposes (a histogram's `_bucket`, `_sum`, `_count`).
fn exposed_names() -> BTreeSet<String> {
    switchboard::catalogue()
        .into_iter()
        .flat_map(|m| match m.kind {
            "histogram" => {
                vec![format!("{}_bucket", m.name), format!("{}_sum", m.name), format!("{}_count", m.name)]
            }
            _ => vec![m.name],
        })
        .collect()
}

fn alert_rules() -> Vec<Value> {
    let dir = repo().join("deploy/prometheus/rules");
    let mut rules = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("rules") {
        let rules_file = yaml(&entry.expect("entry").path());
        for group in rules_file["groups"].as_sequence().expect("groups") {
            rules.extend(group["rules"].as_sequence().expect("rules").iter().cloned());
        }
    }
    rules
}

#[test]
fn grafana_dashboard_has_a_row_per_stage_and_only_valid_queries() {
    let root = repo();
    let datasources = yaml(&root.join("deploy/grafana/provisioning/datasources/prometheus.yml"));
    let uid = text(&datasources["datasources"][0]["uid"]);
    assert_eq!(text(&datasources["datasources"][0]["type"]), "prometheus");
    let provider = yaml(&root.join("deploy/grafana/provisioning/dashboards/switchboard.yml"));
    assert_eq!(text(&provider["providers"][0]["type"]), "file");

    let dashboard: serde_json::Value =
        serde_json::from_str(&read(&root.join("deploy/grafana/dashboards/switchboard.json"))).expect("JSON");
    assert!(dashboard["uid"].is_string() && dashboard["title"].is_string());
    let panels = dashboard["panels"].as_array().expect("panels");
    let rows: Vec<&str> =
        panels.iter().filter(|p| p["type"] == "row").filter_map(|p| p["title"].as_str()).collect();
    for service in runnable() {
        assert!(
            rows.iter().any(|r| r.split_whitespace().next() == Some(service.name())),
            "no dashboard row for {} in {rows:?}",
            service.name()
        );
    }

    let mut cells = BTreeSet::new();
    for panel in panels {
        let at = |k: &str| {
            panel["gridPos"][k].as_i64().unwrap_or_else(|| panic!("{}: gridPos.{k}", panel["title"]))
        };
        for x in at("x")..at("x") + at("w") {
            for y in at("y")..at("y") + at("h") {
                assert!(cells.insert((x, y)), "panel {} overlaps another", panel["title"]);
            }
        }
    }

    // Each query, with Grafana's variables given values, becomes a recording rule: promtool
    // then parses every one as PromQL.
    let mut ids = BTreeSet::new();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    let mut used = BTreeSet::new();
    let mut queries = 0;
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        let title = panel["title"].as_str().unwrap_or_default();
        assert!(ids.insert(panel["id"].as_i64().expect("panel id")), "panel ids are unique: {title}");
        assert!(panel["gridPos"]["w"].as_i64().is_some_and(|w| (1..=24).contains(&w)), "{title}: gridPos");
        let targets = panel["targets"].as_array().unwrap_or_else(|| panic!("{title}: no targets"));
        assert!(!targets.is_empty(), "{title}: no targets");
        for target in targets {
            assert_eq!(target["datasource"]["uid"].as_str(), Some(uid.as_str()), "{title}: datasource");
            let expr = target["expr"].as_str().unwrap_or_else(|| panic!("{title}: no expr"));
            used.extend(metric_names(expr));
            let expr = expr.replace("$__rate_interval", "5m").replace("$__interval", "1m");
            queries += 1;
            rules.push_str(&format!(
                "      - record: dashboard:query:{queries}\n        expr: {}\n",
                serde_json::Value::String(expr)
            ));
        }
    }
    let dir = std::env::temp_dir().join(format!("sb-dashboard-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(dir.join("dashboard.yml"), rules).expect("write");
    let _ = run_promtool(&dir, &["check", "rules", "dashboard.yml"]);
    let _ = std::fs::remove_dir_all(&dir);

    let exposed = exposed_names();
    let recorded: BTreeSet<String> =
        alert_rules().iter().filter_map(|r| r["record"].as_str().map(str::to_owned)).collect();
    for name in used {
        assert!(
            exposed.contains(&name) || recorded.contains(&name),
            "the dashboard uses {name}, which no service exposes"
        );
    }
}

#[test]
fn the_catalogue_and_every_alert_are_documented_and_rules_use_only_real_metrics() {
    let root = repo();
    let doc = read(&root.join("docs/metrics.md"));
    for metric in switchboard::catalogue() {
        let line = doc
            .lines()
            .find(|l| l.contains(&format!("`{}`", metric.name)))
            .unwrap_or_else(|| panic!("docs/metrics.md does not list {}", metric.name));
        for label in &metric.labels {
            assert!(
                line.contains(label.as_str()),
                "docs/metrics.md: {} lacks its label {label}",
                metric.name
            );
        }
        assert!(line.contains(metric.kind), "docs/metrics.md: {} is a {}", metric.name, metric.kind);
    }
    let exposed = exposed_names();
    let defined: BTreeSet<String> = switchboard::catalogue().into_iter().map(|m| m.name).collect();
    for name in metric_names(&doc).iter().filter(|n| n.starts_with("switchboard_")) {
        assert!(
            defined.contains(name) || exposed.contains(name),
            "docs/metrics.md names {name}, which is in no catalogue"
        );
    }

    let operations = read(&root.join("docs/operations.md"));
    let rules = alert_rules();
    let recorded: BTreeSet<String> =
        rules.iter().filter_map(|r| r["record"].as_str().map(str::to_owned)).collect();
    let alerts: Vec<&Value> = rules.iter().filter(|r| r["alert"].is_string()).collect();
    assert!(alerts.len() >= 5);
    for rule in &rules {
        for name in metric_names(&text(&rule["expr"])) {
            assert!(
                exposed.contains(&name) || recorded.contains(&name),
                "a rule uses {name}, which no service exposes"
            );
        }
    }
    for alert in alerts {
        let name = text(&alert["alert"]);
        assert!(operations.contains(&format!("### {name}")), "docs/operations.md does not explain {name}");
        let description = text(&alert["annotations"]["description"]);
        let anchor = format!("docs/operations.md#{}", name.to_lowercase());
        assert!(description.contains(&anchor), "{name}: its description links {anchor}");
        assert!(alert["labels"]["severity"].is_string(), "{name}: a severity");
    }
    for required in [
        "SwitchboardConsumerLagGrowing",
        "SwitchboardDeadLetters",
        "SwitchboardIngress5xx",
        "SwitchboardRouterFallbacks",
        "SwitchboardRecordingFailures",
    ] {
        assert!(
            operations.contains(&format!("### {required}")),
            "the alert {required} exists and is explained"
        );
    }
    let readme = read(&root.join("README.md"));
    assert!(readme.contains("docs/operations.md"), "the README links the operations doc");
}

/// `deploy/kafka/server.properties` as a map (comments and blank lines left out).
fn local_kafka_properties() -> BTreeMap<String, String> {
    read(&repo().join("deploy/kafka/server.properties"))
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let (key, value) = line.split_once('=').unwrap_or_else(|| panic!("not key=value: {line}"));
            (key.trim().to_owned(), value.trim().to_owned())
        })
        .collect()
}

/// The broker settings of the apache/kafka image's `KAFKA_*` variables (`KAFKA_LOG_DIRS` →
/// `log.dirs`), as its start script maps them.
fn image_properties(env: impl IntoIterator<Item = (String, String)>) -> BTreeMap<String, String> {
    env.into_iter()
        .filter_map(|(name, value)| {
            let key = name.strip_prefix("KAFKA_")?;
            (key != "HEAP_OPTS").then(|| (key.to_lowercase().replace('_', "."), value))
        })
        .collect()
}

fn pom_kafka_version() -> String {
    let pom = read(&repo().join("deploy/kafka/pom.xml"));
    let start = pom.find("<kafka.version>").expect("kafka.version in pom.xml") + "<kafka.version>".len();
    pom[start..].split('<').next().expect("version").to_owned()
}

#[test]
fn compose_and_kubernetes_run_the_local_kafka_version_and_settings() {
    let local = local_kafka_properties();
    let version = pom_kafka_version();
    assert!(version.starts_with("4."), "Kafka 4.x (KRaft only): {version}");
    for key in ["auto.create.topics.enable", "message.max.bytes", "replica.fetch.max.bytes"] {
        assert!(local.contains_key(key), "server.properties sets {key}");
    }
    assert_eq!(local["auto.create.topics.enable"], "false", "Switchboard creates its own topics");
    let max_record = switchboard_core::kafka::MAX_RECORD_BYTES.to_string();
    assert_eq!(local["message.max.bytes"], max_record, "the broker takes Switchboard's largest record");

    // docker compose: one node like the local broker, so every setting is the same.
    let compose = yaml(&repo().join("docker-compose.yml"));
    let kafka = &compose["services"]["kafka"];
    assert_eq!(text(&kafka["image"]), format!("apache/kafka:{version}"), "compose runs the pinned Kafka");
    let env = match &kafka["environment"] {
        Value::Mapping(map) => image_properties(map.iter().map(|(k, v)| (text(k), text(v)))),
        other => panic!("compose kafka: environment as a mapping, got {other:?}"),
    };
    for (key, value) in &local {
        assert_eq!(env.get(key), Some(value), "compose kafka sets {key} as server.properties does");
    }

    // Kubernetes: three nodes, so replication and the first rebalance's wait are production's;
    // everything else is the same.
    let production = [
        "node.id",
        "num.partitions",
        "default.replication.factor",
        "min.insync.replicas",
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "transaction.state.log.min.isr",
        "share.coordinator.state.topic.replication.factor",
        "share.coordinator.state.topic.min.isr",
        "group.initial.rebalance.delay.ms",
        "num.network.threads",
        "num.io.threads",
    ];
    let documents = yaml_documents(&repo().join("deploy/k8s/kafka/kafka.yaml"));
    let statefulset = documents
        .iter()
        .find(|d| d["kind"].as_str() == Some("StatefulSet"))
        .expect("deploy/k8s/kafka/kafka.yaml has a StatefulSet");
    let nodes = statefulset["spec"]["replicas"].as_u64().expect("replicas");
    let container = &statefulset["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(text(&container["image"]), format!("apache/kafka:{version}"), "k8s runs the pinned Kafka");
    let env = image_properties(
        container["env"].as_sequence().expect("env").iter().map(|e| (text(&e["name"]), text(&e["value"]))),
    );
    for (key, value) in local.iter().filter(|(k, _)| !production.contains(&k.as_str())) {
        assert_eq!(env.get(key), Some(value), "k8s kafka sets {key} as server.properties does");
    }
    let number = |key: &str| env.get(key).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let voters = env.get("controller.quorum.voters").map(|v| v.split(',').count()).unwrap_or(0);
    assert_eq!(u64::try_from(voters).unwrap_or(0), nodes, "every node votes in the controller quorum");
    for key in [
        "default.replication.factor",
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
    ] {
        assert_eq!(number(key), nodes, "k8s {key}: one copy per node");
    }
    assert!(number("min.insync.replicas") < nodes, "a node may be down without stopping acks=all writes");
    let shared = yaml(&repo().join("deploy/k8s/configmap.yaml"));
    let factor: u64 =
        text(&shared["data"]["SWITCHBOARD_KAFKA__REPLICATION_FACTOR"]).parse().expect("a number");
    assert!(factor <= nodes, "Switchboard's topics need {factor} nodes, the cluster has {nodes}");
    assert!(
        text(&shared["data"]["SWITCHBOARD_KAFKA__BROKERS"]).starts_with("kafka-bootstrap.kafka.svc"),
        "the services reach the cluster's bootstrap Service"
    );
}
