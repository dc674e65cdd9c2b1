//! `qwen serve`: the OpenAI-compatible server (see [`crate::serve`]).

use std::time::Duration;

use clap::Args;

use super::{parse_positive, CliError, Io};
use crate::model::Model;
use crate::serve::listen::drain_on_signals;
use crate::serve::{serve, ApiKey, ServeConfig, Shutdown};

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on (loopback by default: pass 0.0.0.0 to expose the server).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on (0: any free port, printed at start-up).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Largest request body accepted, in bytes; larger ones get 413.
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 20, value_parser = parse_positive, allow_negative_numbers = true)]
    pub max_body_bytes: usize,
    /// Sequences generated together (one forward pass per step for all, one KV cache each).
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = parse_positive, allow_negative_numbers = true)]
    pub parallel: usize,
    /// Requests that may wait beyond the running ones; more get 503.
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = super::parse_number::<usize>, allow_negative_numbers = true)]
    pub queue_depth: usize,
    /// Prompt tokens per prefill step (a long prompt does not stall the others).
    #[arg(long, value_name = "N", default_value_t = 512, value_parser = parse_positive, allow_negative_numbers = true)]
    pub prefill_chunk: usize,
    /// MB of KV cache kept for prefix reuse (a chat's next turn, repeated contexts); 0: off.
    #[arg(long, value_name = "MB", default_value_t = crate::serve::DEFAULT_PREFIX_CACHE_MB, value_parser = super::parse_number::<usize>, allow_negative_numbers = true)]
    pub prefix_cache_mb: usize,
    /// Decode token by token, without speculative decoding (prompt-lookup drafts checked in
    /// one pass; it never changes greedy output).
    #[arg(long)]
    pub no_speculate: bool,
    /// Require `Authorization: Bearer KEY` on every route but /health and the chat page
    /// (401 otherwise).
    #[arg(long, value_name = "KEY", env = "QWEN_API_KEY", hide_env_values = true, value_parser = parse_api_key)]
    pub api_key: Option<ApiKey>,
    /// On SIGTERM or SIGINT, how long running requests may finish (new ones get 503) before
    /// the server exits; a second signal exits at once.
    #[arg(long, value_name = "SECONDS", default_value_t = 30, value_parser = super::parse_number::<u64>)]
    pub drain_seconds: u64,
    /// A client that has not sent a request's headers this long after the connection opened
    /// (or its previous response) is disconnected.
    #[arg(long, value_name = "SECONDS", default_value_t = 10, value_parser = parse_seconds)]
    pub header_timeout_seconds: u64,
    /// A request whose body has not arrived in full after this gets 408.
    #[arg(long, value_name = "SECONDS", default_value_t = 30, value_parser = parse_seconds)]
    pub body_timeout_seconds: u64,
    /// A kept-alive connection with no request for this long is closed.
    #[arg(long, value_name = "SECONDS", default_value_t = 5, value_parser = parse_seconds)]
    pub keep_alive_seconds: u64,
}

fn parse_api_key(s: &str) -> Result<ApiKey, String> {
    ApiKey::new(s)
}

fn parse_seconds(s: &str) -> Result<u64, String> {
    match super::parse_number::<u64>(s)? {
        0 => Err("must be at least 1".to_string()),
        n => Ok(n),
    }
}

pub(super) fn run(args: &ServeArgs, model: &dyn Model, io: &mut Io<'_>) -> Result<(), CliError> {
    let listener = std::net::TcpListener::bind((args.host.as_str(), args.port)).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot listen on {}:{}: {e}", args.host, args.port),
        )
    })?;
    let addr = listener.local_addr()?;
    let config = ServeConfig {
        max_body_bytes: args.max_body_bytes,
        parallel: args.parallel,
        queue_depth: args.queue_depth,
        prefill_chunk: args.prefill_chunk,
        prefix_cache_mb: args.prefix_cache_mb,
        speculate: !args.no_speculate,
        api_key: args.api_key.clone(),
        drain: Duration::from_secs(args.drain_seconds),
        header_timeout: Duration::from_secs(args.header_timeout_seconds),
        body_timeout: Duration::from_secs(args.body_timeout_seconds),
        keep_alive: Duration::from_secs(args.keep_alive_seconds),
    };
    let shutdown = Shutdown::new();
    drain_on_signals(shutdown.clone())?;
    writeln!(
        io.stderr,
        "serving {} on http://{addr} (chat page at /; POST /v1/completions, /v1/chat/completions; GET /v1/models, /health, /metrics){}",
        model.info().name,
        if config.api_key.is_some() { "; API key required" } else { "" },
    )?;
    io.stderr.flush()?;
    serve(model, &config, listener, shutdown)
        .map_err(|e| CliError::Io(std::io::Error::other(e.to_string())))?;
    writeln!(io.stderr, "stopped")?;
    Ok(())
}
