//! `serval apply --image-map IMAGE=CMD`: a Knative Service written for an image runs as a
//! host command, its environment kept; a mapping that matches nothing warns, a malformed
//! one fails before anything is written.

mod support;

use support::{Server, echo};

const SERVICE: &str = "apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: mapped
spec:
  template:
    spec:
      containers:
        - image: registry.example/acme/echo:1
          env:
            - name: GREETING
              value: hello
";

#[test]
fn apply_runs_a_mapped_image_as_a_host_command() {
    let server = Server::start(&[]);
    let file = server.dir.join("service.yaml");
    std::fs::write(&file, SERVICE).expect("write");
    let file = file.to_str().expect("utf-8 path");

    let map_file = server.dir.join("images.txt");
    std::fs::write(
        &map_file,
        format!("# built locally\n\nregistry.example/acme/echo:1={}\n", shell_words::quote(&echo())),
    )
    .expect("write");
    let out = server.cli(&[
        "apply",
        "-f",
        file,
        "--image-map-file",
        map_file.to_str().expect("utf-8 path"),
        "--image-map",
        "registry.example/unused:1=true",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("warning: --image-map registry.example/unused:1 matched no container"), "{err}");

    let service = server.get_json(&["mapped"]);
    let container = &service["spec"]["template"]["spec"]["containers"][0];
    assert!(container.get("image").is_none(), "{container}");
    assert_eq!(container["command"], serde_json::json!([echo()]), "{container}");
    let answer: serde_json::Value = serde_json::from_str(&server.ok(&["invoke", "mapped"])).expect("JSON from echo");
    assert_eq!(answer["service"], "mapped", "{answer}");
    assert_eq!(answer["env"]["GREETING"], "hello", "the environment is kept: {answer}");

    // A malformed mapping fails on one line, and nothing is written.
    let err = server.fails(&["apply", "-f", file, "--image-map", "no-command-here"]);
    assert_eq!(err.trim(), r#"error: --image-map "no-command-here" must look like IMAGE=CMD"#);
}
