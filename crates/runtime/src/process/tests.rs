use super::*;
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::sync::Mutex;

use crate::{LogLine, Readiness};

fn spec(argv: &[&str]) -> InstanceSpec {
    InstanceSpec {
        instance_id: "test-1".into(),
        namespace: "default".into(),
        service: "svc".into(),
        revision: "svc-00001".into(),
        configuration: "svc".into(),
        workload: crate::Workload::Process { argv: argv.iter().map(|s| s.to_string()).collect() },
        env: vec![("GREETING".into(), "hi".into())],
        working_dir: None,
        startup_timeout: Duration::from_secs(5),
        readiness: Readiness::TcpConnect,
    }
}

fn collecting_sink() -> (LogSink, Arc<Mutex<Vec<String>>>) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let l = lines.clone();
    let sink: LogSink = Arc::new(move |line: LogLine| l.lock().expect("lock").push(line.text));
    (sink, lines)
}

/// A listener written in Python's standard library: binds $PORT and prints the contract env.
const PY_SERVER: &str = "import os,socket,time\n\
print(os.environ['K_SERVICE'], os.environ['K_REVISION'], os.environ['GREETING'], flush=True)\n\
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
s.bind(('127.0.0.1', int(os.environ['PORT']))); s.listen()\n\
while True: c,_=s.accept(); c.close()\n";

#[tokio::test]
async fn starts_a_listener_with_the_runtime_contract_and_stops_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = ProcessRuntime::new(dir.path().to_path_buf()).expect("runtime");
    let (sink, lines) = collecting_sink();
    let instance = runtime.start(spec(&["python3", "-c", PY_SERVER]), sink).await.expect("ready");
    assert!(TcpStream::connect(instance.endpoint.socket().expect("a socket")).is_ok());
    assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 1, "instance recorded");
    let exit = instance.stop(Duration::from_secs(5)).await;
    assert_eq!(exit.signal, Some(libc_sigterm()), "python dies of SIGTERM: {exit}");
    assert!(lines.lock().expect("lock").iter().any(|l| l == "svc svc-00001 hi"));
    // The record is removed once the exit is observed.
    tokio::time::timeout(Duration::from_secs(2), async {
        while std::fs::read_dir(dir.path()).expect("dir").count() != 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("record removed");
}

fn libc_sigterm() -> i32 {
    Signal::SIGTERM as i32
}

#[tokio::test]
async fn exit_before_ready_is_reported_with_output() {
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = ProcessRuntime::new(dir.path().to_path_buf()).expect("runtime");
    let (sink, _) = collecting_sink();
    let err = runtime.start(spec(&["sh", "-c", "echo boom >&2; exit 7"]), sink).await.err().expect("fails");
    let text = err.to_string();
    assert!(text.contains("exited with code 7") && text.contains("boom"), "{text}");
}

#[tokio::test]
async fn missing_program_is_a_spawn_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = ProcessRuntime::new(dir.path().to_path_buf()).expect("runtime");
    let (sink, _) = collecting_sink();
    let err = runtime.start(spec(&["/nonexistent/x"]), sink).await.err().expect("fails");
    assert!(matches!(err, RuntimeError::Spawn { .. }), "{err}");
}

#[tokio::test]
async fn stop_kills_after_grace_when_sigterm_is_ignored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = ProcessRuntime::new(dir.path().to_path_buf()).expect("runtime");
    let (sink, _) = collecting_sink();
    let script = format!("import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n{PY_SERVER}");
    let instance = runtime.start(spec(&["python3", "-c", &script]), sink).await.expect("ready");
    let exit = instance.stop(Duration::from_millis(200)).await;
    assert_eq!(exit.signal, Some(Signal::SIGKILL as i32));
}

#[tokio::test]
async fn leftovers_of_a_previous_server_are_killed() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A process in its own group, recorded as an instance, but not our child any more.
    let mut child = std::process::Command::new("sleep").arg("30").process_group(0).spawn().expect("spawn sleep");
    let record = leftovers::Record::create(dir.path(), child.id()).expect("record");
    std::mem::forget(record); // as if the server died without cleaning up
    let _runtime = ProcessRuntime::new(dir.path().to_path_buf()).expect("runtime");
    let status = child.wait().expect("wait");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(Signal::SIGKILL as i32));
    assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 0);
}

/// Answers `GET /ready` with the status in $READY_STATUS.
const PY_HTTP: &str = concat!(
    "import os\n",
    "from http.server import BaseHTTPRequestHandler, HTTPServer\n",
    "class H(BaseHTTPRequestHandler):\n",
    "    def do_GET(self):\n",
    "        self.send_response(int(os.environ['READY_STATUS'])); self.end_headers()\n",
    "HTTPServer(('127.0.0.1', int(os.environ['PORT'])), H).serve_forever()\n",
);

#[tokio::test]
async fn http_readiness_passes_on_2xx_and_times_out_on_5xx() {
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = ProcessRuntime::new(dir.path().to_path_buf()).expect("runtime");
    let probe = Readiness::HttpGet { path: "/ready".into(), headers: vec![], timeout: Duration::from_secs(1) };
    let mut ok = spec(&["python3", "-c", PY_HTTP]);
    ok.env.push(("READY_STATUS".into(), "204".into()));
    ok.readiness = probe.clone();
    let (sink, _) = collecting_sink();
    let instance = runtime.start(ok, sink.clone()).await.expect("ready");
    instance.stop(Duration::from_secs(1)).await;

    let mut failing = spec(&["python3", "-c", PY_HTTP]);
    failing.env.push(("READY_STATUS".into(), "500".into()));
    failing.readiness = probe;
    failing.startup_timeout = Duration::from_millis(1500);
    let err = runtime.start(failing, sink).await.err().expect("not ready");
    assert!(err.to_string().contains("GET /ready answered 500"), "{err}");
}
