//! `qwen serve`: the OpenAI-compatible server (see [`crate::serve`]).

use clap::Args;

use super::{parse_positive, CliError, Io};
use crate::model::Model;
use crate::serve::{serve, ServeConfig, Shutdown};

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
    };
    writeln!(
        io.stderr,
        "serving {} on http://{addr} (POST /v1/completions, /v1/chat/completions; GET /v1/models, /health)",
        model.info().name
    )?;
    io.stderr.flush()?;
    serve(model, &config, listener, Shutdown::new())
        .map_err(|e| CliError::Io(std::io::Error::other(e.to_string())))
}
