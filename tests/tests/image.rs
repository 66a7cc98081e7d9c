//! What the Dockerfile and docker-compose.yml run, without Docker (no engine
//! runs in this project's CI): the image's final stage laid out under a
//! scratch root (binary, default component, `conf/`), its ENV, WORKDIR,
//! ENTRYPOINT + CMD and HEALTHCHECK, and the compose file's environment for
//! the bridge, pointed at the brokers of `tests/brokers.sh` instead of the
//! compose services, with no other environment. Of the build stage, what
//! it builds is checked against what the image copies from it, and the
//! libraries the binary links against the runtime stage's packages. Both
//! files are read as they stand, so a change to either is tested, and an
//! instruction this test cannot follow fails it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;
use uns_kafka_e2e::*;

const READY: Duration = Duration::from_secs(60);
const ARRIVE: Duration = Duration::from_secs(60);

/// The final stage of the Dockerfile, as far as running the bridge goes.
/// Of RUN, the `mkdir -p` and `chown -R` of the image's files are followed
/// (the packages and the user account have no counterpart outside a
/// container; the commands are kept for the packages they install). USER
/// is followed when the test runs as root, and a VOLUME is read-only, as
/// the compose file mounts it.
#[derive(Default)]
struct Image {
    copies: Vec<CopyInstruction>,
    env: Vec<(String, String)>,
    workdir: String,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    healthcheck: Vec<String>,
    expose: Vec<String>,
    /// The RUN instructions' commands.
    run: Vec<String>,
    /// USER, by number (`uid:gid`).
    user: Option<(u32, u32)>,
    volumes: Vec<String>,
}

struct CopyInstruction {
    /// `--from=build`: the sources are paths in the build stage.
    from_build: bool,
    sources: Vec<String>,
    dest: String,
}

/// The Dockerfile's instructions, continuation lines joined, comments out.
fn logical_lines(text: &str) -> Vec<String> {
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
    lines
}

fn parse_dockerfile(text: &str) -> Image {
    let mut image = Image::default();
    for line in &logical_lines(text) {
        let (instruction, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let rest = rest.trim();
        match instruction.to_ascii_uppercase().as_str() {
            // Only the last stage is the image.
            "FROM" => image = Image::default(),
            "COPY" => {
                let mut words: Vec<&str> = rest.split_whitespace().collect();
                if let Some(flag) = words
                    .iter()
                    .find(|w| w.starts_with("--") && !w.starts_with("--from="))
                {
                    panic!("COPY {flag} is not followed by this test: {line}");
                }
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
            "RUN" => image.run.push(rest.to_string()),
            "USER" => {
                let (uid, gid) = rest.split_once(':').unwrap_or((rest, rest));
                let number = |s: &str| {
                    s.parse::<u32>()
                        .unwrap_or_else(|_| panic!("USER {rest}: by number, uid:gid"))
                };
                image.user = Some((number(uid), number(gid)));
            }
            "VOLUME" => image
                .volumes
                .extend(rest.split_whitespace().map(String::from)),
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

/// Build output is linked where the filesystem allows (the debug binary is
/// half a gigabyte); the rest is copied, as its owner and mode change.
fn place(source: &Path, dest: &Path, from_build: bool) {
    std::fs::create_dir_all(dest.parent().expect("a file has a parent")).expect("mkdir");
    assert!(
        source.is_file(),
        "COPY source {} is missing",
        source.display()
    );
    if !from_build || std::fs::hard_link(source, dest).is_err() {
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

/// What the `build` stage's `cargo build` commands leave under
/// `/src/target/` (this test lays the image out from the checkout's own
/// builds, so without this a build step dropped from the Dockerfile would
/// go unnoticed), and the targets its `rustup target add` installs.
fn build_stage(text: &str) -> (Vec<String>, Vec<String>) {
    let (mut outputs, mut targets) = (Vec::new(), Vec::new());
    let mut in_build = false;
    for line in logical_lines(text) {
        let (instruction, rest) = line.split_once(char::is_whitespace).unwrap_or((&line, ""));
        match instruction.to_ascii_uppercase().as_str() {
            "FROM" => in_build = rest.to_ascii_lowercase().ends_with(" as build"),
            "RUN" if in_build => {
                for command in rest.split("&&") {
                    let words: Vec<&str> = command.split_whitespace().collect();
                    let after = |flag: &str| {
                        words
                            .iter()
                            .position(|w| *w == flag)
                            .and_then(|i| words.get(i + 1))
                            .map(|w| w.to_string())
                    };
                    if let ["rustup", "target", "add", added @ ..] = words.as_slice() {
                        targets.extend(added.iter().map(|t| t.to_string()));
                    }
                    if !words.starts_with(&["cargo", "build"]) {
                        continue;
                    }
                    assert!(
                        words.contains(&"--release"),
                        "not a release build: {command}"
                    );
                    let package = after("-p").unwrap_or_else(|| panic!("no -p in: {command}"));
                    outputs.push(match after("--target") {
                        Some(target) => format!(
                            "/src/target/{target}/release/{}.wasm",
                            package.replace('-', "_")
                        ),
                        None => format!("/src/target/release/{package}"),
                    });
                }
            }
            _ => {}
        }
    }
    (outputs, targets)
}

#[test]
fn the_build_stage_makes_what_the_image_copies_from_it() {
    let text =
        std::fs::read_to_string(workspace_root().join("Dockerfile")).expect("read Dockerfile");
    let (outputs, targets) = build_stage(&text);
    let image = parse_dockerfile(&text);
    let copied: Vec<&String> = image
        .copies
        .iter()
        .filter(|c| c.from_build)
        .flat_map(|c| &c.sources)
        .collect();
    assert!(
        !copied.is_empty(),
        "the image copies nothing from the build stage"
    );
    for source in copied {
        assert!(
            outputs.contains(source),
            "COPY --from=build {source}: no `cargo build` of the build stage makes it \
             (it makes {outputs:?})"
        );
    }
    for output in &outputs {
        // `/src/target/<target>/release/x`; the host's own `release/x` has none.
        if let Some((target, _)) = output
            .strip_prefix("/src/target/")
            .and_then(|rest| rest.split_once("/release/"))
        {
            assert!(
                targets.iter().any(|t| t == target),
                "the build stage builds for {target} without `rustup target add {target}`"
            );
        }
    }
}

/// The shared libraries the bridge links, and the runtime stage's packages
/// that hold them: a library no package of the slim image provides stops
/// the container at start ("error while loading shared libraries"). The
/// binary is this machine's build, so this assumes a host like the build
/// stage's (Debian 12 with the same `-dev` packages: OpenSSL 3, a system
/// zlib); on another, a library may be linked statically or by another
/// name, and the test says which.
#[test]
fn the_runtime_stage_installs_the_libraries_the_bridge_links() {
    let text =
        std::fs::read_to_string(workspace_root().join("Dockerfile")).expect("read Dockerfile");
    let runs = parse_dockerfile(&text).run.join(" ");
    let installed: Vec<&str> = runs.split_whitespace().collect();
    let out = std::process::Command::new("readelf")
        .arg("-d")
        .arg(bridge_bin())
        .output()
        .expect("run readelf (binutils)");
    assert!(out.status.success(), "readelf -d failed");
    let dynamic = String::from_utf8_lossy(&out.stdout);
    let needed: Vec<&str> = dynamic
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| l.split('[').nth(1)?.split(']').next())
        .collect();
    assert!(
        needed.contains(&"libc.so.6"),
        "readelf output not understood: {dynamic}"
    );
    for library in needed {
        // In debian:bookworm-slim itself (libc6, libgcc-s1).
        let package = match library {
            "libc.so.6"
            | "libm.so.6"
            | "libdl.so.2"
            | "libpthread.so.0"
            | "librt.so.1"
            | "ld-linux-x86-64.so.2"
            | "ld-linux-aarch64.so.1"
            | "libgcc_s.so.1" => continue,
            "libssl.so.3" | "libcrypto.so.3" => "libssl3",
            "libz.so.1" => "zlib1g",
            other => panic!(
                "the bridge links {other}: install its package in the Dockerfile's runtime \
                 stage and name it here"
            ),
        };
        assert!(
            installed.contains(&package),
            "the bridge links {library}, but the runtime stage does not install {package}"
        );
    }
}

/// The image's COPY instructions, carried out under `root`.
fn lay_out(image: &Image, root: &Path) {
    // Others may enter, as in a container's root.
    set_mode(root, 0o755);
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
            place(&from, &to, copy.from_build);
        }
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// Every file and directory under `path`, itself first.
fn walk(path: &Path) -> Vec<PathBuf> {
    let mut all = vec![path.to_path_buf()];
    if path.is_dir() {
        for entry in std::fs::read_dir(path).expect("read_dir") {
            all.extend(walk(&entry.expect("dir entry").path()));
        }
    }
    all
}

/// Whether this test may act as another user (it runs as root).
fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The RUN commands' `mkdir -p` and `chown -R`, on the image's files; the
/// ownership only as root.
fn run_file_commands(image: &Image, root: &Path) {
    for command in image.run.iter().flat_map(|r| r.split("&&")) {
        assert!(
            !command.contains(';') && !command.contains("||"),
            "RUN {command}: only commands joined by && are followed here"
        );
        let words: Vec<&str> = command.split_whitespace().collect();
        match words.as_slice() {
            ["mkdir", "-p", dirs @ ..] if dirs.iter().all(|d| !d.starts_with('-')) => {
                for dir in dirs {
                    std::fs::create_dir_all(inside(root, dir)).expect("mkdir -p");
                }
            }
            ["chown", "-R", owner, paths @ ..] => {
                let (uid, gid) = owner.split_once(':').expect("chown uid:gid");
                let (uid, gid) = (uid.parse().expect("uid"), gid.parse().expect("gid"));
                if !is_root() {
                    continue;
                }
                for path in paths.iter().flat_map(|p| walk(&inside(root, p))) {
                    std::os::unix::fs::chown(&path, Some(uid), Some(gid))
                        .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
                }
            }
            ["chown" | "mkdir" | "chmod" | "install" | "touch" | "ln" | "cp" | "mv", ..] => {
                panic!("RUN {command}: of the image's files, only mkdir -p and chown -R uid:gid are followed here")
            }
            _ => {}
        }
    }
}

/// A VOLUME as the compose file mounts it (`:ro`): the host's files, which
/// the container's user may read and not write.
fn mount_read_only(image: &Image, root: &Path) {
    let root_user = is_root();
    for volume in &image.volumes {
        for path in walk(&inside(root, volume)) {
            if root_user {
                std::os::unix::fs::chown(&path, Some(0), Some(0))
                    .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
            }
            set_mode(&path, if path.is_dir() { 0o555 } else { 0o444 });
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
    run_file_commands(&image, root);
    mount_read_only(&image, root);
    // Declared after the root, so dropped (even on a failed assert) before
    // it is removed.
    let _writable = Writable(&image, root);
    // As USER, where this test can switch to it.
    let user = image.user.filter(|_| is_root());
    if user.is_none() {
        eprintln!("not root: the image's USER is not followed");
    }

    let exposed = image.expose.first().expect("EXPOSE a port").clone();
    let port = free_port();
    let mut envs: Vec<(String, String)> = image
        .env
        .iter()
        .map(|(k, v)| (k.clone(), rewrite(v, root, &exposed, port)))
        .collect();
    envs.extend(compose_environment());
    // What Docker gives every container: the base image's PATH, and the
    // USER's home from the image's passwd (`useradd --home-dir /app`).
    envs.push((
        "PATH".into(),
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
    ));
    envs.push((
        "HOME".into(),
        inside(root, "/app").to_string_lossy().into_owned(),
    ));
    let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let workdir = inside(root, &image.workdir);

    let (program, entry_args) = image.entrypoint.split_first().expect("ENTRYPOINT");
    let bin = on_path(root, program);
    let args: Vec<String> = entry_args
        .iter()
        .chain(&image.cmd)
        .map(|a| rewrite(a, root, &exposed, port))
        .collect();
    let mut bridge = Bridge::start_contained(&bin, &workdir, &args, &envs, user);
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
    let cached: Vec<PathBuf> = std::fs::read_dir(inside(root, "/app/cache").join("uns-kafka"))
        .map(|dir| dir.map(|e| e.expect("dir entry").path()).collect())
        .unwrap_or_default();
    assert!(
        !cached.is_empty(),
        "no compiled component cached under /app/cache; log:\n{}",
        bridge.log()
    );
    if let Some((uid, _)) = user {
        use std::os::unix::fs::MetadataExt;
        let owner = std::fs::metadata(&cached[0]).expect("stat").uid();
        assert_eq!(owner, uid, "the bridge did not run as the image's USER");
    }

    // HEALTHCHECK, as Docker runs it: inside the container, same env.
    let (probe_program, probe_args) = image.healthcheck.split_first().expect("HEALTHCHECK CMD");
    let probe_args: Vec<String> = probe_args
        .iter()
        .map(|a| rewrite(a, root, &exposed, port))
        .collect();
    let mut probe = Bridge::start_contained(
        &on_path(root, probe_program),
        &workdir,
        &probe_args,
        &envs,
        user,
    );
    let status = probe.wait_exit(Duration::from_secs(30)).await;
    assert_eq!(status.code(), Some(0), "healthcheck: {}", probe.log());

    // `docker run ... uns-kafka check --config /app/conf`: the image's
    // settings and component pass, and it names that component.
    let check_args: Vec<String> = ["check", "--config", "/app/conf"]
        .iter()
        .map(|a| rewrite(a, root, &exposed, port))
        .collect();
    let mut check = Bridge::start_contained(&bin, &workdir, &check_args, &envs, user);
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

/// Makes the read-only volumes writable again when dropped, so that a test
/// not run as root can remove its scratch root.
struct Writable<'a>(&'a Image, &'a Path);

impl Drop for Writable<'_> {
    fn drop(&mut self) {
        for volume in &self.0.volumes {
            for dir in walk(&inside(self.1, volume)).iter().filter(|p| p.is_dir()) {
                set_mode(dir, 0o755);
            }
        }
    }
}
