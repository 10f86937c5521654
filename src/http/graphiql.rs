//! GraphiQL, served from the binary: React, ReactDOM and GraphiQL's production builds at pinned
//! versions (`assets/graphiql/`, rebuilt by its `fetch.sh`), gzipped, under a
//! Content-Security-Policy that allows only this origin, so the page works without internet
//! and loads nothing from elsewhere on the one page where a user pastes a token.

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Where the assets are served; the version in the path lets browsers cache them for good.
pub const ASSETS: &str = "/graphiql/3.8.3";

/// Fonts and icons are `data:` URIs inside GraphiQL's stylesheet; nothing else leaves 'self'.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
    font-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const PAGE: &str = concat!(
    "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>bankgraph GraphiQL</title>",
    "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
    "<link rel=\"stylesheet\" href=\"/graphiql/3.8.3/graphiql.min.css\">",
    "<link rel=\"stylesheet\" href=\"/graphiql/3.8.3/page.css\"></head>",
    "<body><div id=\"graphiql\">Loading GraphiQL…</div>",
    "<script src=\"/graphiql/3.8.3/react.production.min.js\"></script>",
    "<script src=\"/graphiql/3.8.3/react-dom.production.min.js\"></script>",
    "<script src=\"/graphiql/3.8.3/graphiql.min.js\"></script>",
    "<script src=\"/graphiql/3.8.3/init.js\"></script></body></html>"
);

const PAGE_CSS: &str = "html, body, #graphiql { height: 100%; margin: 0; }\n";

/// The GraphiQL page.
pub fn page() -> Response {
    let mut r = ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    r
}

enum Body {
    Gzipped(&'static [u8]),
    Plain(&'static str),
}

fn asset(name: &str) -> Option<(&'static str, Body)> {
    const JS: &str = "text/javascript; charset=utf-8";
    const CSS: &str = "text/css; charset=utf-8";
    Some(match name {
        "react.production.min.js" => {
            (JS, Body::Gzipped(include_bytes!("../../assets/graphiql/react.production.min.js.gz")))
        }
        "react-dom.production.min.js" => {
            (JS, Body::Gzipped(include_bytes!("../../assets/graphiql/react-dom.production.min.js.gz")))
        }
        "graphiql.min.js" => (JS, Body::Gzipped(include_bytes!("../../assets/graphiql/graphiql.min.js.gz"))),
        "graphiql.min.css" => (CSS, Body::Gzipped(include_bytes!("../../assets/graphiql/graphiql.min.css.gz"))),
        "init.js" => (JS, Body::Plain(include_str!("../../assets/graphiql/init.js"))),
        "page.css" => (CSS, Body::Plain(PAGE_CSS)),
        _ => return None,
    })
}

/// `GET /graphiql/3.8.3/{file}`: gzipped to clients that accept it (every browser), inflated
/// for the rest.
pub async fn serve_asset(Path(name): Path<String>, headers: HeaderMap) -> Response {
    let Some((content_type, body)) = asset(&name) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let gzip_ok = headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|e| e.split(';').next().is_some_and(|e| e.trim().eq_ignore_ascii_case("gzip")));
    let mut r = match body {
        Body::Plain(text) => text.into_response(),
        Body::Gzipped(bytes) if gzip_ok => {
            let mut r = bytes.into_response();
            r.headers_mut().insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            r
        }
        Body::Gzipped(bytes) => {
            use std::io::Read;
            let mut out = Vec::new();
            if flate2::read::GzDecoder::new(bytes).read_to_end(&mut out).is_err() {
                return StatusCode::INTERNAL_SERVER_ERROR.into_response();
            }
            out.into_response()
        }
    };
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=86400"));
    r
}
