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

#[test]
fn the_compose_file_runs_a_command_rollcall_understands_on_the_port_it_publishes() {
    let compose = yaml("compose.yaml");
    let service = &compose["services"]["rollcall"];
    let port = parses(&strings(&service["command"])).expect("a --listen port");
    let published = strings(&service["ports"]);
    assert!(
        published.contains(&format!("{port}:{port}")),
        "{published:?}"
    );
    assert_eq!(service["build"]["dockerfile"], "deploy/Dockerfile");
}

#[test]
fn the_kubernetes_manifests_agree_with_serve_and_carry_a_valid_pipeline() {
    let list = yaml("k8s/rollcall.yaml");
    let items = list["items"].as_array().expect("items");
    let kind = |k: &str| {
        items
            .iter()
            .find(|i| i["kind"] == k)
            .unwrap_or_else(|| panic!("no {k}"))
    };
    let container = &kind("Deployment")["spec"]["template"]["spec"]["containers"][0];
    let port = parses(&strings(&container["args"])).expect("a --listen port");
    assert_eq!(container["ports"][0]["containerPort"], port);
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(
        kind("Deployment")["spec"]["replicas"],
        1,
        "one store, one replica"
    );
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
