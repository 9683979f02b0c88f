//! The files in `deploy/` are checked against the program they run: every command line parses
//! with rollcall's own CLI, ports and probes agree with what `serve` listens on and answers, and
//! the example pipeline a manifest carries validates. (Building the container image cannot run
//! here; its command line is checked like the others.)

use std::path::Path;

use clap::Parser;
use rollcall::cli::Cli;
use serde_json::Value;

fn deploy(file: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("deploy")
            .join(file),
    )
    .unwrap_or_else(|e| panic!("deploy/{file}: {e}"))
}

fn yaml(file: &str) -> Value {
    serde_saphyr::from_str(&deploy(file)).unwrap_or_else(|e| panic!("deploy/{file}: {e}"))
}

/// Parses `rollcall ARGS…` as the binary would, and returns the port `--listen` names.
fn parses(args: &[String]) -> Option<u16> {
    let argv = std::iter::once("rollcall".to_owned()).chain(args.iter().cloned());
    if let Err(e) = Cli::try_parse_from(argv) {
        panic!("`rollcall {}` does not parse: {e}", args.join(" "));
    }
    args.iter()
        .position(|a| a == "--listen")
        .and_then(|i| args.get(i + 1))
        .and_then(|l| l.rsplit(':').next())
        .and_then(|p| p.parse().ok())
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .expect("a list")
        .iter()
        .map(|s| s.as_str().expect("text").to_owned())
        .collect()
}

fn env<'a>(container: &'a Value, name: &str) -> Option<&'a str> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
        .and_then(|e| e["value"].as_str())
}

#[test]
fn the_compose_file_runs_web_and_workers_on_one_redis_and_one_postgres_with_commands_rollcall_understands()
 {
    let compose = yaml("compose.yaml");
    let services = &compose["services"];
    let web = &services["web"];
    let port = parses(&strings(&web["command"])).expect("a --listen port");
    let published = strings(&web["ports"]);
    assert!(
        published.contains(&format!("{port}:{port}")),
        "{published:?}"
    );
    let worker = &services["worker"];
    let command = strings(&worker["command"]);
    parses(&command);
    assert_eq!(command[0], "worker");
    let pg = &services["postgres"]["environment"];
    for s in [web, worker] {
        assert_eq!(s["build"]["dockerfile"], "deploy/Dockerfile");
        assert_eq!(s["environment"]["ROLLCALL_QUEUE"], "redis://redis:6379");
        // Every container shares the one PostgreSQL store the compose file runs.
        let store = s["environment"]["ROLLCALL_STORE"]
            .as_str()
            .expect("a store");
        let expected = format!(
            "postgres://{}:${{POSTGRES_PASSWORD}}@postgres:5432/{}",
            pg["POSTGRES_USER"].as_str().expect("user"),
            pg["POSTGRES_DB"].as_str().expect("database")
        );
        assert_eq!(store, expected);
        parses(&[
            "--store".into(),
            store.into(),
            "store".into(),
            "check".into(),
        ]);
    }
    assert!(
        worker["deploy"]["replicas"].as_u64().is_some_and(|n| n > 1),
        "workers scaled out"
    );
    assert!(
        services["postgres"]["image"]
            .as_str()
            .is_some_and(|i| i.starts_with("postgres"))
    );
    assert!(
        services["redis"]["image"]
            .as_str()
            .is_some_and(|i| i.starts_with("redis"))
    );
}

#[test]
fn the_kubernetes_manifests_agree_with_serve_and_worker_and_carry_a_valid_pipeline() {
    let list = yaml("k8s/rollcall.yaml");
    let items = list["items"].as_array().expect("items");
    let named = |k: &str, name: &str| {
        items
            .iter()
            .find(|i| i["kind"] == k && i["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {k} {name}"))
    };
    let kind = |k: &str| {
        items
            .iter()
            .find(|i| i["kind"] == k)
            .unwrap_or_else(|| panic!("no {k}"))
    };
    let web = &named("Deployment", "rollcall-web")["spec"]["template"]["spec"]["containers"][0];
    let port = parses(&strings(&web["args"])).expect("a --listen port");
    assert_eq!(web["ports"][0]["containerPort"], port);
    assert_eq!(web["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(web["readinessProbe"]["httpGet"]["path"], "/readyz");
    let workers = named("Deployment", "rollcall-worker");
    assert!(
        workers["spec"]["replicas"].as_u64().is_some_and(|n| n > 1),
        "workers scaled out"
    );
    let worker = &workers["spec"]["template"]["spec"]["containers"][0];
    let args = strings(&worker["args"]);
    parses(&args);
    let metrics = args
        .iter()
        .position(|a| a == "--metrics-listen")
        .and_then(|i| args.get(i + 1))
        .and_then(|l| l.rsplit(':').next())
        .and_then(|p| p.parse::<u16>().ok())
        .expect("a --metrics-listen port");
    assert_eq!(worker["ports"][0]["containerPort"], metrics);
    assert_eq!(worker["readinessProbe"]["httpGet"]["path"], "/readyz");
    let redis = named("Service", "rollcall-redis");
    let redis_port = redis["spec"]["ports"][0]["port"].as_u64().expect("port");
    let postgres = named("Service", "rollcall-postgres");
    let pg_port = postgres["spec"]["ports"][0]["port"].as_u64().expect("port");
    for c in [web, worker] {
        assert_eq!(
            env(c, "ROLLCALL_QUEUE"),
            Some(format!("redis://rollcall-redis:{redis_port}").as_str())
        );
        // The password comes from the Secret, defined before the store URL that expands it.
        let names: Vec<&str> = c["env"]
            .as_array()
            .expect("env")
            .iter()
            .filter_map(|e| e["name"].as_str())
            .collect();
        let (password, store) = (
            names.iter().position(|n| *n == "POSTGRES_PASSWORD"),
            names.iter().position(|n| *n == "ROLLCALL_STORE"),
        );
        assert!(password.is_some() && password < store, "{names:?}");
        assert_eq!(
            env(c, "ROLLCALL_STORE"),
            Some(
                format!(
                    "postgres://rollcall:$(POSTGRES_PASSWORD)@rollcall-postgres:{pg_port}/rollcall"
                )
                .as_str()
            )
        );
    }
    let secret_keys: Vec<&String> = kind("Secret")["stringData"]
        .as_object()
        .expect("data")
        .keys()
        .collect();
    let pipeline = kind("ConfigMap")["data"]["pipeline.yaml"]
        .as_str()
        .expect("pipeline");
    // Every secret the pipeline references is in the Secret; with stand-in values it validates.
    let referenced: Vec<&str> = pipeline
        .split("${")
        .skip(1)
        .filter_map(|rest| rest.split('}').next())
        .collect();
    assert!(!referenced.is_empty());
    let mut text = pipeline.to_owned();
    for name in referenced {
        assert!(
            secret_keys.iter().any(|k| k.as_str() == name),
            "the Secret has no {name}"
        );
        text = text.replace(&format!("${{{name}}}"), &format!("${{{name}:-stand-in}}"));
    }
    rollcall::config::load_str(&text, Path::new("pipeline.yaml")).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn the_systemd_units_and_the_image_run_commands_rollcall_understands() {
    for unit in [
        "systemd/rollcall-serve.service",
        "systemd/rollcall-run@.service",
        "systemd/rollcall-worker@.service",
    ] {
        let text = deploy(unit);
        let exec = text
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart=/usr/local/bin/rollcall "))
            .unwrap_or_else(|| panic!("{unit}: no ExecStart"));
        let args: Vec<String> = exec
            .replace("%i", "msp")
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        parses(&args);
    }
    let timer = deploy("systemd/rollcall-run@.timer");
    assert!(timer.contains("OnCalendar="));
    let dockerfile = deploy("Dockerfile");
    let cmd = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("CMD "))
        .expect("CMD");
    let args: Vec<String> = serde_json::from_str(cmd).expect("CMD is a JSON list");
    let port = parses(&args).expect("a --listen port");
    assert!(dockerfile.contains(&format!("EXPOSE {port}")));
}
