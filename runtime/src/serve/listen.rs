//! The accept loop and what every request passes before its route: the drain, the API key,
//! the request counter, and the connection timeouts.
//!
//! hyper's HTTP/1 connection is driven here rather than through `axum::serve`, which sets no
//! timer and so has no header read timeout (axum 0.8.9, hyper-util 0.1.21).
//!
//! - **Header timeout:** hyper's `header_read_timeout`, from the moment the connection waits
//!   for a request (it opened, or its previous response was sent) until the request's headers
//!   are complete; a slow or silent client is then disconnected.
//! - **Keep-alive timeout:** a connection with no request running and no byte received for
//!   that long is closed (hyper has no idle timeout of its own).
//! - **Body timeout:** in [`super::http`], around reading the body (408 `body_timeout`).
//! - **Drain** ([`Shutdown::trigger`]): the listener stays open so that every request that
//!   arrives gets a 503 `shutting_down` (a refused connection tells a client nothing); the
//!   requests already running finish, until none is left or the drain's time is up.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes, HttpBody};
use axum::http::{header, HeaderMap, HeaderValue, Request};
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::Service;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::error::ApiError;
use super::metrics::{route_label, Metrics};
use super::Shutdown;

/// The key clients must send as `Authorization: Bearer KEY`. Its `Debug` hides it.
#[derive(Clone)]
pub struct ApiKey(String);

impl ApiKey {
    /// Refuses an empty key and one that cannot be sent in a header (visible ASCII only).
    pub fn new(key: &str) -> Result<ApiKey, String> {
        if key.is_empty() {
            return Err("the API key (--api-key or QWEN_API_KEY) is empty".into());
        }
        if !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(
                "the API key (--api-key or QWEN_API_KEY) must be visible ASCII characters (no spaces or control characters)"
                    .into(),
            );
        }
        Ok(ApiKey(key.to_string()))
    }

    /// Whether `headers` carry this key, as `Authorization: Bearer KEY` (the scheme in any case).
    fn check(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Err(ApiError::invalid_api_key(false));
        };
        let given = value
            .as_bytes()
            .split_at_checked(7)
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case(b"bearer "))
            .map(|(_, key)| key.trim_ascii());
        match given {
            Some(key) if constant_time_eq(key, self.0.as_bytes()) => Ok(()),
            _ => Err(ApiError::invalid_api_key(true)),
        }
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(..)")
    }
}

/// Equality whose time depends on the lengths only, never on where the bytes differ, so
/// the key cannot be guessed byte by byte from response times.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Connection timeouts.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    pub header: Duration,
    pub keep_alive: Duration,
    pub drain: Duration,
}

/// What every request passes before its route.
pub struct Gate {
    pub metrics: Arc<Metrics>,
    api_key: Option<ApiKey>,
    draining: AtomicBool,
    /// Requests let in whose response has not been sent in full.
    in_flight: AtomicUsize,
}

impl Gate {
    pub fn new(metrics: Arc<Metrics>, api_key: Option<ApiKey>) -> Gate {
        Gate {
            metrics,
            api_key,
            draining: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
        }
    }
}

/// A request let in: counted until its response body is dropped (sent, or the client left).
struct InFlight(Arc<Gate>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// When a connection last did something, for the keep-alive timeout.
struct Activity {
    start: Instant,
    /// Milliseconds from `start` to the last byte read or response finished.
    last: AtomicU64,
    /// Requests on this connection whose response is not finished.
    busy: AtomicUsize,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            start: Instant::now(),
            last: AtomicU64::new(0),
            busy: AtomicUsize::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn touch(&self) {
        self.last.store(self.now_ms(), Ordering::Relaxed);
    }

    /// How long nothing has happened, if no request is running.
    fn idle_for(&self) -> Option<Duration> {
        (self.busy.load(Ordering::Relaxed) == 0).then(|| {
            let ms = self
                .now_ms()
                .saturating_sub(self.last.load(Ordering::Relaxed));
            Duration::from_millis(ms)
        })
    }
}

/// A request running on a connection.
struct Busy(Arc<Activity>);

impl Busy {
    fn new(activity: &Arc<Activity>) -> Busy {
        activity.busy.fetch_add(1, Ordering::Relaxed);
        activity.touch();
        Busy(activity.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.touch();
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that holds its request's counts until hyper drops it.
struct Counted {
    inner: Body,
    _busy: Busy,
    _in_flight: Option<InFlight>,
}

impl HttpBody for Counted {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The socket, noting each read that brings bytes.
struct Tracked {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The service of one connection: the gate, then the router.
#[derive(Clone)]
struct ConnService {
    router: TowerToHyperService<Router>,
    gate: Arc<Gate>,
    activity: Arc<Activity>,
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

impl Service<Request<Incoming>> for ConnService {
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture;

    fn call(&self, req: Request<Incoming>) -> BoxFuture {
        let busy = Busy::new(&self.activity);
        let gate = self.gate.clone();
        let route = route_label(req.uri().path());
        let done = move |resp: Response, in_flight: Option<InFlight>, gate: &Gate| {
            gate.metrics.request(route, resp.status().as_u16());
            resp.map(|inner| {
                Body::new(Counted {
                    inner,
                    _busy: busy,
                    _in_flight: in_flight,
                })
            })
        };
        // Counted before the drain flag is read, so a drain that has begun either sees this
        // request or this request sees the drain.
        gate.in_flight.fetch_add(1, Ordering::SeqCst);
        let in_flight = InFlight(gate.clone());
        if gate.draining.load(Ordering::SeqCst) {
            drop(in_flight);
            let mut resp = ApiError::shutting_down().into_response();
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            let resp = done(resp, None, &gate);
            return Box::pin(async move { Ok(resp) });
        }
        // `/health` stays open: load balancers and Kubernetes probes send no key. So does the
        // chat page: it is static, holds no secret, and asks for the key itself.
        let open = route == "/health" || super::page::PATHS.contains(&route);
        if let (Some(key), false) = (&gate.api_key, open) {
            if let Err(e) = key.check(req.headers()) {
                let mut resp = e.into_response();
                resp.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                let resp = done(resp, Some(in_flight), &gate);
                return Box::pin(async move { Ok(resp) });
            }
        }
        let fut = self.router.call(req);
        Box::pin(async move {
            let resp = match fut.await {
                Ok(r) => r,
                Err(e) => match e {},
            };
            Ok(done(resp, Some(in_flight), &gate))
        })
    }
}

async fn connection(
    stream: TcpStream,
    router: Router,
    gate: Arc<Gate>,
    timeouts: Timeouts,
    mut close: watch::Receiver<bool>,
) {
    // Tokens are small writes: without this, Nagle's algorithm can hold one back for the
    // client's delayed ACK.
    let _ = stream.set_nodelay(true);
    let activity = Arc::new(Activity::new());
    let service = ConnService {
        router: TowerToHyperService::new(router),
        gate,
        activity: activity.clone(),
    };
    let io = TokioIo::new(Tracked {
        stream,
        activity: activity.clone(),
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.header)
        .keep_alive(true);
    let conn = builder.serve_connection(io, service);
    let mut conn = std::pin::pin!(conn);
    let mut tick = tokio::time::interval(
        (timeouts.keep_alive / 4).clamp(Duration::from_millis(10), Duration::from_secs(1)),
    );
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut closing = false;
    loop {
        tokio::select! {
            // A timed-out or broken connection is the client's problem: nothing to report.
            _ = conn.as_mut() => break,
            _ = close.wait_for(|&c| c), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = tick.tick(), if !closing => {
                if activity.idle_for().is_some_and(|d| d >= timeouts.keep_alive) {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// Waits after an accept error: a full file table (EMFILE) would otherwise spin the loop.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::*;
    if !matches!(e.kind(), ConnectionAborted | ConnectionReset | Interrupted) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Serves `router` on `listener` until `shutdown`, then drains.
pub async fn run(
    listener: tokio::net::TcpListener,
    router: Router,
    gate: Arc<Gate>,
    timeouts: Timeouts,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    let (close_tx, close_rx) = watch::channel(false);
    let spawn = |stream: TcpStream| {
        tokio::spawn(connection(
            stream,
            router.clone(),
            gate.clone(),
            timeouts,
            close_rx.clone(),
        ));
    };
    let mut stop = shutdown.subscribe();
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => spawn(stream),
                Err(e) => accept_failed(e).await,
            },
            _ = stop.wait_for(|&level| level >= Shutdown::DRAIN) => break,
        }
    }
    gate.draining.store(true, Ordering::SeqCst);
    let deadline = tokio::time::Instant::now() + timeouts.drain;
    let mut poll = tokio::time::interval(Duration::from_millis(20));
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => spawn(stream),
                Err(e) => accept_failed(e).await,
            },
            now = poll.tick() => {
                if gate.in_flight.load(Ordering::SeqCst) == 0
                    || now >= deadline
                    || *stop.borrow() >= Shutdown::NOW
                {
                    break;
                }
            }
        }
    }
    drop(listener);
    // Idle connections close now, busy ones after their response: a finished response's last
    // bytes may still be in hyper's buffer. Past a second they are cut.
    let _ = close_tx.send(true);
    drop(close_rx);
    let _ = tokio::time::timeout(Duration::from_secs(1), close_tx.closed()).await;
    Ok(())
}

/// A thread that starts the drain on the first SIGTERM or SIGINT and ends it at once on a
/// second one. Registered before this returns, so no signal is missed once serving starts.
#[cfg(unix)]
pub fn drain_on_signals(shutdown: Shutdown) -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let (mut term, mut int) = {
        let _guard = rt.enter();
        (
            signal(SignalKind::terminate())?,
            signal(SignalKind::interrupt())?,
        )
    };
    std::thread::Builder::new()
        .name("qwen-signals".into())
        .spawn(move || {
            rt.block_on(async move {
                for first in [true, false] {
                    let name = tokio::select! {
                        _ = term.recv() => "SIGTERM",
                        _ = int.recv() => "SIGINT",
                    };
                    if first {
                        eprintln!("{name}: draining (new requests get 503; a second signal stops at once)");
                        shutdown.trigger();
                    } else {
                        eprintln!("{name}: stopping now");
                        shutdown.force();
                    }
                }
            })
        })?;
    Ok(())
}

/// Elsewhere Ctrl-C alone starts the drain.
#[cfg(not(unix))]
pub fn drain_on_signals(shutdown: Shutdown) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    std::thread::Builder::new()
        .name("qwen-signals".into())
        .spawn(move || {
            rt.block_on(async move {
                if tokio::signal::ctrl_c().await.is_ok() {
                    shutdown.trigger();
                }
            })
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(auth).unwrap());
        h
    }

    #[test]
    fn bearer_keys_are_checked() {
        let key = ApiKey::new("sk-123").unwrap();
        assert!(key.check(&headers("Bearer sk-123")).is_ok());
        assert!(key.check(&headers("bearer sk-123")).is_ok());
        for wrong in [
            "Bearer sk-124",
            "Bearer sk-1234",
            "Basic sk-123",
            "sk-123",
            "Bearer ",
        ] {
            let e = key.check(&headers(wrong)).unwrap_err();
            assert_eq!((e.status, e.code), (401, "invalid_api_key"), "{wrong}");
        }
        assert!(key.check(&HeaderMap::new()).is_err());
        assert!(ApiKey::new("").is_err());
        assert!(ApiKey::new("a b").is_err());
        assert_eq!(format!("{key:?}"), "ApiKey(..)");
    }

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(constant_time_eq(b"", b""));
    }
}
