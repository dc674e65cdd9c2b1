//! `qwen serve` in operation, on the fake model over loopback: `/metrics`, the API key, the
//! drain on shutdown, and the timeouts for slow or idle clients.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::ops::ControlFlow;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use qwenc_runtime::cli::{Cli, Command};
use qwenc_runtime::generate::{generate, GenerateOptions};
use qwenc_runtime::model::{ForwardError, KvCache, LogitsFor, Model, ModelInfo, Segment};
use qwenc_runtime::serve::client::{self, request_bytes, send_raw, Streaming};
use qwenc_runtime::serve::{ApiKey, RunningServer, ServeConfig};
use qwenc_runtime::testing::FakeModel;
use qwenc_runtime::tokenizer::Tokenizer;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(30);

/// The fake model with a pause in every step (one multi-sequence pass), so that requests last
/// long enough to be in flight when something happens.
struct Paced {
    inner: FakeModel,
    pause: Duration,
}

impl Model for Paced {
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
        std::thread::sleep(self.pause);
        self.inner.forward(cache, tokens, logits)
    }
    fn forward_segments(
        &self,
        segments: &mut [Segment<'_>],
        logits: &mut [Vec<f32>],
    ) -> Result<(), ForwardError> {
        std::thread::sleep(self.pause);
        for (s, out) in segments.iter_mut().zip(logits) {
            self.inner
                .forward_into(s.cache, s.tokens, s.logits_for, out)?;
        }
        Ok(())
    }
}

/// Without an eos, every request runs to its `max_tokens`: the timings below hold.
fn paced(ms: u64) -> Arc<Paced> {
    Arc::new(Paced {
        inner: FakeModel::new().with_eos_ids(Vec::new()),
        pause: Duration::from_millis(ms),
    })
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

/// A request with extra header lines (each ending in `\r\n`).
fn request_with(method: &str, path: &str, extra: &str, body: Option<&str>) -> Vec<u8> {
    let raw = request_bytes(method, path, body.map(str::as_bytes));
    let head_end = raw.windows(2).position(|w| w == b"\r\n").unwrap() + 2;
    let mut out = raw[..head_end].to_vec();
    out.extend_from_slice(extra.as_bytes());
    out.extend_from_slice(&raw[head_end..]);
    out
}

fn assert_error(r: &client::Response, status: u16, code: &str) -> Value {
    assert_eq!(r.status, status, "{}", r.text());
    let v = r.json().unwrap();
    assert_eq!(v["error"]["code"], code, "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
    assert!(v["error"]["type"].is_string());
    assert!(v["error"].get("param").is_some_and(Value::is_null), "{v}");
    v
}

/// The value of the sample `series` (a name with its labels, as written) in `text`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn metrics(addr: SocketAddr) -> String {
    let r = client::get(addr, "/metrics", T).unwrap();
    assert_eq!(r.status, 200);
    r.text()
}

/// The events of a streamed completion, `[DONE]` included.
fn stream(addr: SocketAddr, body: &Value) -> (u16, Vec<String>) {
    client::post_stream(addr, "/v1/completions", &body.to_string(), T).unwrap()
}

/// The text of a complete stream (`[DONE]` last, no error frame).
fn stream_text(events: &[String]) -> Result<String, String> {
    if events.last().map(String::as_str) != Some("[DONE]") {
        return Err(format!("no [DONE]: {events:?}"));
    }
    let mut text = String::new();
    for e in &events[..events.len() - 1] {
        let v: Value = serde_json::from_str(e).map_err(|err| format!("{err}: {e}"))?;
        if v.get("error").is_some() {
            return Err(e.clone());
        }
        text += v["choices"][0]["text"].as_str().unwrap_or("");
    }
    Ok(text)
}

#[test]
fn metrics_count_requests_tokens_and_latencies() {
    let model = paced(0);
    let server = RunningServer::start(model.clone(), ServeConfig::default()).unwrap();
    let addr = server.addr;
    let mut prompt_tokens = 0;
    let mut completion_tokens = 0;
    for prompt in ["one", "two three"] {
        let body = json!({"prompt": prompt, "max_tokens": 5, "temperature": 0});
        let r = client::post(addr, "/v1/completions", &body.to_string(), T).unwrap();
        assert_eq!(r.status, 200);
        let v = r.json().unwrap();
        prompt_tokens += v["usage"]["prompt_tokens"].as_u64().unwrap();
        completion_tokens += v["usage"]["completion_tokens"].as_u64().unwrap();
    }
    let (status, events) = stream(
        addr,
        &json!({"prompt": "four", "max_tokens": 4, "stream": true, "stream_options": {"include_usage": true}}),
    );
    assert_eq!(status, 200);
    let usage: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    prompt_tokens += usage["usage"]["prompt_tokens"].as_u64().unwrap();
    completion_tokens += usage["usage"]["completion_tokens"].as_u64().unwrap();
    assert_eq!(client::get(addr, "/nope", T).unwrap().status, 404);
    assert_eq!(client::get(addr, "/v1/completions", T).unwrap().status, 405);

    let r = client::get(addr, "/metrics", T).unwrap();
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = r.text();
    // Every sample line is `name{labels} number`, and every name has HELP and TYPE.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').unwrap();
        assert!(value.parse::<f64>().is_ok(), "{line}");
        let name = series.split('{').next().unwrap();
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .filter(|b| text.contains(&format!("# TYPE {b} histogram")))
            .unwrap_or(name);
        assert!(text.contains(&format!("# HELP {base} ")), "{line}");
        assert!(text.contains(&format!("# TYPE {base} ")), "{line}");
    }
    let get = |s: &str| sample(&text, s).unwrap_or_else(|| panic!("no {s} in\n{text}"));
    assert_eq!(
        get("qwen_requests_total{route=\"/v1/completions\",status=\"200\"}"),
        3.0
    );
    assert_eq!(
        get("qwen_requests_total{route=\"other\",status=\"404\"}"),
        1.0
    );
    assert_eq!(
        get("qwen_requests_total{route=\"/v1/completions\",status=\"405\"}"),
        1.0
    );
    assert_eq!(get("qwen_prompt_tokens_total"), prompt_tokens as f64);
    assert_eq!(get("qwen_generated_tokens_total"), completion_tokens as f64);
    // One first token per request; every other token is one gap.
    assert_eq!(get("qwen_time_to_first_token_seconds_count"), 3.0);
    assert_eq!(
        get("qwen_time_to_first_token_seconds_bucket{le=\"+Inf\"}"),
        3.0
    );
    assert!(get("qwen_time_to_first_token_seconds_sum") > 0.0);
    assert_eq!(
        get("qwen_token_latency_seconds_count"),
        (completion_tokens - 3) as f64
    );
    // The three prompts share no first token: no hit, but their caches are kept.
    assert_eq!(get("qwen_prefix_cache_hits_total"), 0.0);
    assert!(get("qwen_prefix_cache_bytes") > 0.0);
    assert_eq!(get("qwen_active_sequences"), 0.0);
    assert_eq!(get("qwen_queue_depth"), 0.0);
    // This scrape is counted by the next one.
    assert_eq!(
        sample(
            &metrics(addr),
            "qwen_requests_total{route=\"/metrics\",status=\"200\"}"
        ),
        Some(1.0)
    );
    server.stop().unwrap();
}

/// With one slot and slow steps, three requests show as one active sequence and two queued.
#[test]
fn metrics_show_the_queue_and_the_active_sequences() {
    let model = paced(20);
    let config = ServeConfig {
        parallel: 1,
        ..ServeConfig::default()
    };
    let server = RunningServer::start(model, config).unwrap();
    let addr = server.addr;
    let clients: Vec<_> = (0..3)
        .map(|i| {
            std::thread::spawn(move || {
                let body = json!({"prompt": format!("q{i}"), "max_tokens": 20, "stream": true});
                stream(addr, &body)
            })
        })
        .collect();
    let mut seen = false;
    for _ in 0..200 {
        let text = metrics(addr);
        if sample(&text, "qwen_active_sequences") == Some(1.0)
            && sample(&text, "qwen_queue_depth") == Some(2.0)
        {
            seen = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(seen, "never saw 1 active and 2 queued");
    for c in clients {
        let (status, events) = c.join().unwrap();
        assert_eq!(status, 200);
        stream_text(&events).unwrap();
    }
    server.stop().unwrap();
}

#[test]
fn the_api_key_guards_every_route_but_health() {
    let config = ServeConfig {
        api_key: Some(ApiKey::new("sk-test-123").unwrap()),
        ..ServeConfig::default()
    };
    let server = RunningServer::start(Arc::new(FakeModel::new()), config).unwrap();
    let addr = server.addr;
    let body = json!({"prompt": "hi", "max_tokens": 2}).to_string();
    let send = |method: &str, path: &str, auth: Option<&str>, body: Option<&str>| {
        let extra = auth.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
        send_raw(addr, &request_with(method, path, &extra, body), T).unwrap()
    };
    for (method, path, b) in [
        ("GET", "/v1/models", None),
        ("GET", "/metrics", None),
        ("POST", "/v1/completions", Some(body.as_str())),
        ("POST", "/v1/chat/completions", Some("{}")),
        // An unknown route does not reveal itself without the key.
        ("GET", "/nope", None),
    ] {
        for auth in [
            None,
            Some("Bearer sk-test-124"),
            Some("Bearer sk-test-12"),
            Some("Basic sk-test-123"),
        ] {
            let r = send(method, path, auth, b);
            let v = assert_error(&r, 401, "invalid_api_key");
            assert_eq!(v["error"]["type"], "invalid_request_error");
            assert_eq!(r.header("www-authenticate"), Some("Bearer"), "{path}");
        }
    }
    assert_eq!(send("GET", "/health", None, None).status, 200);
    let ok = Some("Bearer sk-test-123");
    assert_eq!(send("GET", "/v1/models", ok, None).status, 200);
    assert_eq!(send("GET", "/metrics", ok, None).status, 200);
    assert_eq!(send("GET", "/nope", ok, None).status, 404);
    let r = send("POST", "/v1/completions", ok, Some(&body));
    assert_eq!(r.status, 200, "{}", r.text());
    let text = send("GET", "/metrics", Some("bearer sk-test-123"), None).text();
    assert_eq!(
        sample(
            &text,
            "qwen_requests_total{route=\"/v1/models\",status=\"401\"}"
        ),
        Some(4.0)
    );
    server.stop().unwrap();
}

fn serve_args(args: &[&str]) -> Result<qwenc_runtime::cli::ServeArgs, String> {
    use clap::Parser;
    let argv = ["qwen", "serve"].iter().chain(args);
    match Cli::try_parse_from(argv)
        .map_err(|e| e.to_string())?
        .command
    {
        Command::Serve(a) => Ok(a),
        _ => unreachable!(),
    }
}

/// `--api-key` and `QWEN_API_KEY` (the flag wins), and the timeout flags. One test, since
/// it sets the process's environment.
#[test]
fn api_key_and_timeout_flags() {
    let key = |a: &qwenc_runtime::cli::ServeArgs| a.api_key.is_some();
    std::env::remove_var("QWEN_API_KEY");
    let a = serve_args(&[]).unwrap();
    assert!(!key(&a));
    assert_eq!(
        (
            a.drain_seconds,
            a.header_timeout_seconds,
            a.body_timeout_seconds,
            a.keep_alive_seconds
        ),
        (30, 10, 30, 5)
    );
    assert!(key(&serve_args(&["--api-key", "k1"]).unwrap()));
    for bad in ["", "two words"] {
        let e = serve_args(&["--api-key", bad]).unwrap_err();
        assert!(e.contains("--api-key"), "{e}");
    }
    for flag in [
        "--header-timeout-seconds",
        "--body-timeout-seconds",
        "--keep-alive-seconds",
    ] {
        assert!(serve_args(&[flag, "0"]).is_err(), "{flag} 0");
        assert!(serve_args(&[flag, "x"]).is_err(), "{flag} x");
    }
    assert_eq!(
        serve_args(&["--drain-seconds", "0"]).unwrap().drain_seconds,
        0
    );

    // The key itself is checked through a server, so the flag's winning is observable.
    let check = |args: &[&str], good: &str| {
        let a = serve_args(args).unwrap();
        let config = ServeConfig {
            api_key: a.api_key.clone(),
            ..ServeConfig::default()
        };
        let server = RunningServer::start(Arc::new(FakeModel::new()), config).unwrap();
        let get = |k: &str| {
            let extra = format!("Authorization: Bearer {k}\r\n");
            send_raw(
                server.addr,
                &request_with("GET", "/v1/models", &extra, None),
                T,
            )
            .unwrap()
            .status
        };
        assert_eq!(get(good), 200);
        assert_eq!(get("other"), 401);
        server.stop().unwrap();
    };
    // Set but empty: refused, not taken as "no key" (a missing Secret must not open the server).
    std::env::set_var("QWEN_API_KEY", "");
    let e = serve_args(&[]).unwrap_err();
    assert!(e.contains("QWEN_API_KEY") && e.contains("empty"), "{e}");
    std::env::set_var("QWEN_API_KEY", "from-env");
    check(&[], "from-env");
    check(&["--api-key", "from-flag"], "from-flag");
    std::env::remove_var("QWEN_API_KEY");
}

/// Ten streams in flight when the drain starts: all finish, complete; a request that arrives
/// meanwhile gets 503 `shutting_down`; the server then returns Ok.
#[test]
fn drain_finishes_running_streams_and_refuses_new_requests() {
    // 80 steps of 10 ms: every stream is still running when the last one has begun.
    let model = paced(10);
    let config = ServeConfig {
        parallel: 10,
        ..ServeConfig::default()
    };
    let server = RunningServer::start(model.clone(), config).unwrap();
    let addr = server.addr;
    let max_tokens = 80;
    let (started_tx, started_rx) = mpsc::channel();
    let clients: Vec<_> = (0..10)
        .map(|i| {
            let started = started_tx.clone();
            std::thread::spawn(move || {
                let prompt = format!("stream {i}: the");
                let body = json!({"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": true});
                let raw = request_bytes("POST", "/v1/completions", Some(body.to_string().as_bytes()));
                let mut s = Streaming::open(addr, &raw, T).unwrap();
                assert_eq!(s.status, 200);
                let mut events = vec![s.next_event().unwrap().expect("a first event")];
                started.send(()).unwrap();
                while let Some(e) = s.next_event().unwrap() {
                    events.push(e);
                }
                (prompt, events, Instant::now())
            })
        })
        .collect();
    for _ in 0..10 {
        started_rx.recv_timeout(T).unwrap();
    }
    let drain_started = Instant::now();
    server.shutdown().trigger();
    // A new connection, a new request on it: 503, and the connection is closed after it.
    for path in ["/v1/models", "/health"] {
        let r = client::get(addr, path, T).unwrap();
        assert_error(&r, 503, "shutting_down");
        assert_eq!(r.header("connection"), Some("close"));
    }
    let body = json!({"prompt": "late", "max_tokens": 2}).to_string();
    let r = client::post(addr, "/v1/completions", &body, T).unwrap();
    assert_error(&r, 503, "shutting_down");
    for c in clients {
        let (prompt, events, finished) = c.join().unwrap();
        let text = stream_text(&events).unwrap_or_else(|e| panic!("{prompt}: {e}"));
        assert_eq!(
            text,
            greedy_text(&model.inner, &prompt, max_tokens),
            "{prompt}"
        );
        assert!(finished > drain_started);
    }
    server.stop().unwrap();
}

/// One stream that would run for ten seconds, cut by the drain's deadline or by a forced
/// stop; how long the server took to stop once the drain began.
fn cut_stream(drain: Duration, force: bool) -> Duration {
    let config = ServeConfig {
        drain,
        ..ServeConfig::default()
    };
    let server = RunningServer::start(paced(50), config).unwrap();
    let addr = server.addr;
    let client = std::thread::spawn(move || {
        // 200 steps of 50 ms: ten seconds (the fake model's context is 256).
        let body = json!({"prompt": "long", "max_tokens": 200, "stream": true});
        client::post_stream(addr, "/v1/completions", &body.to_string(), T)
    });
    let begun = (0..500).any(|_| {
        std::thread::sleep(Duration::from_millis(10));
        sample(&metrics(addr), "qwen_generated_tokens_total").is_some_and(|n| n > 0.0)
    });
    assert!(begun, "the stream never began");
    let t = Instant::now();
    let handle = server.shutdown();
    handle.trigger();
    if force {
        std::thread::sleep(Duration::from_millis(200));
        handle.force();
    }
    server.stop().unwrap();
    let took = t.elapsed();
    // The client sees a cut stream (no [DONE]) or a reset connection, never a hang.
    if let Ok((_, events)) = client.join().unwrap() {
        assert_ne!(events.last().map(String::as_str), Some("[DONE]"));
    }
    took
}

#[test]
fn drain_ends_at_its_deadline() {
    let took = cut_stream(Duration::from_secs(1), false);
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

#[test]
fn a_forced_stop_ends_the_drain_at_once() {
    let took = cut_stream(Duration::from_secs(120), true);
    assert!(took < Duration::from_secs(5), "{took:?}");
}

/// How long after `start` the server closed `s` (a read returns end of file or an error),
/// reading for at most `limit`; `None` if it is still open then. Whatever the server sent
/// before closing is returned.
fn closed_after(s: &mut TcpStream, start: Instant, limit: Duration) -> (Option<Duration>, String) {
    use std::io::ErrorKind::{TimedOut, WouldBlock};
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let text = |got: &[u8]| String::from_utf8_lossy(got).into_owned();
    while start.elapsed() < limit {
        match s.read(&mut buf) {
            Ok(0) => return (Some(start.elapsed()), text(&got)),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), WouldBlock | TimedOut) => {}
            Err(_) => return (Some(start.elapsed()), text(&got)),
        }
    }
    (None, text(&got))
}

/// A client sending its headers one byte a second is dropped at the header timeout, while
/// another client is served meanwhile.
#[test]
fn a_slowloris_client_is_dropped_at_the_header_timeout() {
    let config = ServeConfig {
        header_timeout: Duration::from_secs(1),
        ..ServeConfig::default()
    };
    let server = RunningServer::start(Arc::new(FakeModel::new()), config).unwrap();
    let addr = server.addr;
    let (closed_tx, closed_rx) = mpsc::channel();
    let slow = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        let start = Instant::now();
        s.set_read_timeout(Some(Duration::from_millis(1000)))
            .unwrap();
        let head = b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Slow: aaaaaaaaaaaa\r\n\r\n";
        let mut buf = [0u8; 1024];
        for &b in head.iter().take(10) {
            if s.write_all(&[b]).is_err() {
                break;
            }
            // The read doubles as the second's pause, and notices the close.
            match s.read(&mut buf) {
                Ok(_) => break,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => break,
            }
        }
        let took = start.elapsed();
        closed_tx.send(took).unwrap();
        took
    });
    std::thread::sleep(Duration::from_millis(300));
    let body = json!({"prompt": "meanwhile", "max_tokens": 4}).to_string();
    let r = client::post(addr, "/v1/completions", &body, T).unwrap();
    assert_eq!(r.status, 200);
    assert!(
        closed_rx.try_recv().is_err(),
        "the slow client was dropped before the other was served"
    );
    let took = slow.join().unwrap();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(3500),
        "dropped after {took:?}"
    );
    server.stop().unwrap();
}

/// Reads one response with a Content-Length body from a kept-alive connection.
fn read_response(reader: &mut BufReader<TcpStream>) -> (u16, String) {
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let status = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut len = 0;
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        if line.trim_end().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap();
            }
        }
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body).unwrap();
    (status, String::from_utf8(body).unwrap())
}

/// A kept-alive connection serves a second request within the keep-alive time, then closes
/// once idle for it (well before the header timeout).
#[test]
fn an_idle_kept_alive_connection_is_closed() {
    let config = ServeConfig {
        keep_alive: Duration::from_secs(1),
        header_timeout: Duration::from_secs(10),
        ..ServeConfig::default()
    };
    let server = RunningServer::start(Arc::new(FakeModel::new()), config).unwrap();
    let s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut reader = BufReader::new(s);
    let req = b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n";
    w.write_all(req).unwrap();
    assert_eq!(read_response(&mut reader).0, 200);
    std::thread::sleep(Duration::from_millis(400));
    w.write_all(req).unwrap();
    assert_eq!(read_response(&mut reader).0, 200);
    let start = Instant::now();
    let (closed, rest) = closed_after(reader.get_mut(), start, Duration::from_secs(5));
    let closed = closed.expect("the idle connection stays open");
    assert!(
        closed >= Duration::from_millis(900) && closed < Duration::from_secs(4),
        "closed after {closed:?}"
    );
    assert!(rest.is_empty(), "{rest}");
    server.stop().unwrap();
}

/// A request that runs longer than the keep-alive and header timeouts, with nothing on the
/// wire meanwhile, is not cut: only idle connections are.
#[test]
fn a_long_request_outlives_the_connection_timeouts() {
    let config = ServeConfig {
        keep_alive: Duration::from_secs(1),
        header_timeout: Duration::from_secs(1),
        ..ServeConfig::default()
    };
    let server = RunningServer::start(paced(60), config).unwrap();
    let body = json!({"prompt": "slow", "max_tokens": 40}).to_string();
    let start = Instant::now();
    let r = client::post(server.addr, "/v1/completions", &body, T).unwrap();
    assert!(start.elapsed() > Duration::from_millis(1500));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json().unwrap()["usage"]["completion_tokens"], 40);
    server.stop().unwrap();
}

/// A body that stops arriving gets 408 `body_timeout`.
#[test]
fn a_stalled_body_gets_408() {
    let config = ServeConfig {
        body_timeout: Duration::from_secs(1),
        ..ServeConfig::default()
    };
    let server = RunningServer::start(Arc::new(FakeModel::new()), config).unwrap();
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.write_all(
        b"POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"prompt\":",
    )
    .unwrap();
    let start = Instant::now();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut reader = BufReader::new(s);
    let (status, body) = read_response(&mut reader);
    let took = start.elapsed();
    assert_eq!(status, 408, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["code"], "body_timeout");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "{took:?}"
    );
    server.stop().unwrap();
}

#[test]
fn zero_timeouts_are_refused() {
    let config = ServeConfig {
        header_timeout: Duration::ZERO,
        ..ServeConfig::default()
    };
    let server = RunningServer::start(Arc::new(FakeModel::new()), config).unwrap();
    let e = server.stop().unwrap_err();
    assert!(e.to_string().contains("timeouts"), "{e}");
}
