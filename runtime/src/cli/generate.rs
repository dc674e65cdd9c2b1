//! `qwen generate`: one prompt, text streamed as it comes (or one JSON object).

use std::ops::ControlFlow;

use super::{summary_line, CliError, GenerateArgs, Io};
use crate::chat::{render, ChatMessage, IM_END};
use crate::generate::{check_fits, generate, GenerateOptions, StopReason};
use crate::model::Model;
use crate::tokenizer::StreamDecoder;

/// What `--json` prints (one line).
#[derive(serde::Serialize)]
struct JsonReport<'a> {
    prompt_ids: &'a [u32],
    /// Every generated id, the stop token included.
    ids: &'a [u32],
    /// The generated text without the stop token.
    text: &'a str,
    prefill_tok_s: f64,
    decode_tok_s: f64,
    prompt_tokens: usize,
    generated_tokens: usize,
    prefill_seconds: f64,
    decode_seconds: f64,
    /// Whether speculative decoding was on.
    speculate: bool,
    /// Decode forward passes (plain and verification).
    decode_passes: usize,
    /// Passes that verified drafted tokens.
    verify_passes: usize,
    drafted_tokens: usize,
    accepted_tokens: usize,
    /// accepted_tokens / drafted_tokens (0 when nothing was drafted).
    acceptance_rate: f64,
    /// "eos" or "max_tokens".
    stop: &'static str,
    seed: u64,
}

pub(super) fn run(args: &GenerateArgs, model: &dyn Model, io: &mut Io<'_>) -> Result<(), CliError> {
    args.sampling.note_unused(io.stderr);
    let tokenizer = model.tokenizer();
    let info = model.info();

    let prompt = if args.prompt == "-" {
        let mut bytes = Vec::new();
        io.stdin.read_to_end(&mut bytes)?;
        String::from_utf8(bytes).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "the prompt on stdin is not UTF-8",
            )
        })?
    } else {
        args.prompt.clone()
    };
    let text = if args.chat {
        let mut messages: Vec<ChatMessage> = args.system.iter().map(ChatMessage::system).collect();
        messages.push(ChatMessage::user(prompt));
        render(&messages, true)
    } else {
        prompt
    };
    let prompt_ids = tokenizer.encode(&text);
    // Refuse before allocating anything.
    check_fits(0, prompt_ids.len(), args.max_tokens, info.max_context)?;

    let extra_stop_ids: Vec<u32> = if args.chat {
        tokenizer.token_to_id(IM_END).into_iter().collect()
    } else {
        Vec::new()
    };
    let sampler = args.sampling.config();
    let seed = sampler.seed;
    let opts = GenerateOptions {
        max_tokens: args.max_tokens,
        sampler,
        ignore_eos: args.ignore_eos,
        extra_stop_ids,
        speculate: !args.no_speculate,
    };
    let stop_ids: Vec<u32> = info
        .eos_token_ids
        .iter()
        .chain(&opts.extra_stop_ids)
        .copied()
        .collect();

    let mut cache = model.new_cache(prompt_ids.len() + args.max_tokens);
    let mut ids = Vec::new();
    let mut decoder = StreamDecoder::new(tokenizer);
    let mut write_error = None;
    let stream = !args.json;
    let stats = {
        let stdout = &mut *io.stdout;
        generate(model, &mut cache, &prompt_ids, &opts, &mut |id| {
            ids.push(id);
            // The stop token ends the text; it is not part of it.
            if !stream || (!args.ignore_eos && stop_ids.contains(&id)) {
                return ControlFlow::Continue(());
            }
            // An id the tokenizer does not know (vocabulary padding) shows as nothing.
            let piece = decoder.push(id).unwrap_or_default();
            if !piece.is_empty() {
                if let Err(e) = stdout
                    .write_all(piece.as_bytes())
                    .and_then(|()| stdout.flush())
                {
                    write_error = Some(e);
                    return ControlFlow::Break(());
                }
            }
            ControlFlow::Continue(())
        })?
    };
    if let Some(e) = write_error {
        return Err(e.into());
    }

    if stream {
        let rest = decoder.finish().unwrap_or_default();
        writeln!(io.stdout, "{rest}")?;
        io.stdout.flush()?;
        writeln!(io.stderr, "{}", summary_line(&stats))?;
    } else {
        let content = match stats.stop {
            StopReason::Eos(_) => &ids[..ids.len() - 1],
            _ => &ids[..],
        };
        let text = tokenizer.decode(content);
        let report = JsonReport {
            prompt_ids: &prompt_ids,
            ids: &ids,
            text: &text,
            prefill_tok_s: stats.prefill_tok_s,
            decode_tok_s: stats.decode_tok_s,
            prompt_tokens: stats.prompt_tokens,
            generated_tokens: stats.generated_tokens,
            prefill_seconds: stats.prefill_seconds,
            decode_seconds: stats.decode_seconds,
            speculate: opts.speculate,
            decode_passes: stats.decode_passes,
            verify_passes: stats.verify_passes,
            drafted_tokens: stats.drafted_tokens,
            accepted_tokens: stats.accepted_tokens,
            acceptance_rate: stats.acceptance_rate(),
            stop: stats.stop.as_str(),
            seed,
        };
        let json = serde_json::to_string(&report).expect("the report serializes");
        writeln!(io.stdout, "{json}")?;
        io.stdout.flush()?;
    }
    Ok(())
}
