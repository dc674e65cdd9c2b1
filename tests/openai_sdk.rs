//! The official `openai` Python package against the real `qwen serve`: the tiny-model `qwen`
//! is started twice on free loopback ports, once plain and once with `--api-key`, and
//! `runtime/tests/clients/openai_sdk.py` runs against both (streaming, logprobs and echo,
//! structured output, the error table as the SDK's exceptions, the API key, models).
//!
//! The interpreter is `QWENC_PYTHON` (default `python3`); it needs the `openai` version of
//! `runtime/tests/clients/requirements.txt` (`scripts/test.sh` makes a venv with it). Without
//! the interpreter or the package the test fails when `QWENC_REQUIRE_OPENAI=1`, and otherwise
//! says on stderr that it was skipped.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/runtime/tests/clients/openai_sdk.py"
);
const REQUIREMENTS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/runtime/tests/clients/requirements.txt"
);
const API_KEY: &str = "test-key-0123456789";
const MAX_BODY: usize = 64 * 1024;

/// A running `qwen serve`, killed when dropped; its stderr is kept for failure messages.
struct Server {
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<String>>,
    reader: Option<JoinHandle<()>>,
}

impl Server {
    fn start(args: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_qwen"))
            .args(["serve", "--port", "0", "--threads", "1"])
            .args(args)
            .env_remove("QWEN_API_KEY")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("qwen serve starts");
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        stderr.read_line(&mut line).unwrap();
        let addr: SocketAddr = match line
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|a| a.parse().ok())
        {
            Some(addr) => addr,
            None => {
                let _ = child.kill();
                panic!("no address in qwen serve's first line {line:?}");
            }
        };
        // Read the rest as it comes, so a full pipe never blocks the server.
        let log = Arc::new(Mutex::new(line));
        let sink = log.clone();
        let reader = std::thread::spawn(move || {
            let mut rest = String::new();
            let _ = stderr.read_to_string(&mut rest);
            sink.lock().unwrap().push_str(&rest);
        });
        Server {
            child,
            addr,
            log,
            reader: Some(reader),
        }
    }

    fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Stops the server; returns what it wrote to stderr.
    fn stop(mut self) -> String {
        self.kill();
        let log = self.log.lock().unwrap();
        log.clone()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The pinned `openai` version (`openai==X` in requirements.txt).
fn pinned_version() -> String {
    let text = std::fs::read_to_string(REQUIREMENTS).expect("requirements.txt");
    text.lines()
        .find_map(|l| l.trim().strip_prefix("openai=="))
        .expect("an openai==VERSION line")
        .trim()
        .to_string()
}

/// The `openai` version the interpreter imports, or why it cannot.
fn probe(python: &str) -> Result<String, String> {
    let out = Command::new(python)
        .args(["-c", "import openai, pydantic; print(openai.__version__)"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {python:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{python:?} cannot import openai: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The model's context (`qwen info --json`).
fn max_context() -> u64 {
    let out = Command::new(env!("CARGO_BIN_EXE_qwen"))
        .args(["info", "--json"])
        .output()
        .expect("qwen info runs");
    assert!(out.status.success(), "{out:?}");
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).expect("info is JSON");
    info["max_context"].as_u64().expect("max_context")
}

#[test]
fn openai_python_sdk_against_qwen_serve() {
    let required = std::env::var("QWENC_REQUIRE_OPENAI").is_ok_and(|v| v == "1");
    let python = std::env::var("QWENC_PYTHON").unwrap_or_else(|_| "python3".into());
    let pinned = pinned_version();
    let version = match probe(&python) {
        Ok(v) => v,
        Err(why) if required => panic!("QWENC_REQUIRE_OPENAI=1: {why}"),
        Err(why) => {
            // Straight to stderr: the test harness would hide a println! of a passing test.
            let _ = writeln!(
                std::io::stderr(),
                "openai_sdk: SKIPPED, {why} (scripts/test.sh sets QWENC_PYTHON to a venv with openai=={pinned}; QWENC_REQUIRE_OPENAI=1 makes this a failure)"
            );
            return;
        }
    };
    if version != pinned {
        assert!(
            !required,
            "QWENC_REQUIRE_OPENAI=1: {python} has openai {version}, the pin is {pinned}"
        );
        let _ = writeln!(
            std::io::stderr(),
            "openai_sdk: openai {version} is not the pinned {pinned}; running anyway"
        );
    }
    assert!(Path::new(SCRIPT).is_file(), "{SCRIPT}");

    let context = max_context();
    let max_body = MAX_BODY.to_string();
    let plain = Server::start(&["--max-body-bytes", &max_body]);
    let keyed = Server::start(&["--api-key", API_KEY]);
    let out = Command::new(&python)
        .arg(SCRIPT)
        .arg("-v")
        .env("QWENC_OPENAI_BASE_URL", plain.base_url())
        .env("QWENC_OPENAI_CONTEXT", context.to_string())
        .env("QWENC_OPENAI_MAX_BODY", &max_body)
        .env("QWENC_OPENAI_KEYED_URL", keyed.base_url())
        .env("QWENC_OPENAI_API_KEY", API_KEY)
        // The SDK reads these; none may point it elsewhere.
        .env_remove("OPENAI_BASE_URL")
        .env_remove("OPENAI_API_KEY")
        .env("NO_PROXY", "*")
        .stdin(Stdio::null())
        .output()
        .expect("the script runs");
    let (plain_log, keyed_log) = (plain.stop(), keyed.stop());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}\n{stderr}");
    assert!(
        out.status.success(),
        "openai_sdk.py failed ({}):\n{stdout}\n{stderr}\n--- plain server:\n{plain_log}\n--- keyed server:\n{keyed_log}",
        out.status
    );
    assert!(
        stderr.contains(" 0 failed, 0 skipped") || stdout.contains(" 0 failed, 0 skipped"),
        "every test ran, none skipped:\n{stdout}\n{stderr}"
    );
}
