//! docker/ (image, compose stack, Prometheus, Grafana) and docker/k8s, checked without a Docker engine or
//! a cluster: the tools that validate them offline (docker-compose, promtool), the dashboard's queries
//! against what a live pgsluice exports, the image's entrypoint and healthcheck scripts run against a
//! live pgsluice, and the Kubernetes objects against the config they carry. The image build itself is
//! not run here (no engine); its build step is the cargo command checked below.

mod common;
mod deploy_util;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::pg::free_port;
use common::{Proxy, TestPg, http_get, scalar, wait_for};
use deploy_util::{exposition, int_setting, port_of, promql_selectors, read, repo, tool, yaml, yaml_docs};
use serde_json::Value;

/// Polls `f` every 20 ms until it gives a value; panics naming `what` after `deadline`.
async fn until<T, F, Fut>(deadline: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < end, "timed out after {deadline:?} waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn shipped_config() -> toml::Table {
    read("docker/pgsluice.toml").parse().expect("docker/pgsluice.toml is TOML")
}

fn metrics_port(config: &toml::Table) -> u16 {
    port_of(deploy_util::general(config, "metrics_addr").as_str().expect("metrics_addr string"))
}

fn listen_port(config: &toml::Table) -> u16 {
    int_setting(config, "listen_port") as u16
}

/// A container port of a compose service: "host:container" strings (v1) or {target: n} maps (v2).
fn compose_ports(service: &Value) -> BTreeSet<u16> {
    let ports = service["ports"].as_array().cloned().unwrap_or_default();
    ports
        .iter()
        .map(|p| match p {
            Value::String(s) => s.rsplit(':').next().and_then(|t| t.split('/').next()?.parse().ok()),
            other => other["target"].as_u64().map(|n| n as u16),
        })
        .map(|p| p.unwrap_or_else(|| panic!("unreadable port in {service}")))
        .collect()
}

/// (source, target) of a compose service's bind mounts.
fn compose_mounts(service: &Value) -> BTreeMap<String, String> {
    let vols = service["volumes"].as_array().cloned().unwrap_or_default();
    vols.iter()
        .map(|v| match v {
            Value::String(s) => {
                let parts: Vec<&str> = s.split(':').collect();
                (parts[1].to_string(), parts[0].to_string())
            }
            m => (m["target"].as_str().unwrap_or("").to_string(), m["source"].as_str().unwrap_or("").to_string()),
        })
        .collect()
}

/// docker-compose (v1, Debian's) accepts the stack; pgsluice gets the config and auth file at the paths
/// the image documents, publishes the ports the shipped config listens on, stops with SIGINT inside a
/// grace period covering transaction_timeout, and every bind-mounted file is there. Without the compose
/// file (or with a typo docker-compose rejects, or a mount of a file that does not exist) this fails.
#[test]
fn compose_stack_is_accepted_and_wires_what_the_image_expects() {
    let out = tool("docker-compose", "docker-compose", &["-f", "docker/docker-compose.yml", "config"]);
    assert!(out.status.success(), "docker-compose config: {}", String::from_utf8_lossy(&out.stderr));
    let stack = yaml(&String::from_utf8_lossy(&out.stdout));
    let services = &stack["services"];
    for name in ["postgres", "pgsluice", "prometheus", "grafana"] {
        assert!(services[name].is_object(), "service {name} in {stack}");
    }
    let px = &services["pgsluice"];
    let context = std::path::PathBuf::from(px["build"]["context"].as_str().expect("build context"));
    assert_eq!(context.canonicalize().unwrap(), repo().canonicalize().unwrap(), "the image builds from the repo root");
    assert!(context.join(px["build"]["dockerfile"].as_str().unwrap()).is_file());
    let config = shipped_config();
    let ports = compose_ports(px);
    assert!(ports.contains(&listen_port(&config)) && ports.contains(&metrics_port(&config)), "{ports:?}");
    let mounts = compose_mounts(px);
    assert!(mounts.contains_key("/etc/pgsluice/pgsluice.toml") && mounts.contains_key("/etc/pgsluice/userlist.txt"));
    assert_eq!(px["stop_signal"], "SIGINT");
    let grace = px["stop_grace_period"].as_str().and_then(|s| s.trim_end_matches('s').parse::<i64>().ok());
    assert!(grace.expect("stop_grace_period in seconds") > int_setting(&config, "transaction_timeout"));
    let prom_mounts = compose_mounts(&services["prometheus"]);
    assert!(prom_mounts.contains_key("/etc/prometheus/prometheus.yml"), "{prom_mounts:?}");
    let grafana_mounts = compose_mounts(&services["grafana"]);
    let dashboards_at =
        yaml(&read("docker/grafana/provisioning/dashboards/pgsluice.yml"))["providers"][0]["options"]["path"]
            .as_str()
            .expect("provider path")
            .to_string();
    assert!(grafana_mounts.contains_key("/etc/grafana/provisioning") && grafana_mounts.contains_key(&dashboards_at));
    for (service, mounts) in [("pgsluice", mounts), ("prometheus", prom_mounts), ("grafana", grafana_mounts)] {
        for (target, source) in mounts {
            assert!(std::path::Path::new(&source).exists(), "{service}: {source} (for {target}) does not exist");
        }
    }
}

/// promtool (Debian's prometheus package) accepts docker/prometheus.yml, and it scrapes the compose
/// service pgsluice on the shipped config's metrics port: a wrong port or host fails here.
#[test]
fn prometheus_config_passes_promtool_and_scrapes_pgsluice() {
    let out = tool("promtool", "prometheus", &["check", "config", "docker/prometheus.yml"]);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool check config: {text}");
    let prom = yaml(&read("docker/prometheus.yml"));
    let job = &prom["scrape_configs"][0];
    assert_eq!(job["metrics_path"].as_str().unwrap_or("/metrics"), "/metrics");
    let want = format!("pgsluice:{}", metrics_port(&shipped_config()));
    assert_eq!(job["static_configs"][0]["targets"][0], want.as_str());
}

/// Every PromQL expression of a dashboard (panel targets and template variables).
fn dashboard_exprs(dash: &Value) -> Vec<String> {
    let mut exprs: Vec<String> = dash["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().expect("a target with an expr").to_string())
        .collect();
    for var in dash["templating"]["list"].as_array().cloned().unwrap_or_default() {
        // label_values(SELECTOR, label): the selector is PromQL; the label must be on it.
        let q = var["query"].as_str().expect("variable query");
        let inner = q.strip_prefix("label_values(").and_then(|s| s.strip_suffix(')')).expect("label_values(...)");
        let (selector, label) = inner.rsplit_once(',').expect("label_values(selector, label)");
        exprs.push(format!("{selector}{{{}!=\"\"}}", label.trim()).replacen("}{", ",", 1));
    }
    exprs
}

/// The dashboard parses, uses the provisioned datasource, and every metric its queries select is a
/// sample name a live pgsluice's /metrics has (so `pgsluice_transaction_duration_seconds_bucket` is fine
/// and a misspelt `pgsluice_transaction_seconds_bucket`, a bare histogram name or a `_count` of a
/// counter is not); every label an exact matcher names exists there with that value (a
/// `state="wating"` fails). Labels Prometheus adds (instance, job) are allowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_queries_use_only_what_pgsluice_exports() {
    let dash: Value = serde_json::from_str(&read("docker/grafana/dashboards/pgsluice.json")).expect("dashboard JSON");
    let uid = yaml(&read("docker/grafana/provisioning/datasources/prometheus.yml"))["datasources"][0]["uid"].clone();
    for p in dash["panels"].as_array().unwrap() {
        assert_eq!(p["datasource"]["uid"], uid, "panel {} uses the provisioned datasource", p["title"]);
    }
    let pg = TestPg::start().await;
    let mport = free_port();
    let px = Proxy::builder(&pg).general("metrics_addr", &format!("\"127.0.0.1:{mport}\"")).pool_size(2).start().await;
    let c = px.client("scram_user", "scram_pw", "app").await;
    assert_eq!(scalar(&c, "select 1").await, "1");
    assert!(c.simple_query("select 1/0").await.is_err()); // an error, so pgsluice_errors_total has a class
    let page = until(Duration::from_secs(10), "the error counted in /metrics", || async {
        let page = http_get(mport, "/metrics").await.1;
        page.contains("pgsluice_errors_total{").then_some(page)
    })
    .await;
    let exported = exposition(&page);
    let mut problems = Vec::new();
    let mut used = BTreeSet::new();
    for expr in dashboard_exprs(&dash) {
        let selectors = promql_selectors(&expr);
        assert!(!selectors.is_empty(), "no metric in {expr:?}");
        for s in selectors {
            used.insert(s.metric.clone());
            let Some(series) = exported.get(&s.metric) else {
                problems.push(format!("{} (in {expr}) is not exported", s.metric));
                continue;
            };
            for (label, op, value) in &s.matchers {
                let prom_label = label == "instance" || label == "job";
                if !prom_label && !series.iter().any(|l| l.contains_key(label)) {
                    problems.push(format!("{}{{{label}}}: no such label (in {expr})", s.metric));
                } else if op == "=" && !value.contains('$') && !series.iter().any(|l| l.get(label) == Some(value)) {
                    problems.push(format!("{}{{{label}=\"{value}\"}}: no such series (in {expr})", s.metric));
                }
            }
        }
    }
    assert!(problems.is_empty(), "dashboard queries:\n{}\n/metrics:\n{page}", problems.join("\n"));
    // The panels the stack promises are there.
    for m in ["pgsluice_acquire_wait_seconds_bucket", "pgsluice_errors_total", "pgsluice_pool_servers"] {
        assert!(used.contains(m), "the dashboard shows {m}");
    }
    let heatmap = dash["panels"].as_array().unwrap().iter().find(|p| p["type"] == "heatmap").expect("a heatmap");
    assert!(heatmap["targets"][0]["expr"].as_str().unwrap().contains("pgsluice_acquire_wait_seconds_bucket"));
}

/// The image builds with the release form of the command CI builds with, from a Cargo.lock that
/// `--locked` accepts (a stale lock would fail the image build: it fails here first), ships the
/// entrypoint, healthcheck and config at the paths the docs give, exposes the shipped config's ports,
/// checks /readyz, and stops with SIGINT; the shipped config and auth file pass `pgsluice --check`.
#[test]
fn dockerfile_builds_like_ci_and_ships_a_config_that_checks() {
    let dockerfile = read("docker/Dockerfile");
    let lines: Vec<&str> = dockerfile.lines().map(str::trim).filter(|l| !l.starts_with('#')).collect();
    assert!(lines.contains(&"RUN cargo build --locked --release --bin pgsluice"), "{dockerfile}");
    assert!(read(".ci/run").contains("cargo build --all-targets"), "CI builds the same workspace");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = tool(&cargo, "cargo", &["metadata", "--locked", "--offline", "--format-version", "1", "--no-deps"]);
    assert!(out.status.success(), "Cargo.lock is not what --locked accepts: {}", String::from_utf8_lossy(&out.stderr));
    for copy in [
        "COPY --from=build /src/target/release/pgsluice /usr/local/bin/pgsluice",
        "COPY docker/entrypoint.sh /usr/local/bin/pgsluice-entrypoint",
        "COPY docker/healthcheck.sh /usr/local/bin/pgsluice-healthcheck",
        "COPY docker/pgsluice.toml /etc/pgsluice/pgsluice.toml",
        "ENTRYPOINT [\"/usr/local/bin/pgsluice-entrypoint\"]",
        "STOPSIGNAL SIGINT",
        "CMD [\"/usr/local/bin/pgsluice-healthcheck\", \"/readyz\"]",
    ] {
        assert!(lines.contains(&copy), "Dockerfile: {copy}");
    }
    assert!(lines.iter().any(|l| l.starts_with("USER ") && !l.contains("root") && !l.contains(" 0")), "non-root");
    let config = shipped_config();
    let expose = lines.iter().find_map(|l| l.strip_prefix("EXPOSE ")).expect("EXPOSE");
    let exposed: BTreeSet<u16> = expose.split_whitespace().map(|p| p.parse().expect("port")).collect();
    assert_eq!(exposed, BTreeSet::from([listen_port(&config), metrics_port(&config)]));
    assert_eq!(deploy_util::general(&config, "auth_file").as_str(), Some("/etc/pgsluice/userlist.txt"));
    assert!(read(".dockerignore").lines().any(|l| l.trim() == "target"), "the build context leaves out target/");
    let dir = tempfile::tempdir().unwrap();
    let userlist = dir.path().join("userlist.txt");
    std::fs::copy(repo().join("docker/userlist.txt"), &userlist).unwrap();
    let text = read("docker/pgsluice.toml").replace("/etc/pgsluice/userlist.txt", userlist.to_str().unwrap());
    std::fs::write(dir.path().join("pgsluice.toml"), text).unwrap();
    let out =
        Command::new(env!("CARGO_BIN_EXE_pgsluice")).arg("--check").arg(dir.path().join("pgsluice.toml")).output();
    let out = out.unwrap();
    assert!(out.status.success(), "docker/pgsluice.toml: {}", String::from_utf8_lossy(&out.stderr));
}

/// The image's entrypoint, run as the container would but on this machine.
struct Entrypoint {
    child: Child,
    stderr: std::path::PathBuf,
}

impl Entrypoint {
    fn start(config: &std::path::Path, run_dir: &std::path::Path, env: &[(&str, String)]) -> Entrypoint {
        let stderr = run_dir.join("entrypoint.log");
        let child = Command::new("sh")
            .arg(repo().join("docker/entrypoint.sh"))
            .env("PGSLUICE_BIN", env!("CARGO_BIN_EXE_pgsluice"))
            .env("PGSLUICE_CONFIG", config)
            .env("PGSLUICE_RUN_DIR", run_dir)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("sh docker/entrypoint.sh");
        Entrypoint { child, stderr }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Entrypoint {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the image's healthcheck script against the config in `run_dir` (what the entrypoint wrote).
fn healthcheck(config: &std::path::Path, run_dir: &std::path::Path, path: &str) -> (bool, String) {
    let out = Command::new("bash")
        .arg(repo().join("docker/healthcheck.sh"))
        .arg(path)
        .env("PGSLUICE_CONFIG", config)
        .env("PGSLUICE_RUN_DIR", run_dir)
        .env_remove("PGSLUICE_METRICS_ADDR")
        .output()
        .expect("bash docker/healthcheck.sh");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// The shipped config pointed at a test PostgreSQL, with an auth file named relative to it.
fn shipped_config_for(pg: &TestPg, dir: &std::path::Path) -> std::path::PathBuf {
    std::fs::write(dir.join("userlist.txt"), "\"scram_user\" \"scram_pw\"\n").unwrap();
    let text = read("docker/pgsluice.toml")
        .replace("\"/etc/pgsluice/userlist.txt\"", "\"userlist.txt\"")
        .replace("host = \"postgres\", port = 5432", &format!("host = \"127.0.0.1\", port = {}", pg.port()));
    let config = dir.join("pgsluice.toml");
    std::fs::write(&config, text).unwrap();
    config
}

/// PGSLUICE_* variables replace the shipped settings (the pool size /metrics reports is the variable's,
/// not the file's 20; the port and metrics address are the variables'), a relative auth file still
/// resolves, the healthcheck answers from /readyz of the metrics address the entrypoint used (0 while
/// ready, non-zero once the database is down), and the process is pgsluice itself (exec: SIGINT stops it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entrypoint_applies_env_overrides_and_healthcheck_follows_readyz() {
    let pg = TestPg::start().await;
    let conf_dir = tempfile::tempdir().unwrap();
    let run_dir = tempfile::tempdir().unwrap();
    let config = shipped_config_for(&pg, conf_dir.path());
    let (port, mport) = (free_port(), free_port());
    let env = [
        ("PGSLUICE_LISTEN_ADDR", "127.0.0.1".to_string()),
        ("PGSLUICE_LISTEN_PORT", port.to_string()),
        ("PGSLUICE_METRICS_ADDR", format!("127.0.0.1:{mport}")),
        ("PGSLUICE_POOL_SIZE", "3".to_string()),
    ];
    let mut ep = Entrypoint::start(&config, run_dir.path(), &env);
    wait_for(Duration::from_secs(20), "pgsluice listening on PGSLUICE_LISTEN_PORT", || async move {
        tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
    })
    .await;
    let (client, conn) = tokio_postgres::connect(
        &format!("host=127.0.0.1 port={port} user=scram_user password=scram_pw dbname=app"),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap_or_else(|e| panic!("connect through the entrypoint's pgsluice: {e}\n{}", ep.log()));
    tokio::spawn(conn);
    assert_eq!(scalar(&client, "select 7").await, "7");
    let (status, page) = http_get(mport, "/metrics").await;
    assert_eq!(status, 200);
    assert!(page.contains("pgsluice_pool_size{database=\"app\",user=\"scram_user\"} 3"), "{page}");
    assert!(ep.log().contains("default_pool_size"), "the entrypoint says what it overrode: {}", ep.log());
    let (ok, said) = healthcheck(&config, run_dir.path(), "/readyz");
    assert!(ok && said.contains("/readyz: 200"), "{said}");
    drop(client);
    pg.stop().await;
    let last = until(Duration::from_secs(10), "the healthcheck failing with the database down", || {
        let (ok, said) = healthcheck(&config, run_dir.path(), "/readyz");
        std::future::ready((!ok).then_some(said))
    })
    .await;
    assert!(last.contains("503"), "{last}");
    let _ = Command::new("kill").args(["-INT", &ep.child.id().to_string()]).status();
    let exited = until(Duration::from_secs(10), "pgsluice (the entrypoint's pid) exiting on SIGINT", || {
        std::future::ready(ep.child.try_wait().ok().flatten())
    })
    .await;
    assert!(exited.success(), "{}", ep.log());
}

/// A config that `pgsluice --check` refuses, or a malformed variable, stops the entrypoint before
/// pgsluice starts, saying why; without the check step, pgsluice itself would be what fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entrypoint_refuses_a_config_that_fails_the_check() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pgsluice.toml");
    std::fs::write(&config, read("docker/pgsluice.toml")).unwrap();
    std::fs::write(dir.path().join("userlist.txt"), "\"app\" \"x\"\n").unwrap();
    let auth = ("PGSLUICE_AUTH_FILE", dir.path().join("userlist.txt").display().to_string());
    for (env, says) in [
        (vec![("PGSLUICE_POOL_MODE", "bogus".to_string()), auth.clone()], "does not pass pgsluice --check"),
        (vec![("PGSLUICE_POOL_SIZE", "ten".to_string())], "PGSLUICE_POOL_SIZE must be a number"),
        (vec![], "does not pass pgsluice --check"), // /etc/pgsluice/userlist.txt is not mounted here
    ] {
        let mut ep = Entrypoint::start(&config, dir.path(), &env);
        let status = until(Duration::from_secs(10), "the entrypoint exiting", || {
            std::future::ready(ep.child.try_wait().ok().flatten())
        })
        .await;
        assert_eq!(status.code(), Some(1), "{env:?}: {}", ep.log());
        assert!(ep.log().contains(says), "{env:?}: {}", ep.log());
    }
}

/// What the stop signal of the image and the grace periods rely on: SIGINT waits for a transaction in
/// flight (so the grace period must cover one), and transaction_timeout bounds that wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_drain_waits_for_transactions_and_transaction_timeout_bounds_it() {
    let pg = TestPg::start().await;
    let mut px = Proxy::builder(&pg).general("transaction_timeout", "2").start().await;
    let idle = px.client("scram_user", "scram_pw", "app").await;
    assert_eq!(scalar(&idle, "select 1").await, "1"); // leaves an idle server in the pool
    let busy = px.client("scram_user", "scram_pw", "app").await;
    busy.batch_execute("begin; select 1").await.unwrap();
    let t0 = tokio::time::Instant::now();
    px.signal("INT");
    assert!(px.wait_exit(Duration::from_millis(700)).await.is_none(), "the drain waits for the transaction");
    let status = px.wait_exit(Duration::from_secs(10)).await.expect("exit once transaction_timeout ends it");
    assert!(status.success());
    assert!(t0.elapsed() < Duration::from_secs(8), "drain took {:?}", t0.elapsed());
}

/// docker/k8s rendered as kustomize would (its kustomization lists plain resources only): every object
/// is well-formed, and the Deployment, Service, PDB and HPA agree with each other and with the
/// pgsluice.toml the ConfigMap carries (which, with the Secret's auth file, passes `pgsluice --check`).
#[test]
fn kubernetes_base_agrees_with_its_config() {
    let kustomization = yaml(&read("docker/k8s/kustomization.yaml"));
    let keys: BTreeSet<&str> = kustomization.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, BTreeSet::from(["apiVersion", "kind", "resources"]), "only what this test renders");
    let mut objects = BTreeMap::new();
    for file in kustomization["resources"].as_array().expect("resources") {
        for o in yaml_docs(&read(&format!("docker/k8s/{}", file.as_str().unwrap()))) {
            let (kind, name) = (o["kind"].as_str(), o["metadata"]["name"].as_str());
            assert!(o["apiVersion"].is_string() && kind.is_some() && name.is_some(), "{file}: {o}");
            assert!(objects.insert(kind.unwrap().to_string(), o.clone()).is_none(), "one {kind:?}");
        }
    }
    kustomize_agrees(&objects);
    let kinds: BTreeSet<&str> = objects.keys().map(String::as_str).collect();
    let want = ["ConfigMap", "Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Secret", "Service"];
    assert_eq!(kinds, BTreeSet::from(want));
    let toml_text = objects["ConfigMap"]["data"]["pgsluice.toml"].as_str().expect("pgsluice.toml").to_string();
    let config: toml::Table = toml_text.parse().expect("the ConfigMap's pgsluice.toml is TOML");
    check_k8s_config_passes(&toml_text, objects["Secret"]["stringData"]["userlist.txt"].as_str().expect("userlist"));
    let deploy = &objects["Deployment"];
    let pod = &deploy["spec"]["template"];
    let labels = pod["metadata"]["labels"].as_object().expect("pod labels").clone();
    let selects =
        |sel: &Value| sel.as_object().is_some_and(|m| !m.is_empty() && m.iter().all(|(k, v)| labels.get(k) == Some(v)));
    assert!(selects(&deploy["spec"]["selector"]["matchLabels"]), "the Deployment selects its pods");
    assert!(selects(&objects["Service"]["spec"]["selector"]), "the Service selects the pods");
    assert!(selects(&objects["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"]), "the PDB too");
    let hpa = &objects["HorizontalPodAutoscaler"]["spec"];
    assert_eq!(
        (hpa["scaleTargetRef"]["kind"].as_str(), hpa["scaleTargetRef"]["name"].as_str()),
        (Some("Deployment"), deploy["metadata"]["name"].as_str())
    );
    assert_eq!(hpa["metrics"][0]["resource"]["name"], "cpu");
    let container = &pod["spec"]["containers"][0];
    let ports: BTreeMap<String, u64> = container["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .map(|p| (p["name"].as_str().unwrap_or("").to_string(), p["containerPort"].as_u64().expect("containerPort")))
        .collect();
    let resolve =
        |p: &Value| p.as_u64().or_else(|| ports.get(p.as_str()?).copied()).unwrap_or_else(|| panic!("port {p}"));
    let metrics = port_of(deploy_util::general(&config, "metrics_addr").as_str().unwrap()) as u64;
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        assert_eq!(container[probe]["httpGet"]["path"], path);
        assert_eq!(resolve(&container[probe]["httpGet"]["port"]), metrics, "{probe} on metrics_addr's port");
    }
    let listen = int_setting(&config, "listen_port") as u64;
    assert!(ports.values().any(|p| *p == listen), "a container port is listen_port");
    let targets: Vec<u64> =
        objects["Service"]["spec"]["ports"].as_array().unwrap().iter().map(|p| resolve(&p["targetPort"])).collect();
    assert!(targets.contains(&listen), "the Service targets listen_port: {targets:?}");
    check_drain_and_budget(pod, &config, hpa);
    let mounts: BTreeMap<&str, &str> = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["mountPath"].as_str().unwrap(), m["name"].as_str().unwrap()))
        .collect();
    let config_volume = pod["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mounts["/etc/pgsluice"])
        .expect("volume");
    let sources = config_volume["projected"]["sources"].to_string();
    for (kind, key) in [("ConfigMap", "configMap"), ("Secret", "secret")] {
        assert!(
            sources.contains(&format!("\"{key}\":{{\"name\":{}}}", objects[kind]["metadata"]["name"])),
            "{sources}"
        );
    }
    assert!(mounts.contains_key("/run/pgsluice"), "the entrypoint's run dir is writable");
}

/// The grace period covers the drain, and the replicas the HPA may run fit PostgreSQL's budget.
fn check_drain_and_budget(pod: &Value, config: &toml::Table, hpa: &Value) {
    let container = &pod["spec"]["containers"][0];
    // The stop (SIGINT) waits for transactions in flight, at most transaction_timeout
    // (sigint_drain_waits_for_transactions_and_transaction_timeout_bounds_it); preStop's sleep comes first.
    let pre_stop = container["lifecycle"]["preStop"]["exec"]["command"].as_array().expect("preStop exec");
    assert_eq!(pre_stop[0], "sleep");
    let sleep: i64 = pre_stop[1].as_str().unwrap().parse().unwrap();
    let xact = int_setting(config, "transaction_timeout");
    assert!(xact > 0, "transaction_timeout bounds the drain");
    let grace = pod["spec"]["terminationGracePeriodSeconds"].as_i64().expect("terminationGracePeriodSeconds");
    assert!(grace >= sleep + xact + 5, "grace {grace} s < preStop {sleep} s + transaction_timeout {xact} s + 5");
    // Every replica the HPA may start gets max_db_connections: together within PostgreSQL's default
    // max_connections (100) less superuser_reserved_connections (3).
    let per_replica = int_setting(config, "max_db_connections");
    assert!(per_replica > 0 && hpa["maxReplicas"].as_i64().unwrap() * per_replica <= 97);
}

/// The ConfigMap's config with the Secret's auth file passes `pgsluice --check`.
fn check_k8s_config_passes(toml_text: &str, userlist: &str) {
    let dir = tempfile::tempdir().unwrap();
    let auth = dir.path().join("userlist.txt");
    std::fs::write(&auth, userlist).unwrap();
    let text = toml_text.replace("/etc/pgsluice/userlist.txt", auth.to_str().unwrap());
    std::fs::write(dir.path().join("pgsluice.toml"), text).unwrap();
    let out =
        Command::new(env!("CARGO_BIN_EXE_pgsluice")).arg("--check").arg(dir.path().join("pgsluice.toml")).output();
    let out = out.unwrap();
    assert!(out.status.success(), "the ConfigMap's pgsluice.toml: {}", String::from_utf8_lossy(&out.stderr));
}

/// Where kubectl is installed (CI has none: Debian 12's is 1.20), its kustomize renders the same objects.
fn kustomize_agrees(objects: &BTreeMap<String, Value>) {
    let Ok(out) = Command::new("kubectl").args(["kustomize", "docker/k8s"]).current_dir(repo()).output() else {
        eprintln!("kubectl not installed: docker/k8s rendered by this test alone");
        return;
    };
    assert!(out.status.success(), "kubectl kustomize: {}", String::from_utf8_lossy(&out.stderr));
    let rendered = yaml_docs(&String::from_utf8_lossy(&out.stdout));
    let names = |v: &mut dyn Iterator<Item = &Value>| -> BTreeSet<String> {
        v.map(|o| format!("{}/{}", o["kind"], o["metadata"]["name"])).collect()
    };
    assert_eq!(names(&mut rendered.iter()), names(&mut objects.values()));
    for o in &rendered {
        assert_eq!(&objects[o["kind"].as_str().unwrap()], o, "kubectl kustomize renders it unchanged");
    }
}
