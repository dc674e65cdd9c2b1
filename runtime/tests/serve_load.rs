//! `qwen serve` under load and faults, on the fake model over loopback: many concurrent
//! streaming clients, clients that disconnect, a full queue, memory that stays flat.
//!
//! `load_external_server` (ignored) is the load test against a real `qwen serve`:
//! `QWEN_SERVE_ADDR=127.0.0.1:PORT cargo test --release -p qwenc-runtime --test serve_load
//! -- --ignored --nocapture` (scripts/load-test.sh does it).

mod common;

use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Hooked;
use qwenc_runtime::generate::{generate, GenerateOptions};
use qwenc_runtime::model::{ForwardError, KvCache, LogitsFor, Model, ModelInfo, Segment};
use qwenc_runtime::serve::client::{self, request_bytes, Streaming};
use qwenc_runtime::serve::{RunningServer, ServeConfig};
use qwenc_runtime::testing::FakeModel;
use qwenc_runtime::tokenizer::Tokenizer;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(60);

/// The fake model with a pause in every forward pass, so requests last long enough to be
/// interrupted.
fn slow(pause: Duration) -> Hooked<impl Fn(usize) + Send + Sync> {
    Hooked {
        inner: FakeModel::new(),
        before: move |_| std::thread::sleep(pause),
    }
}

fn greedy_text(model: &FakeModel, prompt: &str, max_tokens: usize) -> String {
    let ids = model.tokenizer().encode(prompt);
    let mut cache = model.new_cache(ids.len() + max_tokens);
    let mut out = Vec::new();
    let opts = GenerateOptions {
        max_tokens,
        ..GenerateOptions::default()
    };
    generate(model, &mut cache, &ids, &opts, &mut |id| {
        out.push(id);
        ControlFlow::Continue(())
    })
    .unwrap();
    model.tokenizer().decode(&out)
}

/// The text of a streamed completion, or why it failed.
fn stream_text(addr: SocketAddr, body: &Value) -> Result<(String, usize), String> {
    let (status, events) = client::post_stream(addr, "/v1/completions", &body.to_string(), T)
        .map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!("status {status}: {events:?}"));
    }
    if events.last().map(String::as_str) != Some("[DONE]") {
        return Err(format!("no [DONE]: {events:?}"));
    }
    let mut text = String::new();
    let mut chunks = 0;
    for e in &events[..events.len() - 1] {
        let v: Value = serde_json::from_str(e).map_err(|err| format!("{err}: {e}"))?;
        if v.get("error").is_some() {
            return Err(e.clone());
        }
        text += v["choices"][0]["text"].as_str().unwrap_or("");
        chunks += 1;
    }
    Ok((text, chunks))
}

fn health(addr: SocketAddr) -> Value {
    client::get(addr, "/health", T).unwrap().json().unwrap()
}

/// Polls until nothing is in flight (bounded), returning whether it got there.
fn wait_idle(addr: SocketAddr) -> bool {
    for _ in 0..500 {
        if health(addr)["in_flight"] == 0 {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn concurrent_streaming_clients_get_their_own_outputs() {
    let model = Arc::new(FakeModel::new());
    let config = ServeConfig {
        parallel: 8,
        queue_depth: 64,
        ..ServeConfig::default()
    };
    let server = RunningServer::start(model.clone(), config).unwrap();
    let addr = server.addr;
    let (clients, per_client, max_tokens) = (32, 20, 8);
    let handles: Vec<_> = (0..clients)
        .map(|c| {
            let model = model.clone();
            std::thread::spawn(move || {
                let mut errors = Vec::new();
                for r in 0..per_client {
                    // Distinct prompts: a response landing on the wrong request would show.
                    let prompt = format!("client {c} request {r}: the");
                    let expected = greedy_text(&model, &prompt, max_tokens);
                    let body = json!({"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": true});
                    match stream_text(addr, &body) {
                        Ok((text, _)) if text == expected => {}
                        Ok((text, _)) => errors.push(format!("{prompt:?}: got {text:?}, expected {expected:?}")),
                        Err(e) => errors.push(format!("{prompt:?}: {e}")),
                    }
                }
                errors
            })
        })
        .collect();
    let errors: Vec<String> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    assert!(
        errors.is_empty(),
        "{} errors, first: {:?}",
        errors.len(),
        errors.first()
    );
    assert!(wait_idle(addr));
    server.stop().unwrap();
}

/// The fake model, recording the segments of every multi-sequence pass: `(tokens, logits)`
/// per segment, one list per pass.
struct Recording {
    inner: FakeModel,
    passes: Mutex<Vec<Vec<usize>>>,
}

impl Model for Recording {
    fn info(&self) -> &ModelInfo {
        self.inner.info()
    }
    fn tokenizer(&self) -> &Tokenizer {
        self.inner.tokenizer()
    }
    fn new_cache(&self, capacity: usize) -> KvCache {
        self.inner.new_cache(capacity)
    }
    fn forward(
        &self,
        cache: &mut KvCache,
        tokens: &[u32],
        logits: LogitsFor,
    ) -> Result<Vec<f32>, ForwardError> {
        self.passes.lock().unwrap().push(vec![tokens.len()]);
        self.inner.forward(cache, tokens, logits)
    }
    fn forward_segments(
        &self,
        segments: &mut [Segment<'_>],
        logits: &mut [Vec<f32>],
    ) -> Result<(), ForwardError> {
        // A pause per pass, so that the clients' requests overlap.
        std::thread::sleep(Duration::from_millis(3));
        self.passes
            .lock()
            .unwrap()
            .push(segments.iter().map(|s| s.tokens.len()).collect());
        for (s, out) in segments.iter_mut().zip(logits) {
            self.inner
                .forward_into(s.cache, s.tokens, s.logits_for, out)?;
        }
        Ok(())
    }
}

#[test]
fn decoding_streams_share_each_forward_pass() {
    let model = Arc::new(Recording {
        inner: FakeModel::new(),
        passes: Mutex::new(Vec::new()),
    });
    let prefill_chunk = 16;
    // Speculation off: decoding segments are then exactly one token.
    let config = ServeConfig {
        parallel: 8,
        prefill_chunk,
        speculate: false,
        ..ServeConfig::default()
    };
    let server = RunningServer::start(model.clone(), config).unwrap();
    let addr = server.addr;
    let max_tokens = 40;
    // Seven short prompts, and one long enough to be prefilled over several steps while the
    // others decode.
    let prompts: Vec<String> = (0..8)
        .map(|c| match c {
            7 => "the long prompt joins late: ".repeat(6),
            _ => format!("stream {c}: the"),
        })
        .collect();
    let handles: Vec<_> = prompts
        .iter()
        .enumerate()
        .map(|(c, prompt)| {
            let prompt = prompt.clone();
            std::thread::spawn(move || {
                if c == 7 {
                    std::thread::sleep(Duration::from_millis(30));
                }
                let body = json!({"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": true});
                stream_text(addr, &body)
            })
        })
        .collect();
    for (prompt, h) in prompts.iter().zip(handles) {
        let (text, _) = h.join().unwrap().unwrap();
        assert_eq!(
            text,
            greedy_text(&model.inner, prompt, max_tokens),
            "{prompt:?}"
        );
    }
    assert!(wait_idle(addr));
    server.stop().unwrap();

    let passes = model.passes.lock().unwrap().clone();
    let long = model.inner.tokenizer().encode(&prompts[7]).len();
    assert!(
        long > 2 * prefill_chunk,
        "the long prompt has {long} tokens"
    );
    let widest = passes.iter().map(Vec::len).max().unwrap();
    assert!(
        widest >= 6,
        "at most {widest} sequences shared a pass: {passes:?}"
    );
    // Every pass took at most the step's prompt-token budget, plus one token per stream.
    for p in &passes {
        let prompt_tokens: usize = p.iter().filter(|&&n| n > 1).sum();
        assert!(prompt_tokens <= prefill_chunk, "a pass ran {p:?}");
    }
    // The long prompt's chunks ran beside decoding streams, which did not stall.
    let mixed = passes
        .iter()
        .filter(|p| p.contains(&prefill_chunk) && p.iter().filter(|&&n| n == 1).count() >= 3)
        .count();
    assert!(
        mixed >= 2,
        "{mixed} passes mixed a prompt chunk with decoding: {passes:?}"
    );
    // Far fewer passes than tokens: 8 × 40 generated tokens and the prompts.
    assert!(passes.len() < 150, "{} passes", passes.len());
}

#[test]
fn disconnected_clients_free_their_slots() {
    // One slot and no queue: a stuck slot would refuse every later request with 503.
    let model = Arc::new(slow(Duration::from_millis(10)));
    let config = ServeConfig {
        parallel: 1,
        queue_depth: 0,
        ..ServeConfig::default()
    };
    let server = RunningServer::start(model.clone(), config).unwrap();
    let addr = server.addr;
    let long =
        json!({"prompt": "the", "max_tokens": 200, "temperature": 0, "stream": true}).to_string();
    for round in 0..3 {
        // Streamed: read two events, then hang up.
        let mut s = Streaming::open(
            addr,
            &request_bytes("POST", "/v1/completions", Some(long.as_bytes())),
            T,
        )
        .unwrap();
        assert_eq!(s.status, 200);
        assert!(s.next_event().unwrap().is_some());
        assert!(s.next_event().unwrap().is_some());
        drop(s);
        assert!(
            wait_idle(addr),
            "round {round}: the slot of a disconnected stream stays taken"
        );
    }
    // Not streamed: hang up while the answer is computed.
    let calls_before = model.inner.forward_calls();
    let plain = json!({"prompt": "the", "max_tokens": 200, "temperature": 0}).to_string();
    let conn = {
        use std::io::Write;
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        c.write_all(&request_bytes(
            "POST",
            "/v1/completions",
            Some(plain.as_bytes()),
        ))
        .unwrap();
        c
    };
    // Wait until the request runs, then hang up.
    for _ in 0..500 {
        if model.inner.forward_calls() > calls_before + 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(conn);
    assert!(
        wait_idle(addr),
        "the slot of a disconnected plain request stays taken"
    );
    let run = model.inner.forward_calls() - calls_before;
    assert!(
        run < 200,
        "the abandoned request ran to the end ({run} forward passes)"
    );
    // A later request is served in full.
    let (text, _) = stream_text(
        addr,
        &json!({"prompt": "in", "max_tokens": 5, "temperature": 0, "stream": true}),
    )
    .unwrap();
    assert_eq!(text, greedy_text(&model.inner, "in", 5));
    server.stop().unwrap();
}

#[test]
fn full_queue_refuses_with_503_then_recovers() {
    let model = Arc::new(slow(Duration::from_millis(10)));
    let config = ServeConfig {
        parallel: 1,
        queue_depth: 1,
        ..ServeConfig::default()
    };
    let server = RunningServer::start(model, config).unwrap();
    let addr = server.addr;
    let long =
        json!({"prompt": "the", "max_tokens": 200, "temperature": 0, "stream": true}).to_string();
    let raw = request_bytes("POST", "/v1/completions", Some(long.as_bytes()));
    let a = Streaming::open(addr, &raw, T).unwrap();
    let b = Streaming::open(addr, &raw, T).unwrap();
    assert_eq!((a.status, b.status), (200, 200));
    let r = client::post(addr, "/v1/completions", &long, T).unwrap();
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json().unwrap()["error"]["code"], "queue_full");
    drop((a, b));
    assert!(wait_idle(addr));
    let (text, _) = stream_text(
        addr,
        &json!({"prompt": "in", "max_tokens": 3, "temperature": 0, "stream": true}),
    )
    .unwrap();
    assert!(!text.is_empty());
    server.stop().unwrap();
}

fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn memory_stays_bounded_over_many_requests() {
    let Some(_) = rss_kib() else {
        eprintln!("skipped: no /proc/self/status on this system");
        return;
    };
    let model = Arc::new(FakeModel::new());
    let server = RunningServer::start(model, ServeConfig::default()).unwrap();
    let addr = server.addr;
    let batch = |n: usize| {
        for i in 0..n {
            let body = json!({"prompt": format!("request {i}"), "max_tokens": 32, "temperature": 0,
                              "stream": i % 2 == 0, "logprobs": 3, "echo": true});
            let r = client::post(addr, "/v1/completions", &body.to_string(), T).unwrap();
            assert_eq!(r.status, 200);
        }
    };
    batch(300);
    let after_first = rss_kib().unwrap();
    batch(600);
    let after_second = rss_kib().unwrap();
    let growth = after_second.saturating_sub(after_first);
    eprintln!("RSS after 300 requests {after_first} KiB, after 600 more {after_second} KiB");
    assert!(
        growth < 8 * 1024,
        "RSS grew by {growth} KiB over 600 requests"
    );
    assert!(wait_idle(addr));
    server.stop().unwrap();
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// The load test on a real server: 32 clients × 20 streamed greedy requests over 8 prompts.
/// Each prompt's answer is first fetched alone; every concurrent answer must equal it.
#[test]
#[ignore = "needs a running `qwen serve`: QWEN_SERVE_ADDR=127.0.0.1:PORT (scripts/load-test.sh)"]
fn load_external_server() {
    let addr: SocketAddr = std::env::var("QWEN_SERVE_ADDR")
        .expect("QWEN_SERVE_ADDR=host:port")
        .parse()
        .expect("QWEN_SERVE_ADDR=host:port");
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let clients = env("LOAD_CLIENTS", 32);
    let per_client = env("LOAD_REQUESTS", 20);
    let max_tokens = env("LOAD_MAX_TOKENS", 8);
    let topics = [
        "a prime sieve",
        "binary search",
        "quicksort",
        "a linked list",
        "Fibonacci numbers",
        "matrix multiplication",
        "a hash map",
        "string reversal",
    ];
    let prompts: Vec<String> = topics
        .iter()
        .map(|t| format!("# Python: {t}\ndef"))
        .collect();
    let body =
        |p: &str| json!({"prompt": p, "max_tokens": max_tokens, "temperature": 0, "stream": true});
    let reference: Vec<String> = prompts
        .iter()
        .map(|p| stream_text(addr, &body(p)).expect("reference request").0)
        .collect();
    let start = Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|c| {
            let prompts = prompts.clone();
            let reference = reference.clone();
            std::thread::spawn(move || {
                let mut lat = Vec::new();
                let mut errors = Vec::new();
                let mut mixed = 0;
                let mut tokens = 0;
                for r in 0..per_client {
                    let k = (c * 7 + r) % prompts.len();
                    let t = Instant::now();
                    match stream_text(addr, &json!({"prompt": prompts[k], "max_tokens": max_tokens, "temperature": 0, "stream": true})) {
                        Ok((text, chunks)) => {
                            lat.push(t.elapsed().as_secs_f64());
                            tokens += chunks;
                            if text != reference[k] {
                                mixed += 1;
                            }
                        }
                        Err(e) => errors.push(e),
                    }
                }
                (lat, errors, mixed, tokens)
            })
        })
        .collect();
    let mut lat = Vec::new();
    let mut errors = Vec::new();
    let (mut mixed, mut chunks) = (0, 0);
    for h in handles {
        let (l, e, m, t) = h.join().unwrap();
        lat.extend(l);
        errors.extend(e);
        mixed += m;
        chunks += t;
    }
    let wall = start.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    let n = clients * per_client;
    println!(
        "load: {clients} clients x {per_client} requests = {n}, max_tokens {max_tokens}: {} errors, {mixed} mixed-up, \
         latency p50 {:.2} s p99 {:.2} s max {:.2} s, {:.1} requests/s, {:.1} streamed chunks (tokens)/s, wall {:.1} s",
        errors.len(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat.last().copied().unwrap_or(0.0),
        n as f64 / wall,
        chunks as f64 / wall,
        wall
    );
    assert!(errors.is_empty(), "first error: {:?}", errors.first());
    assert_eq!(mixed, 0);
}
