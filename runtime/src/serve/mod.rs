//! `qwen serve`: an OpenAI-compatible HTTP server over one compiled model.
//!
//! - [`http`]: the routes (`/v1/completions`, `/v1/chat/completions`, `/v1/models`,
//!   `/health`, `/metrics`), body limits, JSON errors for unknown routes and wrong methods.
//! - [`page`]: the chat page at `GET /` (static HTML, script and stylesheet, embedded).
//! - [`listen`]: the accept loop: the API key, the drain, connection timeouts.
//! - [`metrics`]: what `/metrics` reports, shared with the worker.
//! - [`request`]: request parsing and validation, pure functions (fuzzed); [`fields`]: what
//!   is done with each of OpenAI's request fields.
//! - [`worker`]: the thread that owns the model, the queue and the KV caches;
//!   [`prefix_cache`]: the KV prefixes kept for later requests.
//! - [`choice`], [`output`]: tokens to text, stop strings, logprobs.
//! - [`sse`]: streamed responses. [`error`]: OpenAI's error shape.
//! - [`client`]: a tiny blocking HTTP/1.1 client for tests and the load test.
//!
//! Threads: the caller's thread runs the model worker (it borrows the model); one more
//! thread runs the HTTP side on a single-threaded tokio runtime, so the kernels keep the
//! cores. The HTTP side holds its own copy of the tokenizer to tokenize and validate
//! requests before they queue. The CLI adds a thread that waits for SIGTERM / SIGINT
//! ([`listen::drain_on_signals`]) and starts the drain.

pub mod choice;
pub mod client;
pub mod error;
pub mod fields;
pub mod http;
pub mod listen;
pub mod metrics;
pub mod output;
pub mod page;
pub mod prefix_cache;
pub mod request;
pub mod sse;
pub mod worker;

use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::Arc;
use std::time::Duration;

pub use listen::ApiKey;
use metrics::Metrics;

use crate::model::{Model, ModelInfo};
use crate::structured::{GrammarError, Grammars};
use crate::tokenizer::Tokenizer;

/// The prefix cache's default size: ~10,000 positions of Qwen2.5-0.5B's f32 KV cache
/// (24.6 kB each), a long chat or a few hundred lm-eval questions.
pub const DEFAULT_PREFIX_CACHE_MB: usize = 256;

/// Server limits.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// Requests larger than this get 413.
    pub max_body_bytes: usize,
    /// Sequences the worker steps together (each holds a KV cache).
    pub parallel: usize,
    /// Sequences that may wait beyond the `parallel` running ones; more get 503.
    pub queue_depth: usize,
    /// Prompt tokens per prefill step.
    pub prefill_chunk: usize,
    /// MB (10^6 bytes) of KV cache kept for prefix reuse; 0 turns reuse off.
    pub prefix_cache_mb: usize,
    /// Speculative decoding by prompt lookup in every sequence (greedy output unchanged).
    pub speculate: bool,
    /// Every route but `/health` and the chat page requires `Authorization: Bearer KEY`.
    pub api_key: Option<ApiKey>,
    /// How long running requests may go on once the drain starts.
    pub drain: Duration,
    /// From waiting for a request to having its headers; then the connection is dropped.
    pub header_timeout: Duration,
    /// To read a request's body; then 408.
    pub body_timeout: Duration,
    /// An idle connection (no request, no byte) is closed after this.
    pub keep_alive: Duration,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            max_body_bytes: 1 << 20,
            parallel: 4,
            queue_depth: 64,
            prefill_chunk: 512,
            prefix_cache_mb: DEFAULT_PREFIX_CACHE_MB,
            speculate: true,
            api_key: None,
            drain: Duration::from_secs(30),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            keep_alive: Duration::from_secs(5),
        }
    }
}

/// What the HTTP handlers share.
pub struct AppState {
    pub tokenizer: Tokenizer,
    pub info: ModelInfo,
    jobs: std::sync::mpsc::Sender<worker::Job>,
    pub in_flight: Arc<AtomicUsize>,
    /// `parallel + queue_depth`.
    pub capacity: usize,
    pub max_body_bytes: usize,
    pub created: u64,
    next_id: AtomicU64,
    pub metrics: Arc<Metrics>,
    pub body_timeout: Duration,
    /// Built on the first request that needs one (a trie of the whole vocabulary).
    grammars: std::sync::OnceLock<Result<Grammars, GrammarError>>,
}

impl AppState {
    /// The constraint builder of this model's vocabulary; chat answers end at `<|im_end|>`.
    pub fn grammars(&self) -> Result<&Grammars, &GrammarError> {
        self.grammars
            .get_or_init(|| {
                let eos = self
                    .tokenizer
                    .token_to_id(crate::chat::IM_END)
                    .or(self.info.eos_token_ids.first().copied())
                    .unwrap_or(0);
                Grammars::new(&self.tokenizer, self.info.vocab_size, eos)
            })
            .as_ref()
    }
}

/// Stops a running server: [`Shutdown::trigger`] starts the drain (new requests get 503,
/// running ones finish within [`ServeConfig::drain`]); [`Shutdown::force`] ends it at once.
#[derive(Clone)]
pub struct Shutdown(tokio::sync::watch::Sender<u8>);

impl Shutdown {
    const DRAIN: u8 = 1;
    const NOW: u8 = 2;

    pub fn new() -> Self {
        Shutdown(tokio::sync::watch::channel(0).0)
    }

    /// Starts the drain.
    pub fn trigger(&self) {
        self.0.send_if_modified(|level| {
            let was = *level;
            *level = was.max(Self::DRAIN);
            *level != was
        });
    }

    /// Ends the drain now: requests still running are cut.
    pub fn force(&self) {
        self.0.send_replace(Self::NOW);
    }

    fn subscribe(&self) -> tokio::sync::watch::Receiver<u8> {
        self.0.subscribe()
    }
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("invalid setting: {0}")]
    Config(String),
}

/// Serves `model` on `listener` until `shutdown` is triggered and the drain is over (the CLI
/// triggers it on SIGTERM or SIGINT). The calling thread runs the model worker.
pub fn serve(
    model: &dyn Model,
    config: &ServeConfig,
    listener: std::net::TcpListener,
    shutdown: Shutdown,
) -> Result<(), ServeError> {
    if config.parallel == 0 || config.prefill_chunk == 0 || config.max_body_bytes == 0 {
        return Err(ServeError::Config(
            "parallel, prefill_chunk and max_body_bytes must be at least 1".into(),
        ));
    }
    if [
        config.header_timeout,
        config.body_timeout,
        config.keep_alive,
    ]
    .contains(&Duration::ZERO)
    {
        return Err(ServeError::Config(
            "the header, body and keep-alive timeouts must be above 0".into(),
        ));
    }
    let metrics = Arc::new(Metrics::default());
    let (tx, rx) = std::sync::mpsc::channel();
    let state = Arc::new(AppState {
        tokenizer: model.tokenizer().clone(),
        info: model.info().clone(),
        jobs: tx,
        in_flight: Arc::new(AtomicUsize::new(0)),
        capacity: config.parallel.saturating_add(config.queue_depth),
        max_body_bytes: config.max_body_bytes,
        created: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        next_id: AtomicU64::new(1),
        grammars: std::sync::OnceLock::new(),
        metrics: metrics.clone(),
        body_timeout: config.body_timeout,
    });
    let gate = Arc::new(listen::Gate::new(metrics.clone(), config.api_key.clone()));
    let timeouts = listen::Timeouts {
        header: config.header_timeout,
        keep_alive: config.keep_alive,
        drain: config.drain,
    };
    listener.set_nonblocking(true)?;
    let worker_config = worker::WorkerConfig {
        parallel: config.parallel,
        prefill_chunk: config.prefill_chunk,
        prefix_cache_bytes: config.prefix_cache_mb.saturating_mul(1_000_000),
        speculate: config.speculate,
        metrics,
    };
    std::thread::scope(|s| {
        let http = std::thread::Builder::new()
            .name("qwen-http".into())
            .spawn_scoped(s, move || -> std::io::Result<()> {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_io()
                    .enable_time()
                    .build()?;
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)?;
                    listen::run(listener, http::router(state), gate, timeouts, shutdown).await
                })
                // `state` (and with it the job sender) is dropped here: the worker ends.
            })?;
        worker::run(model, rx, &worker_config);
        match http.join() {
            Ok(r) => r.map_err(ServeError::from),
            Err(_) => Err(ServeError::Io(std::io::Error::other(
                "the HTTP thread panicked",
            ))),
        }
    })
}

/// A server on its own thread over a shared model (tests, fuzzing, load tests).
pub struct RunningServer {
    pub addr: std::net::SocketAddr,
    shutdown: Shutdown,
    thread: Option<std::thread::JoinHandle<Result<(), ServeError>>>,
}

impl RunningServer {
    /// Binds `127.0.0.1:0` and serves `model` there.
    pub fn start(
        model: Arc<dyn Model + Send + Sync>,
        config: ServeConfig,
    ) -> Result<Self, ServeError> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let shutdown = Shutdown::new();
        let s = shutdown.clone();
        let thread = std::thread::Builder::new()
            .name("qwen-serve".into())
            .spawn(move || serve(&*model, &config, listener, s))?;
        Ok(RunningServer {
            addr,
            shutdown,
            thread: Some(thread),
        })
    }

    /// A handle that starts (or cuts short) the drain, as SIGTERM does to the CLI.
    pub fn shutdown(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// Starts the drain (if it has not begun) and waits until the server has stopped.
    pub fn stop(mut self) -> Result<(), ServeError> {
        self.shutdown.trigger();
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(ServeError::Io(std::io::Error::other(
                "the server thread panicked",
            ))),
            None => Ok(()),
        }
    }
}

impl Drop for RunningServer {
    /// Nobody waits for a dropped server: it stops at once.
    fn drop(&mut self) {
        self.shutdown.force();
    }
}
