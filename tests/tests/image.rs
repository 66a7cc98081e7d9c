//! What the Dockerfile and docker-compose.yml run, without Docker (no engine
//! runs in this project's CI): the image's final stage laid out under a
//! scratch root (binary, default component, `conf/`), its ENV, WORKDIR,
//! ENTRYPOINT + CMD and HEALTHCHECK, and the compose file's environment for
//! the bridge, pointed at the brokers of `tests/brokers.sh` instead of the
//! compose services. Both files are read as they stand, so a change to
//! either is tested, and an instruction this test cannot follow fails it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;
use uns_kafka_e2e::*;

const READY: Duration = Duration::from_secs(60);
const ARRIVE: Duration = Duration::from_secs(60);

/// The final stage of the Dockerfile, as far as running the bridge goes.
/// RUN (packages, the user, `mkdir`), USER and VOLUME have no counterpart
/// outside a container, except the directory the test creates itself.
#[derive(Default)]
struct Image {
    copies: Vec<CopyInstruction>,
    env: Vec<(String, String)>,
    workdir: String,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    healthcheck: Vec<String>,
    expose: Vec<String>,
}

struct CopyInstruction {
    /// `--from=build`: the sources are paths in the build stage.
    from_build: bool,
    sources: Vec<String>,
    dest: String,
}

fn parse_dockerfile(text: &str) -> Image {
    let mut lines = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if current.is_empty() && (line.is_empty() || line.starts_with('#')) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(line);
                lines.push(std::mem::take(&mut current));
            }
        }
    }
    let mut image = Image::default();
    for line in &lines {
        let (instruction, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let rest = rest.trim();
        match instruction.to_ascii_uppercase().as_str() {
            // Only the last stage is the image.
            "FROM" => image = Image::default(),
            "COPY" => {
                let mut words: Vec<&str> = rest.split_whitespace().collect();
                let from_build = words.iter().any(|w| w.starts_with("--from="));
                words.retain(|w| !w.starts_with("--"));
                let dest = words.pop().expect("COPY has a destination").to_string();
                let sources = words.iter().map(|s| s.to_string()).collect();
                image.copies.push(CopyInstruction {
                    from_build,
                    sources,
                    dest,
                });
            }
            "ENV" => {
                for pair in rest.split_whitespace() {
                    let (key, value) = pair
                        .split_once('=')
                        .unwrap_or_else(|| panic!("ENV {pair}: only KEY=value is followed here"));
                    image.env.push((key.to_string(), value.to_string()));
                }
            }
            "WORKDIR" => image.workdir = rest.to_string(),
            "ENTRYPOINT" => image.entrypoint = exec_form(rest),
            "CMD" => image.cmd = exec_form(rest),
            "HEALTHCHECK" => {
                let (_, cmd) = rest
                    .split_once("CMD ")
                    .unwrap_or_else(|| panic!("HEALTHCHECK without CMD: {rest}"));
                image.healthcheck = exec_form(cmd.trim());
            }
            "EXPOSE" => image.expose = rest.split_whitespace().map(String::from).collect(),
            "RUN" | "USER" | "VOLUME" => {}
            other => panic!("Dockerfile instruction {other} is not followed by this test: {line}"),
        }
    }
    image
}

/// `["a", "b"]`; the shell form would run under `/bin/sh -c`, which this
/// test does not imitate.
fn exec_form(s: &str) -> Vec<String> {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not the exec form ({e}): {s}"))
}

/// The container's `/x` under the scratch root.
fn inside(root: &Path, container_path: &str) -> PathBuf {
    root.join(container_path.trim_start_matches('/'))
}

/// A build-stage path (`/src/<repo path>`) as this checkout has it: the
/// host binary is the one the tests run (`UNS_KAFKA_BIN` or the debug
/// build), anything else under `target/` comes from this target directory.
fn build_output(source: &str) -> PathBuf {
    let repo_path = source
        .strip_prefix("/src/")
        .unwrap_or_else(|| panic!("build-stage path {source} is not under WORKDIR /src"));
    match repo_path.strip_prefix("target/") {
        Some("release/uns-kafka") => bridge_bin(),
        Some(rest) => target_dir().join(rest),
        None => workspace_root().join(repo_path),
    }
}

fn place(source: &Path, dest: &Path) {
    std::fs::create_dir_all(dest.parent().expect("a file has a parent")).expect("mkdir");
    assert!(
        source.is_file(),
        "COPY source {} is missing",
        source.display()
    );
    // The debug binary is half a gigabyte: link it where the filesystem allows.
    if std::fs::hard_link(source, dest).is_err() {
        std::fs::copy(source, dest)
            .unwrap_or_else(|e| panic!("copy {} to {}: {e}", source.display(), dest.display()));
    }
}

/// The patterns of `.dockerignore` (plain paths, a leading `**/`, `*.ext`
/// at the top, `dir/*`, each maybe negated by `!`: all it uses; anything
/// else fails the test rather than being misread).
fn docker_ignored() -> Vec<String> {
    let text = std::fs::read_to_string(workspace_root().join(".dockerignore"))
        .expect("read .dockerignore");
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let positive = l.strip_prefix('!').unwrap_or(l);
            let plain = |p: &str| !p.is_empty() && !p.contains(['*', '?', '[', '!', '\\']);
            let followed = match positive {
                p if p.starts_with("*.") => plain(&p[2..]) && !p[2..].contains('/'),
                p if p.starts_with("**/") => plain(&p[3..]) && !p[3..].contains('/'),
                p if p.ends_with("/*") => plain(&p[..p.len() - 2]),
                p => plain(p),
            };
            assert!(
                followed,
                ".dockerignore pattern {l} is not followed by this test"
            );
            l.to_string()
        })
        .collect()
}

/// Whether Docker leaves `path` (relative to the context) out of the build:
/// the last pattern that matches decides, a `!` one letting it in.
fn is_docker_ignored(patterns: &[String], path: &str) -> bool {
    let parts: Vec<&str> = path.split('/').collect();
    let matches = |p: &str| {
        if let Some(ext) = p.strip_prefix("*.") {
            return parts.len() == 1 && parts[0].ends_with(&format!(".{ext}"));
        }
        if let Some(name) = p.strip_prefix("**/") {
            return parts.contains(&name);
        }
        if let Some(dir) = p.strip_suffix("/*") {
            return path.starts_with(&format!("{dir}/"));
        }
        path == p || path.starts_with(&format!("{p}/"))
    };
    patterns
        .iter()
        .fold(false, |ignored, p| match p.strip_prefix('!') {
            Some(p) if matches(p) => false,
            None if matches(p) => true,
            _ => ignored,
        })
}

#[test]
fn dockerignore_keeps_out_build_output_and_secrets_but_nothing_the_build_needs() {
    let patterns = docker_ignored();
    for kept_out in [
        "target/release/uns-kafka",
        "conf/.secrets.yaml",
        "conf/.secrets.yml",
        "conf/tls/client.key",
        ".git/HEAD",
    ] {
        assert!(
            is_docker_ignored(&patterns, kept_out),
            "{kept_out} reaches the build"
        );
    }
    let image = parse_dockerfile(
        &std::fs::read_to_string(workspace_root().join("Dockerfile")).expect("read Dockerfile"),
    );
    let context_copies = image.copies.iter().filter(|c| !c.from_build);
    let needed = [
        "Cargo.toml",
        "Cargo.lock",
        "host/src/main.rs",
        "wit/world.wit",
        "components/uns-default/Cargo.toml",
        "components/test-faulty/Cargo.toml",
        "tests/Cargo.toml",
        "conf/settings.yaml",
    ];
    for path in context_copies
        .flat_map(|c| c.sources.iter().map(String::as_str))
        .chain(needed)
    {
        assert!(
            !is_docker_ignored(&patterns, path),
            ".dockerignore leaves {path} out of the build context"
        );
    }
}

/// The image's COPY instructions, carried out under `root`.
fn lay_out(image: &Image, root: &Path) {
    for copy in &image.copies {
        for source in &copy.sources {
            let from = if copy.from_build {
                build_output(source)
            } else {
                workspace_root().join(source)
            };
            let to = if copy.dest.ends_with('/') {
                let name = from.file_name().expect("a file name");
                inside(root, &copy.dest).join(name)
            } else {
                inside(root, &copy.dest)
            };
            place(&from, &to);
        }
    }
}

/// A program named without a path, found on the Debian image's PATH.
fn on_path(root: &Path, program: &str) -> PathBuf {
    ["/usr/local/bin", "/usr/bin", "/bin"]
        .iter()
        .map(|dir| inside(root, dir).join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{program} is not on the image's PATH"))
}

/// An argument or value as it reads inside the scratch root: absolute
/// paths moved under it, the exposed port swapped for a free one.
fn rewrite(value: &str, root: &Path, exposed: &str, port: u16) -> String {
    let value = value.replace(&format!(":{exposed}"), &format!(":{port}"));
    if value.starts_with('/') {
        inside(root, &value).to_string_lossy().into_owned()
    } else {
        value
    }
}

/// The bridge service's `environment` in docker-compose.yml, each value that
/// names a compose service or its port mapped to the test brokers.
fn compose_environment() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(workspace_root().join("docker-compose.yml"))
        .expect("read docker-compose.yml");
    let compose: serde_yaml::Value = serde_yaml::from_str(&text).expect("docker-compose.yml");
    let services = &compose["services"];
    assert!(
        services["mosquitto"].is_mapping() && services["kafka"].is_mapping(),
        "compose services mosquitto and kafka"
    );
    let environment = services["uns-kafka"]["environment"]
        .as_mapping()
        .expect("services.uns-kafka.environment is a mapping");
    environment
        .iter()
        .map(|(key, value)| {
            let key = key.as_str().expect("string key").to_string();
            let value = match value {
                serde_yaml::Value::String(s) => s.clone(),
                other => serde_yaml::to_string(other)
                    .expect("scalar")
                    .trim()
                    .to_string(),
            };
            let mapped = match (key.as_str(), value.as_str()) {
                ("UNS_MQTT__HOST", "mosquitto") => "127.0.0.1".to_string(),
                ("UNS_MQTT__PORT", "1883") => env().mqtt_port.to_string(),
                ("UNS_KAFKA__CONFIG__BOOTSTRAP_SERVERS", "kafka:9092") => {
                    env().kafka_bootstrap.clone()
                }
                ("RUST_LOG", _) => value,
                _ => panic!(
                    "docker-compose.yml sets {key}: {value}; map it to the test brokers here"
                ),
            };
            (key, mapped)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_image_and_compose_file_run_the_bridge() {
    let dockerfile =
        std::fs::read_to_string(workspace_root().join("Dockerfile")).expect("read Dockerfile");
    let image = parse_dockerfile(&dockerfile);
    let root = tempfile::Builder::new()
        .prefix("uns-kafka-image-")
        .tempdir()
        .expect("scratch root");
    let root = root.path();
    lay_out(&image, root);
    // RUN mkdir -p /app/cache (the ENV points the component cache there).
    std::fs::create_dir_all(inside(root, "/app/cache")).expect("mkdir cache");

    let exposed = image.expose.first().expect("EXPOSE a port").clone();
    let port = free_port();
    let mut envs: Vec<(String, String)> = image
        .env
        .iter()
        .map(|(k, v)| (k.clone(), rewrite(v, root, &exposed, port)))
        .collect();
    envs.extend(compose_environment());
    let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let workdir = inside(root, &image.workdir);

    let (program, entry_args) = image.entrypoint.split_first().expect("ENTRYPOINT");
    let bin = on_path(root, program);
    let args: Vec<String> = entry_args
        .iter()
        .chain(&image.cmd)
        .map(|a| rewrite(a, root, &exposed, port))
        .collect();
    let mut bridge = Bridge::start_at(&bin, Some(&workdir), &args, &envs);
    bridge.wait_ready(READY).await;

    // The default component is the image's copy, found beside the binary.
    let component = image
        .copies
        .iter()
        .find(|c| c.dest.ends_with(".wasm"))
        .map(|c| inside(root, &c.dest))
        .expect("the image carries a component");
    assert!(
        bridge
            .log()
            .contains(&format!("path={}", component.display())),
        "the bridge did not load {}; log:\n{}",
        component.display(),
        bridge.log()
    );
    let cached = std::fs::read_dir(inside(root, "/app/cache").join("uns-kafka"))
        .map(|dir| dir.count())
        .unwrap_or(0);
    assert!(cached > 0, "no compiled component cached under /app/cache");

    // HEALTHCHECK, as Docker runs it: inside the container, same env.
    let (probe_program, probe_args) = image.healthcheck.split_first().expect("HEALTHCHECK CMD");
    let probe_args: Vec<String> = probe_args
        .iter()
        .map(|a| rewrite(a, root, &exposed, port))
        .collect();
    let mut probe = Bridge::start_at(
        &on_path(root, probe_program),
        Some(&workdir),
        &probe_args,
        &envs,
    );
    let status = probe.wait_exit(Duration::from_secs(30)).await;
    assert_eq!(status.code(), Some(0), "healthcheck: {}", probe.log());

    // `docker run ... uns-kafka check --config /app/conf`: the image's
    // settings and component pass, and it names that component.
    let check_args: Vec<String> = ["check", "--config", "/app/conf"]
        .iter()
        .map(|a| rewrite(a, root, &exposed, port))
        .collect();
    let mut check = Bridge::start_at(&bin, Some(&workdir), &check_args, &envs);
    let status = check.wait_exit(Duration::from_secs(60)).await;
    assert_eq!(status.code(), Some(0), "check: {}", check.log());
    assert!(
        check
            .log()
            .contains(&format!("component: {} (uns-default ", component.display())),
        "check: {}",
        check.log()
    );

    // The compose file's example: a reading on enterprise/<site>/temp.
    let site = unique("image");
    let mqtt_topic = format!("enterprise/{site}/temp");
    let kafka_topic = format!("enterprise_{site}_temp");
    let consumer = Consumer::new(&[&kafka_topic]);
    publish(env().mqtt_port, &mqtt_topic, r#"{"value": 21.5}"#, 1, false).await;
    let records = consumer.collect(1, ARRIVE).await;
    assert_eq!(records.len(), 1, "log:\n{}", bridge.log());
    assert_eq!(records[0].key_str().as_deref(), Some(mqtt_topic.as_str()));
    assert_eq!(records[0].value_json(), json!({"value": 21.5}));
    assert_eq!(
        records[0].header("transform_name").as_deref(),
        Some("uns-default")
    );

    // docker stop: SIGTERM, and a clean exit.
    let status = bridge.terminate(Duration::from_secs(30)).await;
    assert_eq!(status.code(), Some(0), "log:\n{}", bridge.log());
}
