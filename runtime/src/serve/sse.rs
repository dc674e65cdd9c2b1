//! Server-sent events: `data: {chunk}\n\n` frames, then `data: [DONE]\n\n`, as OpenAI streams.
//! An error after the headers are out is sent as a `data: {"error": ...}` frame.

use futures_util::stream::{self, select_all, Stream, StreamExt};
use serde_json::{json, Value};

use super::choice::{ChoiceRun, Piece};
use super::error::ApiError;

pub fn frame(v: &Value) -> String {
    format!("data: {v}\n\n")
}

pub const DONE: &str = "data: [DONE]\n\n";

/// One choice's pieces, each with the token counts so far.
type Item = (usize, Result<Piece, ApiError>, usize, usize);

fn pieces(run: ChoiceRun) -> impl Stream<Item = Item> + Send {
    stream::unfold(run, |mut run| async move {
        let piece = run.next().await?;
        let item = (run.index, piece, run.prompt_tokens, run.completion_tokens);
        Some((item, run))
    })
}

fn usage_value(counts: &[(usize, usize)]) -> Value {
    let p: usize = counts.iter().map(|c| c.0).sum();
    let c: usize = counts.iter().map(|c| c.1).sum();
    json!({"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c})
}

/// `/v1/completions` with `stream: true`: the choices' chunks interleaved as they come.
pub fn completion_stream(
    runs: Vec<ChoiceRun>,
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
) -> impl Stream<Item = String> + Send {
    let n = runs.len();
    let merged = select_all(runs.into_iter().map(|r| Box::pin(pieces(r))));
    let counts = vec![(0usize, 0usize); n];
    let chunk = move |choices: Value, usage: Value| {
        frame(&json!({
            "id": id, "object": "text_completion", "created": created, "model": model,
            "choices": choices, "usage": usage,
        }))
    };
    stream::unfold(
        (merged, counts, false),
        move |(mut merged, mut counts, mut failed)| {
            let chunk = chunk.clone();
            async move {
                if failed {
                    return None;
                }
                loop {
                    match merged.next().await {
                        Some((index, Ok(piece), p, c)) => {
                            counts[index] = (p, c);
                            if piece.text.is_empty()
                                && piece.logprobs.is_none()
                                && piece.finish.is_none()
                            {
                                continue;
                            }
                            let f = chunk(
                                json!([{
                                    "index": index,
                                    "text": piece.text,
                                    "logprobs": piece.logprobs,
                                    "finish_reason": piece.finish.map(|f| f.as_str()),
                                }]),
                                Value::Null,
                            );
                            return Some((f, (merged, counts, failed)));
                        }
                        Some((_, Err(e), _, _)) => {
                            failed = true;
                            return Some((frame(&e.to_json()) + DONE, (merged, counts, failed)));
                        }
                        None => {
                            let mut tail = String::new();
                            if include_usage {
                                tail += &chunk(json!([]), usage_value(&counts));
                            }
                            tail += DONE;
                            failed = true;
                            return Some((tail, (merged, counts, failed)));
                        }
                    }
                }
            }
        },
    )
}

/// `/v1/chat/completions` with `stream: true`.
pub fn chat_stream(
    run: ChoiceRun,
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
) -> impl Stream<Item = String> + Send {
    let chunk =
        move |delta: Value, logprobs: Option<Value>, finish: Option<&str>, usage: Option<Value>| {
            let choices = if usage.is_some() {
                json!([])
            } else {
                json!([{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}])
            };
            let mut v = json!({
                "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": choices,
            });
            if let Some(u) = usage {
                v["usage"] = u;
            }
            frame(&v)
        };
    let first = chunk(
        json!({"role": "assistant", "content": ""}),
        None,
        None,
        None,
    );
    let rest = stream::unfold((run, false), move |(mut run, ended)| {
        let chunk = chunk.clone();
        async move {
            if ended {
                return None;
            }
            loop {
                match run.next().await {
                    Some(Ok(piece)) => {
                        if piece.text.is_empty() && piece.finish.is_none() {
                            continue;
                        }
                        let mut f = String::new();
                        if !piece.text.is_empty() {
                            f += &chunk(json!({"content": piece.text}), piece.logprobs, None, None);
                        }
                        if let Some(finish) = piece.finish {
                            f += &chunk(json!({}), None, Some(finish.as_str()), None);
                        }
                        return Some((f, (run, false)));
                    }
                    Some(Err(e)) => return Some((frame(&e.to_json()) + DONE, (run, true))),
                    None => {
                        let mut tail = String::new();
                        if include_usage {
                            let u = json!({
                                "prompt_tokens": run.prompt_tokens,
                                "completion_tokens": run.completion_tokens,
                                "total_tokens": run.prompt_tokens + run.completion_tokens,
                            });
                            tail += &chunk(Value::Null, None, None, Some(u));
                        }
                        tail += DONE;
                        return Some((tail, (run, true)));
                    }
                }
            }
        }
    });
    stream::once(async move { first }).chain(rest)
}
