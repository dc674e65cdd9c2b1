//! `qwen chat`: a conversation on stdin/stdout, one line per user message.
//!
//! `/reset` starts a new conversation, `/exit` (or end of input) quits. The KV cache keeps
//! the conversation between turns (see [`ChatSession`]); when the context is full the
//! conversation is reset, with a notice on stderr.

use std::ops::ControlFlow;

use super::{summary_line, ChatArgs, CliError, Io};
use crate::generate::{ChatSession, GenerateError, GenerateOptions};
use crate::model::Model;
use crate::tokenizer::StreamDecoder;

const HELP: &str = "/reset starts a new conversation, /exit quits";

pub(super) fn run(args: &ChatArgs, model: &dyn Model, io: &mut Io<'_>) -> Result<(), CliError> {
    args.sampling.note_unused(io.stderr);
    let info = model.info();
    let capacity = args
        .context
        .unwrap_or(info.max_context)
        .min(info.max_context);
    let options = GenerateOptions {
        max_tokens: args.max_tokens.unwrap_or(usize::MAX),
        sampler: args.sampling.config(),
        ignore_eos: false,
        extra_stop_ids: Vec::new(),
        speculate: !args.no_speculate,
    };
    let mut session = ChatSession::new(model, capacity, args.system.clone(), options)?;
    let tokenizer = model.tokenizer();
    let stop_ids: Vec<u32> = info
        .eos_token_ids
        .iter()
        .copied()
        .chain(tokenizer.token_to_id(crate::chat::IM_END))
        .collect();
    if io.interactive {
        writeln!(
            io.stderr,
            "Chat with {} (context of {} tokens). {HELP}.",
            info.name,
            session.context()
        )?;
    }

    let mut line = Vec::new();
    loop {
        if io.interactive {
            write!(io.stdout, "> ")?;
            io.stdout.flush()?;
        }
        line.clear();
        if io.stdin.read_until(b'\n', &mut line)? == 0 {
            if io.interactive {
                writeln!(io.stdout)?;
            }
            break;
        }
        let text = String::from_utf8_lossy(&line);
        let message = text.trim_end_matches(['\n', '\r']);
        match message.trim() {
            "" => continue,
            "/exit" | "/quit" => break,
            "/reset" => {
                session.reset();
                writeln!(io.stderr, "[new conversation]")?;
                continue;
            }
            "/help" => {
                writeln!(io.stderr, "{HELP}.")?;
                continue;
            }
            _ => {}
        }

        let mut decoder = StreamDecoder::new(tokenizer);
        let mut write_error = None;
        let result = {
            let stdout = &mut *io.stdout;
            session.send(message, &mut |id| {
                if stop_ids.contains(&id) {
                    return ControlFlow::Continue(());
                }
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
            })
        };
        if let Some(e) = write_error {
            return Err(e.into());
        }
        match result {
            Ok(turn) => {
                let rest = decoder.finish().unwrap_or_default();
                writeln!(io.stdout, "{rest}")?;
                io.stdout.flush()?;
                if turn.reset_before {
                    writeln!(
                        io.stderr,
                        "[the conversation no longer fit in the context of {} tokens: it was reset before this message]",
                        session.context()
                    )?;
                }
                if turn.reset_after {
                    writeln!(
                        io.stderr,
                        "[the context of {} tokens is full: the conversation was reset]",
                        session.context()
                    )?;
                }
                if args.stats {
                    writeln!(io.stderr, "{}", summary_line(&turn.stats))?;
                }
            }
            Err(GenerateError::ContextOverflow {
                prompt, context, ..
            }) => {
                writeln!(
                    io.stderr,
                    "error: the message takes {prompt} tokens in the chat template, which leaves \
                     no room for an answer in the context of {context} tokens; the message was \
                     not sent"
                )?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    io.stdout.flush()?;
    Ok(())
}
