//! Bearer tokens and their scopes, and who may do what: every permission the routes ask for is
//! an extractor here, so the whole access policy reads in one place (Customer.io deliveries carry
//! no token: their signature is checked over the raw body, `App::verify_customerio`). Tokens are
//! kept only as SHA-256 digests and compared in constant time; they are never logged.

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::AppState;
use super::error::ApiError;
use crate::app::signals::ALERTMANAGER;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Everything, including every other scope's routes.
    Admin,
    /// Evaluations, when read tokens are configured.
    Read,
    /// Pushing guard metrics.
    Metrics,
    /// Posting alerts.
    Alerts,
}

struct Token {
    name: String,
    digest: [u8; 32],
    scope: Scope,
}

/// The configured tokens.
pub struct Auth {
    tokens: Vec<Token>,
    read_required: bool,
}

/// Who made a request.
#[derive(Debug, Clone)]
pub struct Principal {
    pub name: String,
    pub scope: Scope,
}

fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

impl Auth {
    /// `tokens` are `(scope, name, secret)`; evaluations need a token only when a read token exists.
    pub fn new(tokens: impl IntoIterator<Item = (Scope, String, String)>) -> Self {
        let tokens: Vec<Token> = tokens
            .into_iter()
            .map(|(scope, name, secret)| Token { name, digest: digest(secret.as_bytes()), scope })
            .collect();
        let read_required = tokens.iter().any(|t| t.scope == Scope::Read);
        Self { tokens, read_required }
    }

    pub fn read_required(&self) -> bool {
        self.read_required
    }

    /// Finds the token presented in `Authorization: Bearer` or `X-API-Key`.
    pub fn identify(&self, headers: &HeaderMap) -> Option<Principal> {
        let presented = bearer(headers)?;
        let presented = digest(presented.as_bytes());
        // Compare against every token, always, so timing says nothing about which one matched.
        let mut found = None;
        for token in &self.tokens {
            if bool::from(token.digest.ct_eq(&presented)) && found.is_none() {
                found = Some(Principal { name: token.name.clone(), scope: token.scope });
            }
        }
        found
    }

    /// The principal if its token may act in one of `scopes` (admin always may); 401 or 403 otherwise.
    pub fn require(&self, headers: &HeaderMap, scopes: &[Scope], what: &'static str) -> Result<Principal, ApiError> {
        let principal = self.identify(headers).ok_or(ApiError::Unauthorized)?;
        if principal.scope == Scope::Admin || scopes.contains(&principal.scope) {
            Ok(principal)
        } else {
            Err(ApiError::Forbidden(what))
        }
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    if let Some(value) = headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let (scheme, token) = value.split_once(' ')?;
        return scheme.eq_ignore_ascii_case("bearer").then(|| token.trim());
    }
    headers.get("x-api-key").and_then(|v| v.to_str().ok()).map(str::trim)
}

// Who may do what. Every permission is an extractor a handler takes; admin tokens pass them all.

/// An operator with an admin token; the audit actor is `operator:<token name>`.
pub struct Admin(pub Principal);

impl Admin {
    pub fn actor(&self) -> String {
        format!("operator:{}", self.0.name)
    }
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        state.auth.require(&parts.headers, &[], "change or read rollout state").map(Admin)
    }
}

/// A caller allowed to evaluate flags: anyone, unless read tokens are configured.
pub struct Reader;

impl FromRequestParts<AppState> for Reader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if state.auth.read_required() {
            state.auth.require(&parts.headers, &[Scope::Read], "evaluate flags")?;
        }
        Ok(Reader)
    }
}

/// An alert sender: an alerts or admin token. A refused one is counted as a rejected
/// Alertmanager payload, so `/debug/signals` shows a misconfigured token.
pub struct AlertSender;

impl FromRequestParts<AppState> for AlertSender {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let result = state.auth.require(&parts.headers, &[Scope::Alerts], "post alerts");
        if let Err(e) = &result {
            state.app.signal_refused(ALERTMANAGER, e.code());
        }
        result.map(|_| AlertSender)
    }
}

/// A permission that only takes a token of one of `scopes` (or an admin token).
macro_rules! permission {
    ($(#[$doc:meta])* $name:ident: [$($scope:ident),+], $what:literal) => {
        $(#[$doc])*
        pub struct $name;

        impl FromRequestParts<AppState> for $name {
            type Rejection = ApiError;

            async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
                state.auth.require(&parts.headers, &[$(Scope::$scope),+], $what).map(|_| $name)
            }
        }
    };
}

permission!(
    /// Reads the deletion audit, with a read token even where evaluations are open: it names
    /// operators and their reasons.
    AuditReader: [Read], "read the deletion audit"
);
permission!(
    /// Sees how users are bucketed (the salt included), with a read token even where evaluations
    /// are open.
    Explainer: [Read], "explain evaluations"
);
permission!(
    /// Pushes guard metrics.
    MetricsWriter: [Metrics], "push metrics"
);
permission!(
    /// Reads guard health and this replica's metrics (which name every flag).
    HealthReader: [Metrics, Read], "read guard health"
);

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("authorization", auth.parse().expect("ascii"));
        h
    }

    #[test]
    fn tokens_are_matched_by_value_and_scope() {
        let auth =
            Auth::new([(Scope::Admin, "ann".into(), "s3cret".into()), (Scope::Read, "app".into(), "r3ad".into())]);
        assert_eq!(auth.identify(&headers("Bearer s3cret")).map(|p| p.name), Some("ann".into()));
        assert_eq!(auth.identify(&headers("bearer r3ad")).map(|p| p.scope), Some(Scope::Read));
        assert!(auth.identify(&headers("Bearer s3cre")).is_none());
        assert!(auth.identify(&headers("Basic s3cret")).is_none());
        assert!(matches!(auth.require(&headers("Bearer r3ad"), &[], "x"), Err(ApiError::Forbidden(_))));
        assert!(matches!(auth.require(&headers("Bearer nope"), &[], "x"), Err(ApiError::Unauthorized)));
        let mut h = HeaderMap::new();
        h.insert("x-api-key", "r3ad".parse().expect("ascii"));
        assert_eq!(auth.identify(&h).map(|p| p.name), Some("app".into()));
        assert!(auth.read_required());
    }
}
