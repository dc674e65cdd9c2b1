//! `qwen serve`: an OpenAI-compatible HTTP server over one compiled model.
//!
//! - [`http`]: the routes (`/v1/completions`, `/v1/chat/completions`, `/v1/models`,
//!   `/health`), body limits, JSON errors for unknown routes and wrong methods.
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
//! requests before they queue.

pub mod choice;
pub mod client;
pub mod error;
pub mod fields;
pub mod http;
pub mod output;
pub mod prefix_cache;
pub mod request;
pub mod sse;
pub mod worker;

use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::Arc;

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

/// Stops a running server (its listener closes; requests in progress finish).
#[derive(Clone)]
pub struct Shutdown(tokio::sync::watch::Sender<bool>);

impl Shutdown {
    pub fn new() -> Self {
        Shutdown(tokio::sync::watch::channel(false).0)
    }

    pub fn trigger(&self) {
        self.0.send_replace(true);
    }

    async fn wait(self) {
        let mut rx = self.0.subscribe();
        let _ = rx.wait_for(|&stop| stop).await;
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

/// Serves `model` on `listener` until `shutdown` is triggered (the CLI never triggers it:
/// the process is stopped by a signal). The calling thread runs the model worker.
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
    });
    listener.set_nonblocking(true)?;
    let worker_config = worker::WorkerConfig {
        parallel: config.parallel,
        prefill_chunk: config.prefill_chunk,
        prefix_cache_bytes: config.prefix_cache_mb.saturating_mul(1_000_000),
        speculate: config.speculate,
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
                    axum::serve(listener, http::router(state))
                        .with_graceful_shutdown(shutdown.wait())
                        .await
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

    /// Stops the server and waits for it.
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
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}
