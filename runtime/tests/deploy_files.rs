//! The deployment files (`Dockerfile`, `deploy/kubernetes.yaml`) against the server itself:
//! their `qwen serve` arguments are parsed with the CLI's own clap definition (a renamed flag
//! fails here), and their ports and probe paths must be the ones it serves. Images cannot be
//! built on the test machines, so this is what checks them.

use std::path::PathBuf;

use clap::Parser;
use qwenc_runtime::cli::{Cli, Command, ServeArgs};
use serde_json::Value;
use yaml_rust2::{Yaml, YamlLoader};

fn repo_file(path: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// `qwen ARGS` through the real parser; the serve arguments.
fn parse_serve(args: &[String]) -> ServeArgs {
    let argv = std::iter::once("qwen".to_string()).chain(args.iter().cloned());
    match Cli::try_parse_from(argv) {
        Ok(Cli {
            command: Command::Serve(a),
            ..
        }) => a,
        Ok(other) => panic!("{args:?} is not `qwen serve`: {other:?}"),
        Err(e) => panic!("{args:?}: {e}"),
    }
}

/// The Dockerfile's instructions: `(INSTRUCTION, arguments)`, continuations joined, comments
/// dropped.
fn dockerfile() -> Vec<(String, String)> {
    let text = repo_file("Dockerfile");
    let mut out = Vec::new();
    let mut pending = String::new();
    for line in text.lines() {
        let t = line.trim();
        if pending.is_empty() && (t.is_empty() || t.starts_with('#')) {
            continue;
        }
        match t.strip_suffix('\\') {
            Some(head) => {
                pending += head;
                pending.push(' ');
            }
            None => {
                pending += t;
                let (word, rest) = pending.split_once(' ').unwrap_or((&pending, ""));
                out.push((word.to_ascii_uppercase(), rest.trim().to_string()));
                pending.clear();
            }
        }
    }
    assert!(pending.is_empty(), "the Dockerfile ends in a continuation");
    out
}

/// An exec-form (`["a", "b"]`) argument list.
fn exec_form(args: &str) -> Vec<String> {
    let v: Value =
        serde_json::from_str(args).unwrap_or_else(|e| panic!("not exec form: {args}: {e}"));
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn dockerfile_runs_qwen_serve_on_its_exposed_port() {
    let ins = dockerfile();
    let one = |name: &str| -> String {
        let all: Vec<&String> = ins
            .iter()
            .filter(|(i, _)| i == name)
            .map(|(_, a)| a)
            .collect();
        assert_eq!(all.len(), 1, "one {name}: {all:?}");
        all[0].clone()
    };
    let from = one("FROM");
    assert!(
        from.starts_with("debian:") && from.ends_with("-slim"),
        "{from}"
    );

    let entry = exec_form(&one("ENTRYPOINT"));
    let cmd = exec_form(&one("CMD"));
    assert_eq!(entry.len(), 1, "{entry:?}");
    let exe = &entry[0];
    // The executable opens `<itself>.weights`: both are copied, side by side.
    let copies: Vec<String> = ins
        .iter()
        .filter(|(i, _)| i == "COPY")
        .map(|(_, a)| a.split_whitespace().last().unwrap().to_string())
        .collect();
    assert!(copies.contains(exe), "{exe} is not copied: {copies:?}");
    assert!(
        copies.contains(&format!("{exe}.weights")),
        "{exe}.weights is not copied: {copies:?}"
    );

    let serve = parse_serve(&cmd);
    assert_eq!(serve.host, "0.0.0.0");
    let exposed: u16 = one("EXPOSE").parse().unwrap();
    assert_eq!(serve.port, exposed);

    let health = one("HEALTHCHECK");
    assert!(
        health.contains(&format!("/dev/tcp/127.0.0.1/{}", serve.port)),
        "{health}"
    );
    assert!(health.contains("GET /health "), "{health}");
    assert!(ins
        .iter()
        .any(|(i, a)| i == "USER" && a != "root" && a != "0"));
}

fn get<'a>(y: &'a Yaml, path: &str) -> &'a Yaml {
    path.split('.')
        .fold(y, |y, key| match key.parse::<usize>() {
            Ok(i) => &y[i],
            Err(_) => &y[key],
        })
}

fn str_at<'a>(y: &'a Yaml, path: &str) -> &'a str {
    get(y, path)
        .as_str()
        .unwrap_or_else(|| panic!("{path} is not a string: {:?}", get(y, path)))
}

/// A Kubernetes memory quantity (`768Mi`, `1G`, plain bytes) in bytes.
fn bytes(q: &str) -> u64 {
    let units = [
        ("Ki", 1u64 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("K", 1000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
    ];
    for (u, m) in units {
        if let Some(n) = q.strip_suffix(u) {
            return n.parse::<u64>().unwrap() * m;
        }
    }
    q.parse().unwrap()
}

/// A probe's or Service's port, by number or by the container port's name.
fn port_number(port: &Yaml, container: &Yaml) -> u16 {
    match port {
        Yaml::Integer(n) => *n as u16,
        Yaml::String(name) => container["ports"]
            .as_vec()
            .unwrap()
            .iter()
            .find(|p| p["name"].as_str() == Some(name))
            .and_then(|p| p["containerPort"].as_i64())
            .unwrap_or_else(|| panic!("no container port named {name}"))
            as u16,
        other => panic!("a port: {other:?}"),
    }
}

#[test]
fn kubernetes_manifest_matches_the_server() {
    let docs = YamlLoader::load_from_str(&repo_file("deploy/kubernetes.yaml")).unwrap();
    let kind = |k: &str| {
        docs.iter()
            .find(|d| d["kind"].as_str() == Some(k))
            .unwrap_or_else(|| panic!("no {k}"))
    };
    let deploy = kind("Deployment");
    assert!(get(deploy, "spec.replicas").as_i64().unwrap() >= 2);
    let pod = get(deploy, "spec.template");
    let c = get(pod, "spec.containers.0");

    // The arguments go to the image's ENTRYPOINT, the `qwen` executable.
    let args: Vec<String> = c["args"]
        .as_vec()
        .expect("container args")
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    let serve = parse_serve(&args);
    assert_eq!(serve.host, "0.0.0.0");
    assert!(
        serve.api_key.is_none(),
        "the key comes from the Secret, not the args"
    );
    let container_port = port_number(&Yaml::String("http".into()), c);
    assert_eq!(serve.port, container_port);

    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(
            str_at(c, &format!("{probe}.httpGet.path")),
            "/health",
            "{probe}"
        );
        let port = get(c, &format!("{probe}.httpGet.port"));
        assert_eq!(port_number(port, c), serve.port, "{probe}");
    }

    // QWEN_API_KEY, the variable the CLI reads, from a Secret.
    let env = c["env"].as_vec().unwrap();
    let key = env
        .iter()
        .find(|e| e["name"].as_str() == Some("QWEN_API_KEY"))
        .expect("QWEN_API_KEY in env");
    assert!(get(key, "valueFrom.secretKeyRef.name").as_str().is_some());
    assert!(get(key, "valueFrom.secretKeyRef.key").as_str().is_some());
    let flag_env = <Cli as clap::CommandFactory>::command()
        .find_subcommand("serve")
        .unwrap()
        .get_arguments()
        .find(|a| a.get_id() == "api_key")
        .and_then(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()));
    assert_eq!(flag_env.as_deref(), Some("QWEN_API_KEY"));

    // The ~360 MB model's weights fit the requests, with room for the KV caches.
    let request = bytes(str_at(c, "resources.requests.memory"));
    let limit = bytes(str_at(c, "resources.limits.memory"));
    assert!(request >= 512 << 20, "{request}");
    assert!(limit >= request && limit <= 8 << 30, "{limit}");
    assert!(get(c, "resources.requests.cpu").as_str().is_some());
    assert!(get(c, "resources.limits.cpu").as_str().is_some());

    // Kubernetes waits long enough for the preStop pause and the drain.
    let grace = get(pod, "spec.terminationGracePeriodSeconds")
        .as_i64()
        .unwrap() as u64;
    let pre_stop: u64 = get(c, "lifecycle.preStop.exec.command.1")
        .as_str()
        .map_or(0, |s| s.parse().unwrap());
    assert!(
        grace > pre_stop + serve.drain_seconds,
        "terminationGracePeriodSeconds {grace} <= preStop {pre_stop} + drain {}",
        serve.drain_seconds
    );

    let svc = kind("Service");
    let labels = get(pod, "metadata.labels");
    let selector = get(svc, "spec.selector").as_hash().unwrap();
    assert!(!selector.is_empty());
    for (k, v) in selector {
        assert_eq!(&labels[k.as_str().unwrap()], v, "selector {k:?}");
    }
    assert_eq!(
        get(deploy, "spec.selector.matchLabels").as_hash(),
        labels.as_hash()
    );
    let target = get(svc, "spec.ports.0.targetPort");
    assert_eq!(port_number(target, c), serve.port);
}
