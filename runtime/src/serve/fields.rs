//! Every request field of OpenAI's completion and chat completion requests, and what the
//! server does with it: honours it, accepts it because it cannot change the output, accepts
//! some values only, or refuses it. Nothing is accepted and then ignored.
//!
//! The lists are the fields of `CompletionCreateParams` and `ChatCompletionCreateParams` (with
//! `stream`) in the `openai` Python package 3.63.0. Fields outside them are ignored, except the
//! extension `top_k` (vLLM, llama.cpp), which is honoured. A refused field is a 400
//! `unsupported_value` naming it; `null` counts as absent. The README's field table is this
//! one (`runtime/tests/serve_fields.rs` checks both, and sends every field).

use serde_json::{Map, Value};

use super::error::ApiError;

/// What the server does with a field.
#[derive(Clone, Copy, Debug)]
pub enum Support {
    /// Read and applied by the request parser.
    Honoured,
    /// Accepted: it cannot change the output (bookkeeping, a caching or latency hint).
    NoEffect(&'static str),
    /// Honoured for the values `accepts` allows (described by the text), refused otherwise.
    Only(&'static str, fn(&Value) -> bool),
    /// Refused whenever present: why.
    Refused(&'static str),
}

/// One request field.
#[derive(Clone, Copy, Debug)]
pub struct Field {
    pub name: &'static str,
    pub support: Support,
}

const fn honoured(name: &'static str) -> Field {
    Field {
        name,
        support: Support::Honoured,
    }
}
const fn no_effect(name: &'static str, why: &'static str) -> Field {
    Field {
        name,
        support: Support::NoEffect(why),
    }
}
const fn only(name: &'static str, what: &'static str, accepts: fn(&Value) -> bool) -> Field {
    Field {
        name,
        support: Support::Only(what, accepts),
    }
}
const fn refused(name: &'static str, why: &'static str) -> Field {
    Field {
        name,
        support: Support::Refused(why),
    }
}

fn is_one(v: &Value) -> bool {
    v.as_u64() == Some(1)
}
fn is_empty_string(v: &Value) -> bool {
    v.as_str() == Some("")
}
fn is_empty_array(v: &Value) -> bool {
    v.as_array().is_some_and(Vec::is_empty)
}
fn is_text_modality(v: &Value) -> bool {
    v.as_array()
        .is_some_and(|a| a.iter().all(|m| m.as_str() == Some("text")))
}
fn is_tool_choice_none(v: &Value) -> bool {
    v.as_str() == Some("none")
}

const ONE_MODEL: &str = "one model is served; responses name it";

/// `/v1/completions`.
pub const COMPLETION_FIELDS: &[Field] = &[
    honoured("prompt"),
    no_effect("model", ONE_MODEL),
    only("best_of", "1", is_one),
    honoured("echo"),
    honoured("frequency_penalty"),
    honoured("logit_bias"),
    honoured("logprobs"),
    honoured("max_tokens"),
    only("n", "1", is_one),
    honoured("presence_penalty"),
    honoured("seed"),
    honoured("stop"),
    honoured("stream"),
    honoured("stream_options"),
    only("suffix", "empty (no insertion)", is_empty_string),
    honoured("temperature"),
    honoured("top_p"),
    no_effect("user", "an end-user id for the caller's records"),
];

/// `/v1/chat/completions`.
pub const CHAT_FIELDS: &[Field] = &[
    honoured("messages"),
    no_effect("model", ONE_MODEL),
    refused("audio", "the model has no audio output"),
    honoured("frequency_penalty"),
    refused(
        "function_call",
        "function calling (deprecated `functions`) is not supported",
    ),
    refused(
        "functions",
        "function calling (deprecated `functions`) is not supported",
    ),
    honoured("logit_bias"),
    honoured("logprobs"),
    honoured("max_completion_tokens"),
    honoured("max_tokens"),
    no_effect("metadata", "tags for the caller's records"),
    only("modalities", "[\"text\"]", is_text_modality),
    refused("moderation", "no moderation runs on this server"),
    only("n", "1", is_one),
    refused("parallel_tool_calls", "tool calls are not supported yet"),
    no_effect(
        "prediction",
        "a latency hint: a predicted output never changes the output",
    ),
    honoured("presence_penalty"),
    no_effect(
        "prompt_cache_key",
        "a caching hint: caching never changes the output",
    ),
    no_effect(
        "prompt_cache_options",
        "a caching hint: caching never changes the output",
    ),
    no_effect(
        "prompt_cache_retention",
        "a caching hint: caching never changes the output",
    ),
    refused("reasoning_effort", "the model is not a reasoning model"),
    honoured("response_format"),
    no_effect(
        "safety_identifier",
        "an end-user id for the caller's records",
    ),
    honoured("seed"),
    no_effect(
        "service_tier",
        "every request is served the same way; the output does not depend on it",
    ),
    honoured("stop"),
    no_effect(
        "store",
        "nothing is stored; the output does not depend on it",
    ),
    honoured("stream"),
    honoured("stream_options"),
    honoured("temperature"),
    only(
        "tool_choice",
        "\"none\" (tool calls are not supported yet)",
        is_tool_choice_none,
    ),
    only(
        "tools",
        "[] (tool calls are not supported yet)",
        is_empty_array,
    ),
    honoured("top_logprobs"),
    honoured("top_p"),
    no_effect("user", "an end-user id for the caller's records"),
    refused("verbosity", "the model has no verbosity setting"),
    refused("web_search_options", "the server has no web search"),
];

/// Refuses the fields of `obj` that `fields` refuses (or whose value it does not accept).
pub fn refuse_unsupported(obj: &Map<String, Value>, fields: &[Field]) -> Result<(), ApiError> {
    for f in fields {
        let Some(v) = obj.get(f.name).filter(|v| !v.is_null()) else {
            continue;
        };
        let message = match f.support {
            Support::Honoured | Support::NoEffect(_) => continue,
            Support::Only(_, accepts) if accepts(v) => continue,
            Support::Only(what, _) => format!("`{}` supports only {what}, got {v}", f.name),
            Support::Refused(why) => format!("`{}` is not supported: {why}", f.name),
        };
        return Err(ApiError::invalid(f.name, "unsupported_value", message));
    }
    Ok(())
}
