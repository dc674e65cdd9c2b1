//! HTTP routing: the OpenAI-compatible routes, the chat page ([`super::page`]), body limits, and JSON errors for unknown
//! routes and wrong methods.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futures_util::stream::{Stream, StreamExt};
use http_body_util::BodyExt;
use serde_json::{json, Value};

use super::choice::{ChoiceRun, LogprobsShape};
use super::error::ApiError;
use super::metrics::TokenClock;
use super::request::{
    chat_stop_ids, parse_chat, parse_completion, prepare_chat, prepare_completion, PreparedPrompt,
    ResponseFormat,
};
use super::sse;
use super::worker::{Job, Permit};
use super::AppState;
use crate::penalties::Penalties;
use crate::sampler::SamplerConfig;
use crate::structured::{Constraint, GrammarError};

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(super::page::index))
        .route("/chat.js", get(super::page::script))
        .route("/chat.css", get(super::page::stylesheet))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/v1/models", get(models))
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat_completions))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found(uri.path())
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::method_not_allowed(method.as_str(), uri.path())
}

fn json_response(v: Value) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

async fn health(State(st): State<Arc<AppState>>) -> Response {
    json_response(json!({
        "status": "ok",
        "in_flight": st.in_flight.load(Ordering::Relaxed),
        "capacity": st.capacity,
    }))
}

async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        st.metrics.render(),
    )
        .into_response()
}

async fn models(State(st): State<Arc<AppState>>) -> Response {
    json_response(json!({
        "object": "list",
        "data": [{"id": st.info.name, "object": "model", "created": st.created, "owned_by": "qwenc"}],
    }))
}

/// Bytes of an over-long body read and thrown away before its 413 is sent. A client that
/// writes its whole body before it reads (Python's `http.client` and `urllib`) would
/// otherwise meet a closed socket (a broken pipe) instead of the error. Past this, or after
/// [`DRAIN_SECONDS`], the connection is closed.
const DRAIN_LIMIT: u64 = 64 << 20;
const DRAIN_SECONDS: u64 = 10;

/// The body, within the body timeout (else 408).
async fn read_body(req: Request, st: &AppState) -> Result<Bytes, ApiError> {
    let timeout = st.body_timeout;
    tokio::time::timeout(timeout, read_body_within(req, st.max_body_bytes))
        .await
        .unwrap_or_else(|_| Err(ApiError::body_timeout(timeout.as_secs_f64())))
}

/// The body, refused with 413 past `limit` bytes (by Content-Length or as it arrives).
async fn read_body_within(req: Request, limit: usize) -> Result<Bytes, ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut body = req.into_body();
    if declared.is_some_and(|n| n > limit as u64) {
        drain(body, declared).await;
        return Err(ApiError::body_too_large(limit));
    }
    let mut buf = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            ApiError::bad_body(
                "unreadable_body",
                format!("cannot read the request body: {e}"),
            )
        })?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                drain(body, declared).await;
                return Err(ApiError::body_too_large(limit));
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(Bytes::from(buf))
}

/// Reads and discards the rest of a refused body, within [`DRAIN_LIMIT`] and [`DRAIN_SECONDS`].
async fn drain(mut body: Body, declared: Option<u64>) {
    if declared.is_some_and(|n| n > DRAIN_LIMIT) {
        return;
    }
    let discard = async {
        let mut seen = 0u64;
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                seen += data.len() as u64;
                if seen > DRAIN_LIMIT {
                    break;
                }
            }
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(DRAIN_SECONDS), discard).await;
}

fn now_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What a submitted sequence needs besides its prompt.
struct SubmitOptions {
    sampler: SamplerConfig,
    penalties: Penalties,
    stop_ids: Vec<u32>,
    logprobs: Option<usize>,
    prompt_logprobs: bool,
    /// The grammar every answer follows (`response_format`).
    constraint: Option<Constraint>,
}

impl AppState {
    /// Queues one job per prompt, all or none (503 when the queue is full).
    fn submit(
        &self,
        prompts: &[PreparedPrompt],
        opts: &SubmitOptions,
    ) -> Result<Vec<tokio::sync::mpsc::UnboundedReceiver<super::worker::Event>>, ApiError> {
        let mut permits = Vec::with_capacity(prompts.len());
        for _ in prompts {
            match Permit::try_acquire(&self.in_flight, self.capacity) {
                Some(p) => permits.push(p),
                None => return Err(ApiError::queue_full(self.capacity)),
            }
        }
        let mut receivers = Vec::with_capacity(prompts.len());
        for (p, permit) in prompts.iter().zip(permits) {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            let job = Job {
                prompt: p.ids.clone(),
                max_tokens: p.max_tokens,
                sampler: opts.sampler.clone(),
                penalties: opts.penalties.clone(),
                stop_ids: opts.stop_ids.clone(),
                logprobs: opts.logprobs,
                prompt_logprobs: opts.prompt_logprobs,
                constraint: opts.constraint.clone(),
                events: tx,
                permit,
                clock: TokenClock::new(self.metrics.clone()),
            };
            self.jobs
                .send(job)
                .map_err(|_| ApiError::internal("the model worker has stopped"))?;
            receivers.push(rx);
        }
        Ok(receivers)
    }

    fn next_id(&self, prefix: &str) -> String {
        format!("{prefix}-{}", self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    fn random_seed(&self) -> u64 {
        use std::hash::BuildHasher;
        std::collections::hash_map::RandomState::new()
            .hash_one(self.next_id.load(Ordering::Relaxed))
    }
}

fn usage(prompt: usize, completion: usize) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
}

fn sse_response<S>(frames: S) -> Response
where
    S: Stream<Item = String> + Send + 'static,
{
    let body = Body::from_stream(frames.map(|f| Ok::<_, Infallible>(Bytes::from(f))));
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

async fn completions(State(st): State<Arc<AppState>>, req: Request) -> Result<Response, ApiError> {
    let body = read_body(req, &st).await?;
    let creq = parse_completion(&body)?;
    let prompts = prepare_completion(&creq, &st.tokenizer, &st.info)?;
    let opts = SubmitOptions {
        sampler: creq.sampling.config(st.random_seed()),
        penalties: creq.sampling.penalties.clone(),
        stop_ids: st.info.eos_token_ids.clone(),
        logprobs: creq.logprobs,
        prompt_logprobs: creq.echo && creq.logprobs.is_some(),
        constraint: None,
    };
    let receivers = st.submit(&prompts, &opts)?;
    let id = st.next_id("cmpl");
    let created = now_seconds();
    let model = st.info.name.clone();
    let runs: Vec<ChoiceRun> = receivers
        .into_iter()
        .zip(&prompts)
        .enumerate()
        .map(|(i, (rx, p))| {
            ChoiceRun::new(
                i,
                st.clone(),
                rx,
                creq.stop.clone(),
                opts.stop_ids.clone(),
                creq.logprobs.map(|_| LogprobsShape::Completion),
                creq.echo.then(|| p.ids.clone()),
                creq.stream,
            )
        })
        .collect();

    if creq.stream {
        let frames = sse::completion_stream(runs, id, created, model, creq.include_usage);
        return Ok(sse_response(frames));
    }
    let mut choices = Vec::with_capacity(runs.len());
    let (mut prompt_tokens, mut completion_tokens) = (0, 0);
    for mut run in runs {
        let (text, logprobs, finish) = run.collect().await?;
        prompt_tokens += run.prompt_tokens.max(prompts[run.index].ids.len());
        completion_tokens += run.completion_tokens;
        choices.push(json!({
            "index": run.index,
            "text": text,
            "logprobs": logprobs,
            "finish_reason": finish.as_str(),
        }));
    }
    Ok(json_response(json!({
        "id": id,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": choices,
        "usage": usage(prompt_tokens, completion_tokens),
    })))
}

/// The grammar of `response_format`; a schema it cannot enforce is refused, naming why.
fn response_constraint(
    st: &AppState,
    format: &ResponseFormat,
) -> Result<Option<Constraint>, ApiError> {
    let grammars = || {
        st.grammars()
            .map_err(|e| ApiError::internal(format!("constrained decoding is unavailable: {e}")))
    };
    let refused = |e: GrammarError| {
        ApiError::invalid(
            "response_format",
            "unsupported_value",
            format!("the JSON schema cannot be enforced: {e}"),
        )
    };
    match format {
        ResponseFormat::Text => Ok(None),
        ResponseFormat::JsonObject => grammars()?.json_object().map(Some).map_err(refused),
        ResponseFormat::JsonSchema { schema, .. } => {
            grammars()?.json_schema(schema).map(Some).map_err(refused)
        }
    }
}

async fn chat_completions(
    State(st): State<Arc<AppState>>,
    req: Request,
) -> Result<Response, ApiError> {
    let body = read_body(req, &st).await?;
    let creq = parse_chat(&body)?;
    let prompt = prepare_chat(&creq, &st.tokenizer, &st.info)?;
    let constraint = response_constraint(&st, &creq.response_format)?;
    let opts = SubmitOptions {
        sampler: creq.sampling.config(st.random_seed()),
        penalties: creq.sampling.penalties.clone(),
        stop_ids: chat_stop_ids(&st.tokenizer, &st.info),
        logprobs: creq.logprobs,
        prompt_logprobs: false,
        constraint,
    };
    let prompt_len = prompt.ids.len();
    let rx = st.submit(std::slice::from_ref(&prompt), &opts)?.remove(0);
    let id = st.next_id("chatcmpl");
    let created = now_seconds();
    let model = st.info.name.clone();
    let run = ChoiceRun::new(
        0,
        st.clone(),
        rx,
        creq.stop.clone(),
        opts.stop_ids.clone(),
        creq.logprobs.map(|_| LogprobsShape::Chat),
        None,
        creq.stream,
    );
    if creq.stream {
        let frames = sse::chat_stream(run, id, created, model, creq.include_usage);
        return Ok(sse_response(frames));
    }
    let mut run = run;
    let (text, logprobs, finish) = run.collect().await?;
    Ok(json_response(json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "logprobs": logprobs,
            "finish_reason": finish.as_str(),
        }],
        "usage": usage(prompt_len, run.completion_tokens),
    })))
}
