//! End-to-end tests of FileSource with the real binary: files written into a directory
//! become events with their path, size, SHA-256 and content; a burst of 1 000 files is
//! reported once each, also when delivered in batches; a `kill -9` in the middle of 2 000 files loses none; a missing
//! directory is Ready=False until it appears.

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use support::{Server, Subscriber, eventually};

fn apply_source(server: &Server, name: &str, dir: &Path, after: &str, sink: &str) {
    apply_source_with(server, name, "", dir, after, sink);
}

/// `metadata` adds lines under the source's `metadata:` (annotations).
fn apply_source_with(server: &Server, name: &str, metadata: &str, dir: &Path, after: &str, sink: &str) {
    let file = server.dir.join(format!("{name}.yaml"));
    std::fs::write(
        &file,
        format!(
            "apiVersion: sources.serval.dev/v1alpha1\nkind: FileSource\nmetadata:\n  name: {name}\n{metadata}spec:\n  \
             path: {}\n  pattern: '*.dat'\n  after: {after}\n  sink:\n    uri: {sink}\n  ceOverrides:\n    \
             extensions:\n      batch: nightly\n",
            dir.display()
        ),
    )
    .expect("write manifest");
    server.ok(&["apply", "-f", &file.display().to_string()]);
}

/// Writes a file completely elsewhere, then moves it in (as uploaders do).
fn drop_file(dir: &Path, scratch: &Path, name: &str, content: &[u8]) {
    let staged = scratch.join(name);
    std::fs::write(&staged, content).expect("write");
    std::fs::rename(&staged, dir.join(name)).expect("move in");
}

fn data(received: &support::Received) -> Value {
    serde_json::from_slice(&received.body).expect("JSON data")
}

/// How often each file name arrived.
fn arrivals(sink: &Subscriber) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for r in sink.received() {
        if let Some(name) = data(&r)["name"].as_str() {
            *counts.entry(name.to_string()).or_default() += 1;
        }
    }
    counts
}

#[tokio::test]
async fn files_written_into_a_directory_become_events() {
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().expect("dir");
    let sink = Subscriber::start(vec![]).await;
    // Written directly: reported when closed after writing, not before.
    std::fs::write(dir.path().join("before.dat"), b"was here first").expect("write");
    apply_source(&server, "drops", dir.path(), "keep", &sink.url);
    std::fs::write(dir.path().join("hello.dat"), b"hello world").expect("write");
    std::fs::write(dir.path().join("ignored.txt"), b"not matched").expect("write");
    let got = eventually("both files", Duration::from_secs(10), async || {
        let got = sink.received();
        (got.len() >= 2).then_some(got)
    })
    .await;
    let hello = got.iter().find(|r| data(r)["name"] == "hello.dat").expect("hello.dat");
    assert_eq!(hello.headers.get("ce-type").map(String::as_str), Some("dev.serval.file.added"));
    assert_eq!(hello.headers.get("ce-subject").map(String::as_str), Some("hello.dat"));
    assert_eq!(hello.headers.get("ce-batch").map(String::as_str), Some("nightly"), "ceOverrides");
    let hello = data(hello);
    assert_eq!(hello["size"], 11);
    assert_eq!(hello["sha256"], "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9");
    assert_eq!(hello["contentBase64"], "aGVsbG8gd29ybGQ=");
    assert!(got.iter().any(|r| data(r)["name"] == "before.dat"), "the scan at start found the older file");
    assert!(!arrivals(&sink).contains_key("ignored.txt"));

    let source = server.get_json(&["filesource", "drops"]);
    assert_eq!(source["status"]["conditions"][0]["status"], "True", "{source:#}");
    assert_eq!(source["status"]["sinkUri"], sink.url.as_str(), "{source:#}");
    assert_eq!(source["status"]["counters"]["delivered"], 2, "{source:#}");
    // Nothing is reported twice: a changed source's task restarts and scans again, from
    // its stored positions.
    apply_source(&server, "drops", dir.path(), "keep", &format!("{}?again=1", sink.url));
    std::fs::write(dir.path().join("third.dat"), b"3").expect("write");
    eventually("the third file", Duration::from_secs(10), async || {
        arrivals(&sink).contains_key("third.dat").then_some(())
    })
    .await;
    assert!(arrivals(&sink).values().all(|n| *n == 1), "{:?}", arrivals(&sink));

    // A source deleted and made again starts afresh: its positions went with it.
    server.ok(&["delete", "filesource", "drops"]);
    apply_source(&server, "drops", dir.path(), "keep", &sink.url);
    eventually("every file again", Duration::from_secs(10), async || {
        arrivals(&sink).values().all(|n| *n == 2).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_burst_of_a_thousand_files_is_reported_once_each_and_deleted() {
    let server = Server::start(&[]);
    let (dir, scratch) = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("scratch"));
    // Into a broker: its log holds exactly what the source reported.
    server.ok(&["broker", "create", "images"]);
    apply_source(&server, "burst", dir.path(), "delete", &format!("{}/b/default/images", server.gateway));
    for n in 0..1000 {
        drop_file(dir.path(), scratch.path(), &format!("image-{n:04}.dat"), format!("pixels {n}").as_bytes());
    }
    let reported = || -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for line in server.ok(&["event", "tail", "images"]).lines() {
            let event: Value = serde_json::from_str(line).expect("a JSON event");
            *counts.entry(event["data"]["name"].as_str().unwrap_or_default().to_string()).or_default() += 1;
        }
        counts
    };
    let counts = eventually("1 000 events", Duration::from_secs(60), async || {
        let counts = reported();
        (counts.len() == 1000).then_some(counts)
    })
    .await;
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "reported twice: {twice:?}");
    eventually("the files deleted", Duration::from_secs(10), async || {
        (std::fs::read_dir(dir.path()).expect("dir").count() == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn files_go_to_a_sink_in_batches_of_the_annotated_size() {
    let server = Server::start(&[]);
    let (dir, scratch, done) =
        (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("scratch"), tempfile::tempdir().expect("done"));
    let sink = Subscriber::start(vec![]).await;
    let annotations = "  annotations:\n    serval.dev/delivery-batch-size: \"20\"\n";
    let after = format!("move:{}", done.path().display());
    apply_source_with(&server, "batched", annotations, dir.path(), &after, &sink.url);
    for n in 0..300 {
        drop_file(dir.path(), scratch.path(), &format!("scan-{n:03}.dat"), format!("page {n}").as_bytes());
    }
    let names = || -> Vec<Vec<String>> {
        sink.received()
            .iter()
            .map(|r| {
                let batch: Vec<Value> =
                    serde_json::from_slice(&r.body).expect("every request is a batch (a JSON array)");
                batch.iter().map(|e| e["data"]["name"].as_str().unwrap_or_default().to_string()).collect()
            })
            .collect()
    };
    let batches = eventually("300 files", Duration::from_secs(30), async || {
        let batches = names();
        (batches.iter().map(Vec::len).sum::<usize>() >= 300).then_some(batches)
    })
    .await;
    for r in sink.received() {
        let content_type = r.headers.get("content-type").map(String::as_str).unwrap_or_default();
        assert!(content_type.starts_with("application/cloudevents-batch+json"), "{content_type}");
    }
    let largest = batches.iter().map(Vec::len).max().unwrap_or_default();
    assert!(largest > 1 && largest <= 20, "batches of up to 20 files, the largest {largest}");
    let mut all: Vec<String> = batches.concat();
    all.sort();
    let expected: Vec<String> = (0..300).map(|n| format!("scan-{n:03}.dat")).collect();
    assert_eq!(all, expected, "each file once");
    eventually("the files moved", Duration::from_secs(10), async || {
        (std::fs::read_dir(done.path()).expect("dir").count() == 300).then_some(())
    })
    .await;
    assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 0);
}

#[tokio::test]
async fn no_file_is_lost_across_kill_9() {
    let mut server = Server::start(&[]);
    let (dir, scratch) = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("scratch"));
    let sink = Subscriber::start(vec![]).await;
    apply_source(&server, "durable", dir.path(), "keep", &sink.url);
    let produced = 2000;
    let writer = {
        let (dir, scratch) = (dir.path().to_path_buf(), scratch.path().to_path_buf());
        std::thread::spawn(move || {
            for n in 0..produced {
                drop_file(&dir, &scratch, &format!("f-{n:05}.dat"), format!("{n}").as_bytes());
            }
        })
    };
    eventually("some files delivered", Duration::from_secs(30), async || (sink.received().len() >= 300).then_some(()))
        .await;
    server.kill9();
    writer.join().expect("writer");
    let _restarted = Server::start_in(&server.dir.clone(), &[]);
    let counts = eventually("every file after the restart", Duration::from_secs(60), async || {
        let counts = arrivals(&sink);
        (counts.len() == produced).then_some(counts)
    })
    .await;
    let delivered: usize = counts.values().sum();
    println!("produced {produced}, delivered {}, duplicates {}", counts.len(), delivered - counts.len());
}

#[tokio::test]
async fn a_missing_directory_is_not_ready_until_it_appears() {
    let server = Server::start(&[]);
    let parent = tempfile::tempdir().expect("dir");
    let dir = parent.path().join("incoming");
    let sink = Subscriber::start(vec![]).await;
    apply_source(&server, "later", &dir, "keep", &sink.url);
    let source = eventually("Ready=False", Duration::from_secs(10), async || {
        let s = server.get_json(&["filesource", "later"]);
        (s["status"]["conditions"][0]["status"] == "False").then_some(s)
    })
    .await;
    assert_eq!(source["status"]["conditions"][0]["reason"], "DirectoryNotReady", "{source:#}");
    assert!(source["status"]["conditions"][0]["message"].as_str().unwrap_or_default().contains("incoming"));
    std::fs::create_dir(&dir).expect("mkdir");
    eventually("Ready again by itself", Duration::from_secs(15), async || {
        let s = server.get_json(&["filesource", "later"]);
        (s["status"]["conditions"][0]["status"] == "True").then_some(())
    })
    .await;
    std::fs::write(dir.join("late.dat"), b"late").expect("write");
    eventually("the late file", Duration::from_secs(10), async || {
        arrivals(&sink).contains_key("late.dat").then_some(())
    })
    .await;
}
