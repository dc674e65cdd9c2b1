//! The chat page at `GET /` (runtime/src/serve/page/): served with its content types and a
//! same-origin Content-Security-Policy, reachable without the API key while the API still
//! needs it, and free of anything the policy would block (inline code, other origins) or
//! that would let model output become markup (`innerHTML`). The page in a browser is
//! tested by tests/chat_page_browser.rs.

use std::sync::Arc;
use std::time::Duration;

use qwenc_runtime::serve::client::{self, request_bytes, send_raw};
use qwenc_runtime::serve::{ApiKey, RunningServer, ServeConfig};
use qwenc_runtime::testing::FakeModel;

const T: Duration = Duration::from_secs(30);
const KEY: &str = "sk-page-test";

fn server_with_key() -> RunningServer {
    let config = ServeConfig {
        api_key: Some(ApiKey::new(KEY).unwrap()),
        ..ServeConfig::default()
    };
    RunningServer::start(Arc::new(FakeModel::new()), config).unwrap()
}

#[test]
fn the_page_is_served_without_the_key_with_its_types_and_policy() {
    let server = server_with_key();
    let addr = server.addr;
    for (path, content_type, needle) in [
        ("/", "text/html; charset=utf-8", "<textarea id=\"message\""),
        (
            "/chat.js",
            "text/javascript; charset=utf-8",
            "/v1/chat/completions",
        ),
        ("/chat.css", "text/css; charset=utf-8", "#conversation"),
    ] {
        let r = client::get(addr, path, T).unwrap();
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(r.header("content-type"), Some(content_type), "{path}");
        assert!(r.text().contains(needle), "{path}");
        let csp = r.header("content-security-policy").unwrap_or_default();
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "connect-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(directive), "{path}: {csp}");
        }
        assert!(!csp.contains("unsafe"), "{path}: {csp}");
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    }

    // Opening the page opened nothing else: the API and /metrics still need the key.
    for path in ["/v1/models", "/metrics", "/index.html", "/chat.json"] {
        let r = client::get(addr, path, T).unwrap();
        assert_eq!(r.status, 401, "{path}: {}", r.text());
    }
    let with_key = request_bytes("GET", "/v1/models", None);
    let head_end = with_key.windows(2).position(|w| w == b"\r\n").unwrap() + 2;
    let mut raw = with_key[..head_end].to_vec();
    raw.extend_from_slice(format!("Authorization: Bearer {KEY}\r\n").as_bytes());
    raw.extend_from_slice(&with_key[head_end..]);
    assert_eq!(send_raw(addr, &raw, T).unwrap().status, 200);
    // Only GET (and HEAD): a POST to the page is a 405, after the gate let it through.
    let r = send_raw(addr, &request_bytes("POST", "/", Some(b"{}")), T).unwrap();
    assert_eq!(r.status, 405, "{}", r.text());
}

#[test]
fn the_page_loads_nothing_the_policy_would_block() {
    let server = RunningServer::start(Arc::new(FakeModel::new()), ServeConfig::default()).unwrap();
    let get = |path: &str| client::get(server.addr, path, T).unwrap().text();
    let html = get("/");
    let js = get("/chat.js");
    let lower = html.to_ascii_lowercase();
    // Every script has a src, no element has a style attribute or an on* handler.
    assert_eq!(
        lower.matches("<script").count(),
        lower.matches("<script src=\"/").count(),
        "{html}"
    );
    assert!(!lower.contains("<style"), "inline stylesheet");
    assert!(!lower.contains(" style="), "style attribute");
    let handler = lower
        .split(|c: char| c.is_ascii_whitespace())
        .find(|w| w.starts_with("on") && w.contains('='));
    assert_eq!(handler, None, "inline event handler");
    // Same origin only: no absolute URLs (no CDN, fonts or scripts from elsewhere).
    for (name, text) in [("html", &html), ("js", &js), ("css", &get("/chat.css"))] {
        assert!(!text.contains("http://"), "{name}");
        assert!(!text.contains("https://"), "{name}");
        assert!(!text.contains("//cdn"), "{name}");
    }
    // Text goes in with textContent only.
    for sink in [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
    ] {
        assert!(!js.contains(sink), "{sink} in chat.js");
    }
    assert!(js.contains("textContent"));
    // The pieces the page is made of.
    for id in [
        "id=\"conversation\"",
        "aria-live=\"polite\"",
        "id=\"system\"",
        "id=\"temperature\"",
        "id=\"max-tokens\"",
        "id=\"send\"",
        "id=\"stop\"",
        "id=\"new-chat\"",
        "id=\"api-key\"",
        "name=\"viewport\"",
    ] {
        assert!(html.contains(id), "{id} not in the page");
    }
    for (id, label) in [
        ("system", "for=\"system\""),
        ("temperature", "for=\"temperature\""),
        ("max-tokens", "for=\"max-tokens\""),
        ("message", "for=\"message\""),
        ("api-key", "for=\"api-key\""),
    ] {
        assert!(html.contains(label), "no label for {id}");
    }
    // Page loads are counted under their own routes.
    let metrics = get("/metrics");
    assert!(
        metrics.contains("qwen_requests_total{route=\"/\",status=\"200\"} 1"),
        "{metrics}"
    );
}
