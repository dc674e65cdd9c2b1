//! `GET /`: a small chat page for a person who opens the server in a browser. Three static
//! files embedded in the executable (`page/`): the HTML, its script and its stylesheet. The
//! page holds no secret, so these routes are open without the API key (like `/health`); the
//! page asks for the key when the API answers 401 and sends it on its own requests.
//!
//! The script and the stylesheet are their own routes rather than inline, so that the
//! Content-Security-Policy allows no inline code at all (`'self'` only, no `'unsafe-inline'`):
//! even if model output reached the DOM as markup (the page inserts it with `textContent`,
//! so it does not), no script or style in it would run.

use axum::http::header;
use axum::response::{IntoResponse, Response};

const HTML: &str = include_str!("page/chat.html");
const JS: &str = include_str!("page/chat.js");
const CSS: &str = include_str!("page/chat.css");

/// Same origin only: the page's own script, stylesheet and API calls; no frames, plugins,
/// inline code, or form submissions elsewhere.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// The paths served here; the gate lets them through without the API key.
pub const PATHS: &[&str] = &["/", "/chat.js", "/chat.css"];

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            // Revalidated each time, so a rebuilt executable's page is never mixed with an
            // old cached script.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

pub async fn index() -> Response {
    asset("text/html; charset=utf-8", HTML)
}

pub async fn script() -> Response {
    asset("text/javascript; charset=utf-8", JS)
}

pub async fn stylesheet() -> Response {
    asset("text/css; charset=utf-8", CSS)
}
