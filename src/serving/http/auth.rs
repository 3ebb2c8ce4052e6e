//! The bearer token (`serving.token`): every endpoint but `/health` requires
//! `Authorization: Bearer <token>` (scheme matched case-insensitively, RFC 7235), or
//! `?access_token=<token>` (percent-decoded) for the browser's EventSource. Tokens are
//! compared in constant time.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::AppState;
use super::error::ApiError;

fn same(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

/// The token of an `Authorization` header value, if it uses the Bearer scheme.
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The middleware.
pub(super) async fn authorize(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let Some(token) = st.pipeline.config.serving.token.as_deref() else {
        return next.run(req).await;
    };
    if req.uri().path() == "/health" {
        return next.run(req).await;
    }
    let header_ok = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer)
        .is_some_and(|t| same(t, token));
    let query_ok = req.uri().query().is_some_and(|q| {
        form_urlencoded::parse(q.as_bytes()).any(|(k, v)| k == "access_token" && same(&v, token))
    });
    if header_ok || query_ok {
        return next.run(req).await;
    }
    let mut resp = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "this endpoint requires `Authorization: Bearer <serving.token>`",
    )
    .into_response();
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scheme_is_case_insensitive_and_tokens_compare_whole() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer abc"), Some("abc"));
        assert_eq!(bearer("BEARER  a+b/c="), Some("a+b/c="));
        assert_eq!(bearer("Basic abc"), None);
        assert!(same("a+b/c=", "a+b/c="));
        assert!(!same("abc", "abcd"));
    }
}
