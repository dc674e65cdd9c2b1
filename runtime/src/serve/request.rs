//! Request bodies of `/v1/completions` and `/v1/chat/completions`: parsing and validation as
//! pure functions (no socket, no model), so they can be unit-tested and fuzzed.
//!
//! Fields are read one by one from the JSON object so that each error names its field.
//! Unknown fields are ignored and OpenAI's fields are honoured or refused ([`super::fields`]);
//! `null` means "not given". [`prepare_completion`] and
//! [`prepare_chat`] then tokenize and check the request against the model's vocabulary and
//! context.

use serde_json::{Map, Value};

use super::error::ApiError;
use super::fields::{refuse_unsupported, CHAT_FIELDS, COMPLETION_FIELDS};
use crate::chat::{render, ChatMessage, IM_END};
use crate::model::ModelInfo;
use crate::penalties::Penalties;
use crate::sampler::SamplerConfig;
use crate::tokenizer::Tokenizer;

/// At most this many stop strings (OpenAI's limit).
pub const MAX_STOP: usize = 4;
/// At most this many alternatives per position in `logprobs` / `top_logprobs`.
pub const MAX_LOGPROBS: usize = 20;
/// At most this many prompts in one completion request.
pub const MAX_PROMPTS: usize = 64;
/// `max_tokens` when a completion request gives none (OpenAI's default).
pub const DEFAULT_COMPLETION_TOKENS: usize = 16;

/// One prompt as given: text, or token ids.
#[derive(Clone, Debug, PartialEq)]
pub enum Prompt {
    Text(String),
    Tokens(Vec<u32>),
}

/// Sampling fields shared by both endpoints.
#[derive(Clone, Debug, PartialEq)]
pub struct Sampling {
    /// 0 is greedy. OpenAI's default is 1.
    pub temperature: f32,
    pub top_p: f32,
    /// An extension (vLLM, llama.cpp): 0 is no limit.
    pub top_k: usize,
    /// `None`: a fresh random seed per request.
    pub seed: Option<u64>,
    /// `logit_bias`, `frequency_penalty`, `presence_penalty`.
    pub penalties: Penalties,
}

impl Sampling {
    pub fn config(&self, fallback_seed: u64) -> SamplerConfig {
        SamplerConfig {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            seed: self.seed.unwrap_or(fallback_seed),
        }
    }
}

/// A validated `/v1/completions` request.
#[derive(Clone, Debug, PartialEq)]
pub struct CompletionRequest {
    pub model: Option<String>,
    pub prompts: Vec<Prompt>,
    pub max_tokens: usize,
    pub sampling: Sampling,
    pub stop: Vec<String>,
    pub stream: bool,
    /// Return the prompt in front of the completion (and its logprobs).
    pub echo: bool,
    /// Return logprobs with this many alternatives per position (0: the token's only).
    pub logprobs: Option<usize>,
    /// `stream_options.include_usage`.
    pub include_usage: bool,
}

/// What the answer must be (`response_format`).
#[derive(Clone, Debug, PartialEq)]
pub enum ResponseFormat {
    Text,
    /// Any JSON object.
    JsonObject,
    /// One JSON value valid against the schema. Enforced whether `strict` is set or not:
    /// the output always validates unless `max_tokens` cuts it.
    JsonSchema {
        name: String,
        schema: Value,
    },
}

/// A validated `/v1/chat/completions` request.
#[derive(Clone, Debug, PartialEq)]
pub struct ChatRequest {
    pub model: Option<String>,
    pub messages: Vec<ChatMessage>,
    /// `max_completion_tokens` or `max_tokens`; `None`: up to the end of the context.
    pub max_tokens: Option<usize>,
    pub sampling: Sampling,
    pub stop: Vec<String>,
    pub stream: bool,
    pub include_usage: bool,
    pub response_format: ResponseFormat,
    /// `logprobs: true`, with `top_logprobs` alternatives per token (0 when not given).
    pub logprobs: Option<usize>,
}

/// What the model worker runs for one sequence (one prompt of a request).
#[derive(Clone, Debug, PartialEq)]
pub struct PreparedPrompt {
    pub ids: Vec<u32>,
    pub max_tokens: usize,
}

fn type_error(param: &str, expected: &str, got: &Value) -> ApiError {
    let got = match got {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    ApiError::invalid(
        param,
        "invalid_type",
        format!("`{param}` must be {expected}, got {got}"),
    )
}

/// The body as a JSON object.
pub fn parse_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_body(
            "invalid_json",
            "the request body is empty: a JSON object is needed",
        ));
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_body(
            "invalid_json",
            format!("the request body is not valid JSON: {e}"),
        )
    })?;
    match value {
        Value::Object(map) => Ok(map),
        other => Err(ApiError::bad_body(
            "invalid_json",
            format!(
                "the request body must be a JSON object, got {}",
                short_kind(&other)
            ),
        )),
    }
}

fn short_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The field, `None` when absent or null.
fn field<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    obj.get(name).filter(|v| !v.is_null())
}

fn get_bool(obj: &Map<String, Value>, name: &str) -> Result<Option<bool>, ApiError> {
    match field(obj, name) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(v) => Err(type_error(name, "a boolean", v)),
    }
}

fn get_uint(obj: &Map<String, Value>, name: &str) -> Result<Option<u64>, ApiError> {
    match field(obj, name) {
        None => Ok(None),
        Some(v @ Value::Number(n)) => match n.as_u64() {
            Some(x) => Ok(Some(x)),
            None if n.as_i64().is_some() => Err(ApiError::invalid(
                name,
                "invalid_value",
                format!("`{name}` must be >= 0, got {n}"),
            )),
            None => Err(type_error(name, "an integer", v)),
        },
        Some(v) => Err(type_error(name, "an integer", v)),
    }
}

fn get_f32(obj: &Map<String, Value>, name: &str) -> Result<Option<f32>, ApiError> {
    match field(obj, name) {
        None => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64().map(|x| x as f32)),
        Some(v) => Err(type_error(name, "a number", v)),
    }
}

fn get_string(obj: &Map<String, Value>, name: &str) -> Result<Option<String>, ApiError> {
    match field(obj, name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(v) => Err(type_error(name, "a string", v)),
    }
}

fn usize_of(x: u64) -> usize {
    usize::try_from(x).unwrap_or(usize::MAX)
}

fn parse_sampling(obj: &Map<String, Value>) -> Result<Sampling, ApiError> {
    let temperature = get_f32(obj, "temperature")?.unwrap_or(1.0);
    if !(temperature.is_finite() && (0.0..=2.0).contains(&temperature)) {
        return Err(ApiError::invalid(
            "temperature",
            "invalid_value",
            format!("`temperature` must be between 0 and 2, got {temperature}"),
        ));
    }
    let top_p = get_f32(obj, "top_p")?.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::invalid(
            "top_p",
            "invalid_value",
            format!("`top_p` must be in (0, 1], got {top_p}"),
        ));
    }
    let top_k = match field(obj, "top_k") {
        // vLLM spells "no limit" as -1.
        Some(Value::Number(n)) if n.as_i64() == Some(-1) => 0,
        _ => usize_of(get_uint(obj, "top_k")?.unwrap_or(0)),
    };
    let seed = match field(obj, "seed") {
        None => None,
        Some(Value::Number(n)) if n.as_i64().is_some() || n.as_u64().is_some() => {
            // Negative seeds are accepted as their two's complement (OpenAI takes any int).
            Some(n.as_u64().unwrap_or_else(|| n.as_i64().unwrap_or(0) as u64))
        }
        Some(v) => return Err(type_error("seed", "an integer", v)),
    };
    let penalties = Penalties {
        frequency: get_penalty(obj, "frequency_penalty")?,
        presence: get_penalty(obj, "presence_penalty")?,
        logit_bias: get_logit_bias(obj)?,
    };
    Ok(Sampling {
        temperature,
        top_p,
        top_k,
        seed,
        penalties,
    })
}

/// `frequency_penalty` or `presence_penalty`: in [-2, 2] (OpenAI's range), 0 when absent.
fn get_penalty(obj: &Map<String, Value>, name: &str) -> Result<f32, ApiError> {
    let x = get_f32(obj, name)?.unwrap_or(0.0);
    if !(x.is_finite() && (-2.0..=2.0).contains(&x)) {
        return Err(ApiError::invalid(
            name,
            "invalid_value",
            format!("`{name}` must be between -2 and 2, got {x}"),
        ));
    }
    Ok(x)
}

/// `logit_bias`: an object from token ids (as strings) to biases in [-100, 100]. The ids are
/// checked against the vocabulary when the request is prepared.
fn get_logit_bias(obj: &Map<String, Value>) -> Result<Vec<(u32, f32)>, ApiError> {
    let map = match field(obj, "logit_bias") {
        None => return Ok(Vec::new()),
        Some(Value::Object(m)) => m,
        Some(v) => return Err(type_error("logit_bias", "an object", v)),
    };
    let bad = |m: String| ApiError::invalid("logit_bias", "invalid_value", m);
    let mut out = Vec::with_capacity(map.len());
    for (k, v) in map {
        let id: u32 = k
            .parse()
            .map_err(|_| bad(format!("`logit_bias` keys must be token ids, got {k:?}")))?;
        let bias = v
            .as_f64()
            .filter(|b| (-100.0..=100.0).contains(b))
            .ok_or_else(|| {
                bad(format!(
                    "`logit_bias[{k}]` must be a number in [-100, 100], got {v}"
                ))
            })?;
        out.push((id, bias as f32));
    }
    Ok(out)
}

fn parse_stop(obj: &Map<String, Value>) -> Result<Vec<String>, ApiError> {
    let stops = match field(obj, "stop") {
        None => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    Value::String(s) => out.push(s.clone()),
                    v => return Err(type_error("stop", "a string or an array of strings", v)),
                }
            }
            out
        }
        Some(v) => return Err(type_error("stop", "a string or an array of strings", v)),
    };
    if stops.len() > MAX_STOP {
        return Err(ApiError::invalid(
            "stop",
            "invalid_value",
            format!(
                "`stop` has {} sequences, at most {MAX_STOP} are allowed",
                stops.len()
            ),
        ));
    }
    // An empty stop string would match everywhere: it stops nothing in OpenAI's API.
    Ok(stops.into_iter().filter(|s| !s.is_empty()).collect())
}

fn parse_stream(obj: &Map<String, Value>) -> Result<(bool, bool), ApiError> {
    let stream = get_bool(obj, "stream")?.unwrap_or(false);
    let include_usage = match field(obj, "stream_options") {
        None => false,
        Some(Value::Object(o)) => get_bool(o, "include_usage")
            .map_err(|mut e| {
                e.param = Some("stream_options.include_usage".into());
                e
            })?
            .unwrap_or(false),
        Some(v) => return Err(type_error("stream_options", "an object", v)),
    };
    Ok((stream, include_usage))
}

fn token_ids(param: &str, items: &[Value]) -> Result<Vec<u32>, ApiError> {
    items
        .iter()
        .map(|v| {
            v.as_u64()
                .and_then(|x| u32::try_from(x).ok())
                .ok_or_else(|| {
                    ApiError::invalid(
                        param,
                        "invalid_type",
                        format!("`{param}` token ids must be integers in 0..2^32, got {v}"),
                    )
                })
        })
        .collect()
}

/// `prompt`: a string, an array of token ids, or an array of either.
fn parse_prompts(obj: &Map<String, Value>) -> Result<Vec<Prompt>, ApiError> {
    const EXPECTED: &str =
        "a string, an array of token ids, or an array of strings or of token-id arrays";
    let prompts = match field(obj, "prompt") {
        None => {
            return Err(ApiError::invalid(
                "prompt",
                "missing_required_parameter",
                "`prompt` is required",
            ))
        }
        Some(Value::String(s)) => vec![Prompt::Text(s.clone())],
        Some(Value::Array(items)) if items.is_empty() => {
            return Err(ApiError::invalid(
                "prompt",
                "invalid_value",
                "`prompt` is an empty array",
            ))
        }
        Some(Value::Array(items)) => match &items[0] {
            Value::Number(_) => vec![Prompt::Tokens(token_ids("prompt", items)?)],
            Value::String(_) | Value::Array(_) => {
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    match item {
                        Value::String(s) => out.push(Prompt::Text(s.clone())),
                        Value::Array(ids) => out.push(Prompt::Tokens(token_ids("prompt", ids)?)),
                        v => return Err(type_error("prompt", EXPECTED, v)),
                    }
                }
                out
            }
            v => return Err(type_error("prompt", EXPECTED, v)),
        },
        Some(v) => return Err(type_error("prompt", EXPECTED, v)),
    };
    if prompts.len() > MAX_PROMPTS {
        return Err(ApiError::invalid(
            "prompt",
            "invalid_value",
            format!(
                "{} prompts in one request, at most {MAX_PROMPTS} are allowed",
                prompts.len()
            ),
        ));
    }
    Ok(prompts)
}

/// Parses and validates a `/v1/completions` body (no model needed).
pub fn parse_completion(body: &[u8]) -> Result<CompletionRequest, ApiError> {
    let obj = parse_object(body)?;
    let model = get_string(&obj, "model")?;
    let prompts = parse_prompts(&obj)?;
    let max_tokens = get_uint(&obj, "max_tokens")?.map_or(DEFAULT_COMPLETION_TOKENS, usize_of);
    let sampling = parse_sampling(&obj)?;
    let stop = parse_stop(&obj)?;
    let (stream, include_usage) = parse_stream(&obj)?;
    let echo = get_bool(&obj, "echo")?.unwrap_or(false);
    let logprobs = get_uint(&obj, "logprobs")?.map(usize_of);
    if let Some(n) = logprobs {
        if n > MAX_LOGPROBS {
            return Err(ApiError::invalid(
                "logprobs",
                "invalid_value",
                format!("`logprobs` must be at most {MAX_LOGPROBS}, got {n}"),
            ));
        }
    }
    refuse_unsupported(&obj, COMPLETION_FIELDS)?;
    Ok(CompletionRequest {
        model,
        prompts,
        max_tokens,
        sampling,
        stop,
        stream,
        echo,
        logprobs,
        include_usage,
    })
}

/// A message's `content`: a string, or an array of `{"type": "text", "text": ...}` parts.
fn message_content(i: usize, v: Option<&Value>) -> Result<String, ApiError> {
    let param = format!("messages[{i}].content");
    match v {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let mut out = String::new();
            for part in parts {
                let text = part
                    .as_object()
                    .filter(|p| p.get("type").and_then(Value::as_str) == Some("text"))
                    .and_then(|p| p.get("text"))
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        ApiError::invalid(
                            &param,
                            "invalid_type",
                            format!(
                                "`{param}` parts must be {{\"type\": \"text\", \"text\": string}}"
                            ),
                        )
                    })?;
                out.push_str(text);
            }
            Ok(out)
        }
        Some(v) => Err(type_error(&param, "a string or an array of text parts", v)),
    }
}

/// Parses and validates a `/v1/chat/completions` body (no model needed).
pub fn parse_chat(body: &[u8]) -> Result<ChatRequest, ApiError> {
    let obj = parse_object(body)?;
    let model = get_string(&obj, "model")?;
    let messages = match field(&obj, "messages") {
        None => {
            return Err(ApiError::invalid(
                "messages",
                "missing_required_parameter",
                "`messages` is required",
            ))
        }
        Some(Value::Array(items)) if items.is_empty() => {
            return Err(ApiError::invalid(
                "messages",
                "invalid_value",
                "`messages` is an empty array",
            ))
        }
        Some(Value::Array(items)) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let m = item
                    .as_object()
                    .ok_or_else(|| type_error(&format!("messages[{i}]"), "an object", item))?;
                let role = match m.get("role") {
                    Some(Value::String(r)) => r.clone(),
                    Some(v) => {
                        return Err(type_error(&format!("messages[{i}].role"), "a string", v))
                    }
                    None => {
                        return Err(ApiError::invalid(
                            &format!("messages[{i}].role"),
                            "missing_required_parameter",
                            format!("`messages[{i}].role` is required"),
                        ))
                    }
                };
                if !matches!(
                    role.as_str(),
                    "system" | "developer" | "user" | "assistant" | "tool"
                ) {
                    return Err(ApiError::invalid(
                        &format!("messages[{i}].role"),
                        "invalid_value",
                        format!("`messages[{i}].role` must be system, developer, user, assistant or tool, got {role:?}"),
                    ));
                }
                // OpenAI's newer name for the system role.
                let role = if role == "developer" {
                    "system".to_string()
                } else {
                    role
                };
                out.push(ChatMessage::new(
                    role,
                    message_content(i, m.get("content"))?,
                ));
            }
            out
        }
        Some(v) => return Err(type_error("messages", "an array of messages", v)),
    };
    let max_tokens = match get_uint(&obj, "max_completion_tokens")? {
        Some(n) => Some(usize_of(n)),
        None => get_uint(&obj, "max_tokens")?.map(usize_of),
    };
    let sampling = parse_sampling(&obj)?;
    let stop = parse_stop(&obj)?;
    let (stream, include_usage) = parse_stream(&obj)?;
    let response_format = parse_response_format(&obj)?;
    let top = get_uint(&obj, "top_logprobs")?.map(usize_of);
    let logprobs = match (get_bool(&obj, "logprobs")?, top) {
        (Some(true), top) => Some(top.unwrap_or(0)),
        (_, Some(_)) => {
            return Err(ApiError::invalid(
                "top_logprobs",
                "invalid_value",
                "`top_logprobs` needs `logprobs: true`",
            ))
        }
        _ => None,
    };
    if let Some(n) = logprobs.filter(|&n| n > MAX_LOGPROBS) {
        return Err(ApiError::invalid(
            "top_logprobs",
            "invalid_value",
            format!("`top_logprobs` must be at most {MAX_LOGPROBS}, got {n}"),
        ));
    }
    refuse_unsupported(&obj, CHAT_FIELDS)?;
    Ok(ChatRequest {
        model,
        messages,
        max_tokens,
        sampling,
        stop,
        stream,
        include_usage,
        response_format,
        logprobs,
    })
}

/// `response_format`: `{"type": "text"}`, `{"type": "json_object"}`, or `{"type":
/// "json_schema", "json_schema": {"name", "schema", "strict", "description"}}`.
fn parse_response_format(obj: &Map<String, Value>) -> Result<ResponseFormat, ApiError> {
    const P: &str = "response_format";
    let bad = |m: String| ApiError::invalid(P, "invalid_value", m);
    let f = match field(obj, P) {
        None => return Ok(ResponseFormat::Text),
        Some(Value::Object(f)) => f,
        Some(v) => return Err(type_error(P, "an object", v)),
    };
    match f.get("type").and_then(Value::as_str) {
        Some("text") => Ok(ResponseFormat::Text),
        Some("json_object") => Ok(ResponseFormat::JsonObject),
        Some("json_schema") => {
            let Some(Value::Object(js)) = f.get("json_schema") else {
                return Err(bad("`response_format.json_schema` must be an object with `name` and `schema`".into()));
            };
            let name = match js.get("name") {
                Some(Value::String(n)) if !n.is_empty() => n.clone(),
                _ => return Err(bad("`response_format.json_schema.name` must be a non-empty string".into())),
            };
            if let Some(v) = js.get("strict").filter(|v| !v.is_null() && !v.is_boolean()) {
                return Err(type_error("response_format.json_schema.strict", "a boolean", v));
            }
            let schema = match js.get("schema") {
                Some(s @ (Value::Object(_) | Value::Bool(true))) => s.clone(),
                // OpenAI: no schema means any JSON.
                None | Some(Value::Null) => serde_json::json!({}),
                Some(v) => return Err(type_error("response_format.json_schema.schema", "an object", v)),
            };
            Ok(ResponseFormat::JsonSchema { name, schema })
        }
        Some(other) => Err(bad(format!(
            "`response_format.type` must be \"text\", \"json_object\" or \"json_schema\", got {other:?}"
        ))),
        None => Err(bad("`response_format.type` is required".into())),
    }
}

fn check_tokens(ids: &[u32], vocab: usize) -> Result<(), ApiError> {
    if let Some((i, id)) = ids.iter().enumerate().find(|(_, &id)| id as usize >= vocab) {
        return Err(ApiError::invalid(
            "prompt",
            "invalid_value",
            format!("prompt token {i} is id {id}, outside the vocabulary (size {vocab})"),
        ));
    }
    Ok(())
}

/// Every `logit_bias` id inside the vocabulary.
fn check_logit_bias(sampling: &Sampling, vocab: usize) -> Result<(), ApiError> {
    match sampling
        .penalties
        .logit_bias
        .iter()
        .find(|(id, _)| *id as usize >= vocab)
    {
        Some((id, _)) => Err(ApiError::invalid(
            "logit_bias",
            "invalid_value",
            format!("`logit_bias` names token id {id}, outside the vocabulary (size {vocab})"),
        )),
        None => Ok(()),
    }
}

fn context_error(param: &str, prompt: usize, max_tokens: usize, context: usize) -> ApiError {
    ApiError::invalid(
        param,
        "context_length_exceeded",
        format!(
            "a prompt of {prompt} tokens + max_tokens {max_tokens} = {} tokens, more than the context of {context} tokens",
            prompt.saturating_add(max_tokens)
        ),
    )
}

/// Tokenizes the prompts of a completion request and checks them against the model.
pub fn prepare_completion(
    req: &CompletionRequest,
    tokenizer: &Tokenizer,
    info: &ModelInfo,
) -> Result<Vec<PreparedPrompt>, ApiError> {
    let context = info.max_context;
    check_logit_bias(&req.sampling, info.vocab_size)?;
    req.prompts
        .iter()
        .map(|p| {
            let ids = match p {
                Prompt::Text(s) => tokenizer.encode(s),
                Prompt::Tokens(ids) => ids.clone(),
            };
            if ids.is_empty() {
                return Err(ApiError::invalid(
                    "prompt",
                    "invalid_value",
                    "the prompt is empty: at least one token is needed",
                ));
            }
            check_tokens(&ids, info.vocab_size)?;
            if ids.len() > context {
                return Err(context_error("prompt", ids.len(), req.max_tokens, context));
            }
            if ids.len().saturating_add(req.max_tokens) > context {
                return Err(context_error(
                    "max_tokens",
                    ids.len(),
                    req.max_tokens,
                    context,
                ));
            }
            Ok(PreparedPrompt {
                ids,
                max_tokens: req.max_tokens,
            })
        })
        .collect()
}

/// Renders the conversation with the chat template, tokenizes it and checks it against the
/// model. Without `max_tokens` the answer may fill the rest of the context.
pub fn prepare_chat(
    req: &ChatRequest,
    tokenizer: &Tokenizer,
    info: &ModelInfo,
) -> Result<PreparedPrompt, ApiError> {
    let context = info.max_context;
    check_logit_bias(&req.sampling, info.vocab_size)?;
    let ids = tokenizer.encode(&render(&req.messages, true));
    if ids.len() >= context {
        return Err(context_error(
            "messages",
            ids.len(),
            req.max_tokens.unwrap_or(1),
            context,
        ));
    }
    let max_tokens = match req.max_tokens {
        Some(0) => {
            return Err(ApiError::invalid(
                "max_tokens",
                "invalid_value",
                "`max_tokens` must be at least 1",
            ))
        }
        Some(n) if ids.len().saturating_add(n) > context => {
            return Err(context_error("max_tokens", ids.len(), n, context))
        }
        Some(n) => n,
        None => context - ids.len(),
    };
    Ok(PreparedPrompt { ids, max_tokens })
}

/// The ids that end a chat answer: the model's eos ids and `<|im_end|>`.
pub fn chat_stop_ids(tokenizer: &Tokenizer, info: &ModelInfo) -> Vec<u32> {
    let mut ids = info.eos_token_ids.clone();
    if let Some(id) = tokenizer.token_to_id(IM_END) {
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    ids
}
