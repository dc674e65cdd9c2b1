//! The chat page in a real browser: starts the `qwen` executable (the tiny model) with an
//! API key on a free port and runs runtime/tests/browser/chat_page.py, which drives headless
//! Chromium through selenium (the key asked for, streamed answers equal to the
//! non-streamed ones, errors shown, a screenshot).
//!
//! Needs /usr/bin/chromium, /usr/bin/chromedriver and a Python with selenium:
//! `QWENC_BROWSER_PYTHON` (default `python3`; scripts/setup-browser-test.sh makes a venv
//! with it, and scripts/test.sh sets both variables). Without them the test fails if
//! `QWENC_REQUIRE_BROWSER=1`, and otherwise says on stderr that it was skipped.
//! `QWENC_CHAT_SCREENSHOT` is where the PNG goes (default: this test's target tmp dir).
#![cfg(unix)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const KEY: &str = "sk-browser-test";
/// The whole script: a browser start, four requests to the tiny model, a screenshot.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(240);
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Kills the child when the test ends, passed or not.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What is missing to run the browser test, if anything.
fn missing(python: &str) -> Vec<String> {
    let mut missing = Vec::new();
    for path in [CHROMIUM, CHROMEDRIVER] {
        if !Path::new(path).exists() {
            missing.push(path.to_string());
        }
    }
    let selenium = Command::new(python)
        .args(["-c", "import selenium"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !selenium.is_ok_and(|s| s.success()) {
        missing.push(format!("selenium for {python}"));
    }
    missing
}

/// Starts `qwen serve` on a free port; its address from the first line of its stderr.
fn start_server() -> (Killed, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_qwen"))
        .args(["serve", "--port", "0", "--threads", "1", "--api-key", KEY])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let child = Killed(child);
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    let addr: SocketAddr = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    // Whatever else the server says goes to this test's stderr.
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            eprintln!("qwen serve: {line}");
        }
    });
    (child, addr)
}

/// Runs the script to its end or the timeout: (success, stdout + stderr).
fn run_script(python: &str, addr: SocketAddr, screenshot: &Path) -> (bool, String) {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/runtime/tests/browser/chat_page.py"
    );
    let mut child = Command::new(python)
        .arg(script)
        .args(["--url", &format!("http://{addr}"), "--api-key", KEY])
        .arg("--screenshot")
        .arg(screenshot)
        .args(["--chromium", CHROMIUM, "--chromedriver", CHROMEDRIVER])
        // Selenium Manager must not look for drivers online: the driver is given.
        .env("SE_OFFLINE", "true")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    let read = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = read(Box::new(child.stdout.take().unwrap()));
    let err = read(Box::new(child.stderr.take().unwrap()));
    let mut child = Killed(child);
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break Some(s);
        }
        if start.elapsed() > SCRIPT_TIMEOUT {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    drop(child);
    let text = format!("{}{}", out.join().unwrap(), err.join().unwrap());
    match status {
        Some(s) => (s.success(), text),
        None => (false, format!("timed out after {SCRIPT_TIMEOUT:?}\n{text}")),
    }
}

#[test]
fn chat_page_in_headless_chromium() {
    let python = std::env::var("QWENC_BROWSER_PYTHON").unwrap_or_else(|_| "python3".into());
    let missing = missing(&python);
    if !missing.is_empty() {
        let msg = format!(
            "chat_page_in_headless_chromium: missing {} (scripts/setup-browser-test.sh installs them)",
            missing.join(", ")
        );
        if std::env::var("QWENC_REQUIRE_BROWSER").as_deref() == Ok("1") {
            panic!("{msg}; QWENC_REQUIRE_BROWSER=1");
        }
        // Straight to stderr, past the test harness's capture, so that a skip is seen.
        let _ = writeln!(std::io::stderr(), "skipped: {msg}");
        return;
    }
    let screenshot = std::env::var_os("QWENC_CHAT_SCREENSHOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("chat-page.png"));
    let (_server, addr) = start_server();
    let (ok, output) = run_script(&python, addr, &screenshot);
    assert!(ok, "chat_page.py failed:\n{output}");
    print!("{output}");
    let png = std::fs::read(&screenshot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{}",
        screenshot.display()
    );
}
