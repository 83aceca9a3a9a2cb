//! End-to-end tests of `serval build`: a multi-stage Containerfile whose first stage runs a
//! real `RUN` in runc over a busybox image from the local store, and whose final `FROM
//! scratch` stage copies from it, becomes an image that `serval deploy --image` runs; a
//! rebuild with no change takes every layer from the cache, a changed file rebuilds only
//! what follows its `COPY`; bad input fails in one clear message naming the line.

mod support;

use std::path::Path;

use serval_testimages::{
    HostSource, ImageConfigSpec, TestRegistry, binary_with_libs, busybox_files, registry_tools, write_docker_archive,
};
use support::{Server, runc_available, skip};

const CONTAINERFILE: &str = r#"# A build stage that makes something with RUN, and a small final stage.
FROM test/busybox:1 AS build
WORKDIR /out
RUN echo "built by RUN" > index.html && echo compiled
COPY page.txt /out/page.txt

FROM scratch
COPY --from=build /bin/busybox /bin/busybox
COPY --from=build /out /www
ENV GREETING=hello
CMD ["/bin/busybox", "sh", "-c", "exec /bin/busybox httpd -f -p 127.0.0.1:$PORT -h /www"]
"#;

/// Imports a busybox image (`test/busybox:1`) made of host files into the server's store.
fn import_busybox(server: &Server, scratch: &Path) {
    let archive = scratch.join("busybox.tar");
    let files = busybox_files().expect("busybox-static");
    write_docker_archive(&archive, "test/busybox:1", &files, ImageConfigSpec::default()).expect("busybox archive");
    server.ok(&["image", "import", archive.to_str().expect("utf-8")]);
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).expect("write a context file");
}

/// The last line of `serval build`'s output: `… N of M layer steps from the cache`.
fn cached_of(output: &str) -> (usize, usize) {
    let last = output.lines().last().unwrap_or_default();
    let words: Vec<&str> = last.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "of").expect("a summary line");
    (words[at - 1].parse().expect("cached"), words[at + 1].parse().expect("total"))
}

#[tokio::test]
async fn a_multi_stage_build_runs_caches_and_deploys() {
    if !runc_available() {
        return;
    }
    let server = Server::start(&[]);
    let temp = tempfile::tempdir().expect("tempdir");
    import_busybox(&server, temp.path());

    let context = temp.path().join("site");
    std::fs::create_dir(&context).expect("mkdir");
    write(&context, "Containerfile", CONTAINERFILE);
    write(&context, "page.txt", "first page\n");
    write(&context, ".dockerignore", "secret.txt\n");
    write(&context, "secret.txt", "not in the image\n");
    let dir = context.to_str().expect("utf-8");

    let first = server.ok(&["build", dir, "-t", "test/site:1"]);
    assert!(first.contains("│ compiled"), "RUN's output is shown: {first}");
    assert_eq!(cached_of(&first), (0, 4), "{first}");

    server.ok(&["deploy", "site", "--image", "test/site:1"]);
    let body = server.ok(&["invoke", "site", "--path", "/index.html"]);
    assert_eq!(body.trim_end(), "built by RUN");
    assert_eq!(server.ok(&["invoke", "site", "--path", "/page.txt"]).trim_end(), "first page");

    // No change: every layer from the cache. An ignored file's change is no change.
    write(&context, "secret.txt", "still not in the image\n");
    let again = server.ok(&["build", dir, "-t", "test/site:2"]);
    assert_eq!(cached_of(&again), (4, 4), "{again}");
    assert!(!again.contains("│ compiled"), "RUN did not run again: {again}");

    // A changed file: the RUN before its COPY stays cached; what follows is built again.
    write(&context, "page.txt", "second page\n");
    let changed = server.ok(&["build", dir, "-t", "test/site:3"]);
    assert_eq!(cached_of(&changed), (1, 4), "{changed}");
    server.ok(&["deploy", "site", "--image", "test/site:3"]);
    assert_eq!(server.ok(&["invoke", "site", "--path", "/page.txt"]).trim_end(), "second page");

    // Build and deploy in one step: the service runs the image by digest, so a rebuild
    // with a change is a new revision.
    server.ok(&["deploy", "fromsource", "--source", dir]);
    assert_eq!(server.ok(&["invoke", "fromsource", "--path", "/page.txt"]).trim_end(), "second page");
    write(&context, "page.txt", "third page\n");
    server.ok(&["deploy", "fromsource", "--source", dir]);
    assert_eq!(server.ok(&["invoke", "fromsource", "--path", "/page.txt"]).trim_end(), "third page");
    let service = server.get_json(&["fromsource"]);
    let image = service["spec"]["template"]["spec"]["containers"][0]["image"].as_str().unwrap_or_default();
    assert!(image.starts_with("localhost/fromsource@sha256:"), "{image}");
}

#[test]
fn bad_builds_fail_in_one_clear_message() {
    if !runc_available() {
        return;
    }
    let server = Server::start(&[]);
    let temp = tempfile::tempdir().expect("tempdir");
    import_busybox(&server, temp.path());
    let context = temp.path().join("bad");
    std::fs::create_dir(&context).expect("mkdir");
    let dir = context.to_str().expect("utf-8");

    write(&context, "Containerfile", "FROM test/busybox:1\nRUN echo oops && exit 3\n");
    let err = server.fails(&["build", dir, "-t", "test/bad:1"]);
    assert!(err.contains("Containerfile:2") && err.contains("code 3") && err.contains("oops"), "{err}");
    assert!(!server.ok(&["image", "ls"]).contains("test/bad"), "no image from a failed build");

    write(&context, "Containerfile", "FROM test/busybox:1\nCOPY ../outside /x\n");
    let err = server.fails(&["build", dir, "-t", "test/bad:1"]);
    assert!(err.contains("outside the build context"), "{err}");

    write(&context, "Containerfile", "FROM test/busybox:1\nNOTANINSTRUCTION x\n");
    let err = server.fails(&["build", dir, "-t", "test/bad:1"]);
    assert!(err.contains("Containerfile:2"), "{err}");

    write(&context, "Containerfile", "FROM nowhere.invalid/none:1\n");
    let err = server.fails(&["build", dir, "-t", "test/bad:1"]);
    assert!(err.contains("unknown base image nowhere.invalid/none:1"), "{err}");
}

/// A Python base image made of host files: busybox, the host's `python3` with its shared
/// libraries, and its standard library (tests, caches and GUI modules left out).
fn python_base_image(archive: &Path) -> bool {
    let python = Path::new("/usr/bin/python3");
    let Ok(version) = std::process::Command::new(python)
        .args(["-c", "import sys; print(f'{sys.version_info[0]}.{sys.version_info[1]}')"])
        .output()
    else {
        assert!(std::env::var("SERVAL_REQUIRE_TEMPLATES").as_deref() != Ok("1"), "python3 is required");
        skip("/usr/bin/python3 is not installed");
        return false;
    };
    let version = String::from_utf8_lossy(&version.stdout).trim().to_string();
    let stdlib = Path::new("/usr/lib").join(format!("python{version}"));
    let mut files = busybox_files().expect("busybox-static");
    files.extend(binary_with_libs(python, "/usr/bin/python3").expect("python3 with its libraries"));
    files.push(("/usr/lib".into(), HostSource::Dir { mode: 0o755 }));
    let skipped = ["test", "tests", "__pycache__", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3"];
    let mut pending = vec![stdlib.clone()];
    while let Some(dir) = pending.pop() {
        files.push((dir.display().to_string(), HostSource::Dir { mode: 0o755 }));
        for entry in std::fs::read_dir(&dir).expect("read the standard library").filter_map(Result::ok) {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(kind) = entry.file_type() else { continue };
            if kind.is_dir() && !skipped.contains(&name.as_str()) {
                pending.push(path);
            } else if kind.is_file() {
                files.push((path.display().to_string(), HostSource::File(path)));
            }
        }
    }
    write_docker_archive(archive, "test/python:1", &files, ImageConfigSpec::default()).expect("python archive");
    true
}

/// `serval init` writes no Containerfile: `build` generates one for the language (here
/// from a Python base made of host files), and the image serves the template.
#[tokio::test]
async fn a_project_without_a_containerfile_builds_from_the_generated_one() {
    if !runc_available() {
        return;
    }
    let temp = tempfile::tempdir().expect("tempdir");
    let archive = temp.path().join("python.tar");
    if !python_base_image(&archive) {
        return;
    }
    let server = Server::start(&[]);
    server.ok(&["image", "import", archive.to_str().expect("utf-8")]);
    server.ok(&["init", temp.path().join("hello").to_str().expect("utf-8"), "--lang", "python"]);
    let dir = temp.path().join("hello");
    let out = server.ok(&["build", dir.to_str().expect("utf-8"), "--base", "test/python:1", "-t", "test/hello:1"]);
    assert!(out.contains("FROM test/python:1"), "{out}");
    server.ok(&["deploy", "hello", "--image", "test/hello:1"]);
    let body = server.ok(&["invoke", "hello", "--path", "/?name=image"]);
    assert_eq!(body.trim_end(), "Hello, image!");
}

/// The Containerfile generated for every language parses and plans.
#[test]
fn generated_containerfiles_parse_and_plan() {
    for language in serval_project::Language::ALL {
        let text = language.containerfile(language.default_base_image(), "hello");
        let file = serval_build::parse(&text).unwrap_or_else(|e| panic!("{language}: {e}\n{text}"));
        let plan = serval_build::plan(&file, &serval_build::BuildOptions::default())
            .unwrap_or_else(|e| panic!("{language}: {e}\n{text}"));
        assert!(!plan.stages.is_empty(), "{language}");
    }
}

/// `build --push` sends the image to a registry (skopeo reads it back), and a server
/// without the image pulls it from there when it is deployed by reference.
#[tokio::test]
async fn a_pushed_build_is_read_by_skopeo_and_pulled_by_deploy() {
    if !runc_available() {
        return;
    }
    let Some(skopeo) = registry_tools() else {
        assert!(std::env::var("SERVAL_REQUIRE_RUNC").as_deref() != Ok("1"), "docker-registry and skopeo are required");
        skip("docker-registry/skopeo not found");
        return;
    };
    let server = Server::start(&[]);
    let temp = tempfile::tempdir().expect("tempdir");
    import_busybox(&server, temp.path());
    let context = temp.path().join("pushed");
    std::fs::create_dir(&context).expect("mkdir");
    write(&context, "index.html", "pushed and pulled\n");
    write(
        &context,
        "Containerfile",
        "FROM scratch\nCOPY --from=test/busybox:1 /bin/busybox /bin/busybox\nCOPY index.html /www/index.html\n\
         CMD [\"/bin/busybox\", \"sh\", \"-c\", \"exec /bin/busybox httpd -f -p 127.0.0.1:$PORT -h /www\"]\n",
    );
    let registry = TestRegistry::start(None);
    let reference = format!("{}/test/pushed:1", registry.addr);
    let out = server.ok(&["build", context.to_str().expect("utf-8"), "-t", &reference, "--push"]);
    assert!(out.contains(&format!("pushed {reference}")), "{out}");

    let inspect = std::process::Command::new(&skopeo)
        .args(["inspect", "--tls-verify=false", &format!("docker://{reference}")])
        .output()
        .expect("skopeo inspect");
    assert!(inspect.status.success(), "skopeo: {}", String::from_utf8_lossy(&inspect.stderr));
    let inspected: serde_json::Value = serde_json::from_slice(&inspect.stdout).expect("skopeo's JSON");
    assert_eq!(inspected["Layers"].as_array().map(Vec::len), Some(2), "{inspected:#}");

    server.ok(&["image", "rm", &reference]);
    server.ok(&["deploy", "pushed", "--image", &reference]);
    assert_eq!(server.ok(&["invoke", "pushed", "--path", "/index.html"]).trim_end(), "pushed and pulled");

    // FROM a registry reference the store lacks: the base is pulled.
    let derived = temp.path().join("derived");
    std::fs::create_dir(&derived).expect("mkdir");
    write(&derived, "Containerfile", &format!("FROM {reference}\nCOPY extra.html /www/extra.html\n"));
    write(&derived, "extra.html", "on a pulled base\n");
    server.ok(&["delete", "pushed"]);
    server.ok(&["image", "rm", &reference]);
    server.ok(&["build", derived.to_str().expect("utf-8"), "-t", "test/derived:1"]);
    server.ok(&["deploy", "derived", "--image", "test/derived:1"]);
    assert_eq!(server.ok(&["invoke", "derived", "--path", "/extra.html"]).trim_end(), "on a pulled base");
}

/// `ADD` unpacks a local archive into the destination; `COPY --chown` takes names, looked
/// up in the stage's own `/etc/passwd` and `/etc/group`.
#[tokio::test]
async fn add_unpacks_archives_and_chown_takes_names() {
    if !runc_available() {
        return;
    }
    let server = Server::start(&[]);
    let temp = tempfile::tempdir().expect("tempdir");
    import_busybox(&server, temp.path());
    let context = temp.path().join("ctx");
    let packed = temp.path().join("packed");
    std::fs::create_dir_all(packed.join("cgi-bin")).expect("mkdir");
    write(&packed, "hello.txt", "from the archive\n");
    let script = packed.join("cgi-bin/owner");
    write(&packed, "cgi-bin/owner", "#!/bin/sh\necho 'Content-Type: text/plain'\necho\nls -ln /srv/page.txt\n");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    std::fs::create_dir(&context).expect("mkdir");
    let tarred = std::process::Command::new("tar")
        .args([
            "czf",
            context.join("bundle.tar.gz").to_str().expect("utf-8"),
            "-C",
            packed.to_str().expect("utf-8"),
            ".",
        ])
        .status()
        .expect("tar");
    assert!(tarred.success());
    write(&context, "page.txt", "owned by app\n");
    write(
        &context,
        "Containerfile",
        "FROM test/busybox:1\n\
         RUN mkdir -p /etc && echo 'app:x:1234:4321::/:/bin/sh' >> /etc/passwd && echo 'app:x:4321:' >> /etc/group\n\
         ADD bundle.tar.gz /srv/\n\
         COPY --chown=app:app page.txt /srv/page.txt\n\
         CMD [\"/bin/busybox\", \"sh\", \"-c\", \"exec /bin/busybox httpd -f -p 127.0.0.1:$PORT -h /srv\"]\n",
    );
    server.ok(&["build", context.to_str().expect("utf-8"), "-t", "test/added:1"]);
    server.ok(&["deploy", "added", "--image", "test/added:1"]);
    assert_eq!(server.ok(&["invoke", "added", "--path", "/hello.txt"]).trim_end(), "from the archive");
    let listing = server.ok(&["invoke", "added", "--path", "/cgi-bin/owner"]);
    assert!(listing.contains(" 1234 ") && listing.contains(" 4321 "), "{listing}");
}

/// Ctrl-C during a `RUN` (SIGINT to the build's process group, as a terminal sends it)
/// stops the build: no image is named, no scratch tree is left.
#[test]
fn an_interrupted_build_stores_nothing() {
    if !runc_available() {
        return;
    }
    let server = Server::start(&[]);
    let temp = tempfile::tempdir().expect("tempdir");
    import_busybox(&server, temp.path());
    let context = temp.path().join("slow");
    std::fs::create_dir(&context).expect("mkdir");
    write(&context, "Containerfile", "FROM test/busybox:1\nRUN echo started && sleep 30\n");
    let mut build = std::os::unix::process::CommandExt::process_group(
        server.process.cli_command().args(["build", context.to_str().expect("utf-8"), "-t", "test/slow:1"]),
        0,
    )
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .expect("start the build");
    let stdout = build.stdout.take().expect("stdout");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    assert!(lines.any(|l| l.is_ok_and(|l| l.contains("│ started"))), "the RUN started");
    let sent = std::process::Command::new("kill")
        .args(["-INT", "--", &format!("-{}", build.id())])
        .status()
        .expect("kill -INT the build's process group");
    assert!(sent.success());
    let began = std::time::Instant::now();
    let out = build.wait_with_output().expect("the build ends");
    assert!(began.elapsed() < std::time::Duration::from_secs(20), "stopped promptly");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("interrupted"), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!server.ok(&["image", "ls"]).contains("test/slow"), "no image from an interrupted build");
    let left: Vec<String> = std::fs::read_dir(server.dir.join("build/tmp"))
        .expect("scratch dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name != "runc")
        .collect();
    assert!(left.is_empty(), "scratch trees left: {left:?}");
    let containers = std::process::Command::new("runc")
        .arg("--root")
        .arg(server.dir.join("build/tmp/runc"))
        .args(["list", "-q"])
        .output()
        .expect("runc list");
    assert_eq!(String::from_utf8_lossy(&containers.stdout).trim(), "", "the RUN's container was removed");
}
