//! The `qwen` executable's server on SIGTERM: a stream open when the signal arrives still
//! completes (the drain), and the process exits with status 0, as Kubernetes expects of a
//! pod it stops. The in-process tests (runtime/tests/serve_ops.rs) cover the drain itself;
//! this one covers the signal's wiring in the real binary.
#![cfg(unix)]

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use qwenc_runtime::serve::client::{request_bytes, Streaming};
use serde_json::json;

const T: Duration = Duration::from_secs(30);

#[test]
fn sigterm_drains_then_exits_with_status_0() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_qwen"))
        .args(["serve", "--port", "0", "--threads", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    let addr: SocketAddr = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));

    let body = json!({"prompt": "Hello", "max_tokens": 200, "temperature": 0, "stream": true});
    let raw = request_bytes("POST", "/v1/completions", Some(body.to_string().as_bytes()));
    let mut s = Streaming::open(addr, &raw, T).unwrap();
    assert_eq!(s.status, 200);
    let mut events = vec![s.next_event().unwrap().expect("a first event")];

    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    while let Some(e) = s.next_event().unwrap() {
        events.push(e);
    }
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "{events:?}"
    );

    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > T {
            let _ = child.kill();
            panic!("qwen serve did not exit within {T:?} of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    assert_eq!(status.code(), Some(0), "{rest}");
    assert!(rest.contains("SIGTERM: draining"), "{rest}");
    assert!(rest.trim_end().ends_with("stopped"), "{rest}");
}
