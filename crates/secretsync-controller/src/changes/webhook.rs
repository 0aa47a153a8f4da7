//! `POST /v1/refresh` (`run --webhook-addr`): a signed request names a source and remote
//! keys; the leader's bindings reading them read again now.
//!
//! The body is `{"source": "NAMESPACE/NAME" | "cluster/NAME", "keys": ["db/creds", …]}`
//! (keys as bindings name them in `remoteRef.key`), signed in header
//! `X-Secretsync-Signature: sha256=<hex HMAC-SHA256 of the body>` with the key stored
//! under `key` in the `--webhook-secret` Secret. The key is watched, so a rotated key takes
//! effect (and the old one stops working) within seconds. Checks run in an order that
//! tells an unsigned caller nothing: size, signature, body, leadership, source. The body
//! is never logged.

use std::sync::{Arc, RwLock};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures::StreamExt;
use hmac::{Hmac, Mac};
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::watcher;
use kube::{Api, Client};
use serde::Deserialize;
use sha2::Sha256;
use zeroize::Zeroizing;

use super::{EventOrigin, EventResult, Leadership, refresh_keys};
use crate::metrics::Metrics;
use crate::runtime::ObjKey;

/// Largest accepted body.
pub const MAX_BODY: usize = 64 * 1024;
/// Most keys in one request.
pub const MAX_KEYS: usize = 1000;
/// Shortest accepted key (bytes, after trimming whitespace).
pub const MIN_KEY_LEN: usize = 16;
/// Header carrying the signature.
pub const SIGNATURE_HEADER: &str = "x-secretsync-signature";
/// The key's entry in the webhook Secret.
pub const SECRET_KEY: &str = "key";

/// Where the webhook key lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySecret {
    /// Namespace of the Secret.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

/// The signing key as last read (`None`: Secret or entry missing or unusable).
#[derive(Default)]
pub struct SigningKey(RwLock<Option<Arc<Zeroizing<Vec<u8>>>>>);

impl SigningKey {
    fn get(&self) -> Option<Arc<Zeroizing<Vec<u8>>>> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set(&self, key: Option<Zeroizing<Vec<u8>>>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = key.map(Arc::new);
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(..)")
    }
}

/// Why a stored key is not used (never quotes it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyProblem {
    /// The Secret has no `key` entry.
    #[error("the Secret has no {SECRET_KEY:?} entry")]
    Missing,
    /// The entry is too short to be a key.
    #[error("the {SECRET_KEY:?} entry is shorter than {MIN_KEY_LEN} bytes")]
    TooShort,
}

/// The signing key in a Secret: entry `key`, surrounding whitespace dropped (a key written
/// with `echo` or an editor ends in a newline that `openssl dgst -hmac` would not use).
pub fn key_of_secret(secret: &Secret) -> Result<Zeroizing<Vec<u8>>, KeyProblem> {
    let raw = secret
        .data
        .as_ref()
        .and_then(|d| d.get(SECRET_KEY))
        .ok_or(KeyProblem::Missing)?;
    let bytes = raw.0.trim_ascii();
    if bytes.len() < MIN_KEY_LEN {
        return Err(KeyProblem::TooShort);
    }
    Ok(Zeroizing::new(bytes.to_vec()))
}

/// Whether `header` (`sha256=<hex>`) is the HMAC-SHA256 of `body` under `key`, compared in
/// constant time.
pub fn signature_valid(key: &[u8], body: &[u8], header: Option<&str>) -> bool {
    let Some(hex_sig) = header.and_then(|h| h.trim().strip_prefix("sha256=")) else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig.trim()) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

/// A refresh request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    /// `NAMESPACE/NAME` of a SecretSource, or `cluster/NAME` of a ClusterSecretSource.
    pub source: String,
    /// Remote keys as bindings name them.
    pub keys: Vec<String>,
}

/// A parsed and checked request: the source's key and the remote keys.
#[derive(Debug, PartialEq, Eq)]
pub struct Refresh {
    /// Source key (empty namespace: a ClusterSecretSource).
    pub source: ObjKey,
    /// Remote keys, deduplicated.
    pub keys: Vec<String>,
}

/// Reads a body into a [`Refresh`]; the error names the field at fault.
pub fn parse_request(body: &[u8]) -> Result<Refresh, String> {
    let req: RefreshRequest = serde_json::from_slice(body).map_err(|e| {
        // serde's message names fields and types, never the values of this body's
        // strings, but its position is all a caller needs.
        format!(
            "body is not a refresh request ({{\"source\", \"keys\"}}) at line {} column {}",
            e.line(),
            e.column()
        )
    })?;
    let source = match req.source.split_once('/') {
        Some(("cluster", name)) if !name.is_empty() && !name.contains('/') => ObjKey::new("", name),
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            ObjKey::new(ns, name)
        }
        _ => return Err("source: expected NAMESPACE/NAME or cluster/NAME".into()),
    };
    if req.keys.is_empty() {
        return Err("keys: at least one remote key is needed".into());
    }
    if req.keys.len() > MAX_KEYS {
        return Err(format!("keys: at most {MAX_KEYS} keys per request"));
    }
    if req.keys.iter().any(|k| k.is_empty()) {
        return Err("keys: a key is empty".into());
    }
    let mut keys = req.keys;
    keys.sort();
    keys.dedup();
    Ok(Refresh { source, keys })
}

/// What the handler needs.
pub struct WebhookState {
    /// The signing key.
    pub key: Arc<SigningKey>,
    /// The leading term, if this process leads.
    pub leadership: Arc<Leadership>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
}

impl WebhookState {
    fn answer(&self, result: EventResult, status: StatusCode, message: &str) -> Response {
        self.metrics.event(EventOrigin::Webhook, result);
        let body = serde_json::json!({"result": result.as_str(), "message": message});
        json_response(status, &body)
    }
}

async fn refresh(
    State(s): State<Arc<WebhookState>>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            let msg = format!("body over {MAX_BODY} bytes");
            return s.answer(EventResult::TooLarge, StatusCode::PAYLOAD_TOO_LARGE, &msg);
        }
        Err(_) => {
            return s.answer(
                EventResult::BadRequest,
                StatusCode::BAD_REQUEST,
                "unreadable body",
            );
        }
    };
    let Some(key) = s.key.get() else {
        return s.answer(
            EventResult::Unconfigured,
            StatusCode::SERVICE_UNAVAILABLE,
            "the webhook key Secret is missing or unusable (see the operator log)",
        );
    };
    let header = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
    if !signature_valid(&key, &body, header) {
        return s.answer(
            EventResult::Unauthorized,
            StatusCode::UNAUTHORIZED,
            "missing or wrong X-Secretsync-Signature",
        );
    }
    let req = match parse_request(&body) {
        Ok(r) => r,
        Err(m) => return s.answer(EventResult::BadRequest, StatusCode::BAD_REQUEST, &m),
    };
    let Some(ctx) = s.leadership.current() else {
        let mut r = s.answer(
            EventResult::NotLeader,
            StatusCode::SERVICE_UNAVAILABLE,
            "not the leader (or not synced yet); retry",
        );
        // The Service spreads calls over every replica: the next try may reach the leader.
        r.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from_static("1"),
        );
        return r;
    };
    let known = if req.source.namespace.is_empty() {
        ctx.cluster_sources.get(&req.source).is_some()
    } else {
        ctx.sources.get(&req.source).is_some()
    };
    if !known {
        return s.answer(
            EventResult::UnknownSource,
            StatusCode::NOT_FOUND,
            "no such source",
        );
    }
    let ticket = refresh_keys(&ctx, &req.source, &req.keys).await;
    tracing::info!(source = %req.source, keys = req.keys.len(), bindings = ticket.len(), "webhook: reading changed keys again");
    s.metrics.event(EventOrigin::Webhook, EventResult::Accepted);
    let body = serde_json::json!({"result": "accepted", "bindings": ticket.len()});
    json_response(StatusCode::ACCEPTED, &body)
}

fn json_response(status: StatusCode, body: &serde_json::Value) -> Response {
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// The webhook router.
pub fn router(state: Arc<WebhookState>) -> Router {
    Router::new()
        .route("/v1/refresh", post(refresh))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// Where the operator's own pod is, so the leader can label it for the webhook Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnPod {
    /// Its namespace (the operator namespace).
    pub namespace: String,
    /// Its name (`POD_NAME`).
    pub name: String,
}

/// Puts (`leading`) or removes the leader label on the operator's own pod, so the webhook
/// Service selects the leader only. Best effort: without it, calls that reach a standby
/// get 503 and are retried.
pub async fn mark_leader(client: &Client, pod: &OwnPod, leading: bool) {
    use k8s_openapi::api::core::v1::Pod;
    let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace);
    let value = if leading {
        serde_json::Value::from("true")
    } else {
        serde_json::Value::Null
    };
    let patch = serde_json::json!({"metadata": {"labels": {secretsync_api::LABEL_LEADER: value}}});
    let pp = kube::api::PatchParams::default();
    match api
        .patch(&pod.name, &pp, &kube::api::Patch::Merge(&patch))
        .await
    {
        Ok(_) => tracing::debug!(pod = %pod.name, leading, "webhook: leader label updated"),
        // Not running in that pod (a local run): nothing to route.
        Err(kube::Error::Api(e)) if e.code == 404 => {
            tracing::debug!(pod = %pod.name, "webhook: own pod not found; not labelling it")
        }
        Err(e) => {
            tracing::warn!(pod = %pod.name, leading, error = %e, "webhook: labelling the own pod failed; calls reaching a standby get 503 until it works")
        }
    }
}

/// Keeps `key` equal to the Secret's entry, watching that one Secret until the task is
/// dropped. Problems are logged once each time they change, without the key.
pub async fn watch_key(client: Client, at: KeySecret, key: Arc<SigningKey>) {
    let api: Api<Secret> = Api::namespaced(client, &at.namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={}", at.name));
    let mut said: Option<String> = None;
    let mut say = |what: String, warn: bool| {
        if said.as_deref() != Some(what.as_str()) {
            if warn {
                tracing::warn!(secret = %at.name, namespace = %at.namespace, problem = %what, "webhook key unusable; POST /v1/refresh answers 503");
            } else {
                tracing::info!(secret = %at.name, namespace = %at.namespace, "webhook key loaded");
            }
            said = Some(what);
        }
    };
    let mut stream = watcher::watcher(api, config).boxed();
    let mut failures = 0u32;
    while let Some(ev) = stream.next().await {
        let secret = match ev {
            Ok(watcher::Event::Apply(s) | watcher::Event::InitApply(s)) => Some(s),
            Ok(watcher::Event::Delete(_)) => None,
            Ok(watcher::Event::Init) => continue,
            Ok(watcher::Event::InitDone) => {
                // A list without the Secret: it does not exist (yet).
                if key.get().is_none() {
                    say("the Secret does not exist".into(), true);
                }
                continue;
            }
            Err(e) => {
                failures += 1;
                // The watch carries the key Secret's data: a parse error is not quoted.
                let e = crate::runtime::watch::shown(&e);
                // Until it works the webhook answers 503: say why once, at warn.
                if failures == 1 {
                    tracing::warn!(secret = %at.name, namespace = %at.namespace, error = %e, "watching the webhook key failed; retrying (POST /v1/refresh answers 503 until the key is read)");
                } else {
                    tracing::debug!(secret = %at.name, error = %e, "watching the webhook key failed again");
                }
                tokio::time::sleep(crate::runtime::backoff::watch_retry(failures, 0.5)).await;
                continue;
            }
        };
        failures = 0;
        match secret.as_ref().map(key_of_secret) {
            Some(Ok(k)) => {
                key.set(Some(k));
                say("ok".into(), false);
            }
            Some(Err(p)) => {
                key.set(None);
                say(p.to_string(), true);
            }
            None => {
                key.set(None);
                say("the Secret was deleted".into(), true);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    fn sign(key: &[u8], body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
        mac.update(body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    }

    #[test]
    fn signatures() {
        let key = b"0123456789abcdef0123";
        let body = br#"{"source":"shop/vault","keys":["db"]}"#;
        let good = sign(key, body);
        assert!(signature_valid(key, body, Some(&good)));
        assert!(signature_valid(
            key,
            body,
            Some(&good.to_uppercase().replace("SHA256=", "sha256="))
        ));
        assert!(!signature_valid(key, b"{}", Some(&good)), "other body");
        assert!(
            !signature_valid(b"another-key-of-16b", body, Some(&good)),
            "other key"
        );
        assert!(!signature_valid(key, body, None));
        assert!(
            !signature_valid(key, body, Some(good.trim_start_matches("sha256="))),
            "no scheme"
        );
        assert!(!signature_valid(key, body, Some("sha256=zz")));
        assert!(
            !signature_valid(key, body, Some(&good[..good.len() - 2])),
            "truncated"
        );
    }

    #[test]
    fn requests_parse_with_field_names_in_errors() {
        let r = parse_request(br#"{"source":"shop/vault","keys":["b","a","b"]}"#).unwrap();
        assert_eq!(r.source, ObjKey::new("shop", "vault"));
        assert_eq!(r.keys, vec!["a", "b"]);
        let c = parse_request(br#"{"source":"cluster/shared","keys":["a"]}"#).unwrap();
        assert_eq!(c.source, ObjKey::new("", "shared"));
        for (body, field) in [
            (&br#"{"source":"shop","keys":["a"]}"#[..], "source"),
            (br#"{"source":"a/b/c","keys":["a"]}"#, "source"),
            (br#"{"source":"shop/v","keys":[]}"#, "keys"),
            (br#"{"source":"shop/v","keys":[""]}"#, "keys"),
            (br#"{"source":"shop/v"}"#, "refresh request"),
            (
                br#"{"source":"shop/v","keys":["a"],"extra":1}"#,
                "refresh request",
            ),
            (br#"hunter2"#, "refresh request"),
        ] {
            let e = parse_request(body).unwrap_err();
            assert!(e.contains(field), "{e}");
            assert!(!e.contains("hunter2"), "{e}");
        }
    }

    #[test]
    fn keys_come_from_the_secret_trimmed() {
        let secret = |v: &[u8]| Secret {
            data: Some([(SECRET_KEY.to_string(), ByteString(v.to_vec()))].into()),
            ..Secret::default()
        };
        assert_eq!(
            key_of_secret(&secret(b"0123456789abcdef\n"))
                .unwrap()
                .as_slice(),
            b"0123456789abcdef"
        );
        assert_eq!(
            key_of_secret(&secret(b"short")).unwrap_err(),
            KeyProblem::TooShort
        );
        assert_eq!(
            key_of_secret(&Secret::default()).unwrap_err(),
            KeyProblem::Missing
        );
        let k = SigningKey::default();
        k.set(Some(Zeroizing::new(b"0123456789abcdef".to_vec())));
        assert!(!format!("{k:?}").contains("0123"));
    }
}
