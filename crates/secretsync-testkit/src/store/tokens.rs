//! Service-account tokens: the TokenRequest subresource issues them, TokenReview and the
//! authenticator check them (expiry, and that the service account still exists).

use base64::Engine;
use serde_json::{Value, json};

use super::Inner;
use crate::status::{ApiError, Cause};
use crate::util::{meta_str, new_uid, string_list};

/// A token issued through the TokenRequest endpoint.
#[derive(Debug, Clone)]
pub(crate) struct IssuedToken {
    pub namespace: String,
    pub name: String,
    pub sa_uid: String,
    pub audiences: Vec<String>,
    pub expires: i64,
}

/// Default audience of issued tokens.
pub const DEFAULT_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";

impl Inner {
    /// TokenRequest for a service account.
    pub fn token_request(&mut self, ns: &str, name: &str, body: &Value) -> Result<Value, ApiError> {
        let def = self
            .find("", "v1", "serviceaccounts")
            .ok_or_else(|| ApiError::internal("serviceaccounts not registered"))?;
        let sa = self
            .get(&def, Some(ns), name)
            .ok_or_else(|| ApiError::not_found("", "serviceaccounts", name))?;
        let sa_uid = meta_str(sa, "uid").unwrap_or_default().to_owned();
        let spec = body.get("spec").cloned().unwrap_or_else(|| json!({}));
        let mut audiences = string_list(&spec, "audiences");
        if audiences.is_empty() {
            audiences = vec![DEFAULT_AUDIENCE.to_owned()];
        }
        let exp_secs = spec
            .get("expirationSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(3600);
        if exp_secs < 600 {
            return Err(ApiError::invalid(
                "authentication.k8s.io",
                "TokenRequest",
                name,
                vec![Cause {
                    reason: "FieldValueInvalid".into(),
                    message: "may not specify a duration less than 10 minutes".into(),
                    field: "spec.expirationSeconds".into(),
                }],
            ));
        }
        let now = jiff::Timestamp::now();
        let exp = now.as_second() + exp_secs;
        let b64 =
            |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let header = json!({"alg": "RS256", "kid": "secretsync-fake"});
        let payload = json!({
            "aud": audiences, "exp": exp, "iat": now.as_second(), "nbf": now.as_second(),
            "iss": "https://kubernetes.default.svc.cluster.local",
            "sub": format!("system:serviceaccount:{ns}:{name}"),
            "jti": new_uid(),
            "kubernetes.io": {"namespace": ns, "serviceaccount": {"name": name, "uid": sa_uid}},
        });
        let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(crate::util::random_hex(64).as_bytes());
        let token = format!("{}.{}.{sig}", b64(&header), b64(&payload));
        self.tokens.insert(
            token.clone(),
            IssuedToken {
                namespace: ns.to_owned(),
                name: name.to_owned(),
                sa_uid,
                audiences: audiences.clone(),
                expires: exp,
            },
        );
        let exp_ts = jiff::Timestamp::from_second(exp).unwrap_or(now);
        Ok(json!({
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": name, "namespace": ns, "creationTimestamp": crate::util::format_ts(now)},
            "spec": {"audiences": audiences, "expirationSeconds": exp_secs, "boundObjectRef": spec.get("boundObjectRef").cloned().unwrap_or(Value::Null)},
            "status": {"token": token, "expirationTimestamp": crate::util::format_ts(exp_ts)},
        }))
    }

    /// A token issued by [`Inner::token_request`] that is still good, or why it is not (the
    /// TokenReview error text).
    fn check_token(&self, token: &str) -> Result<&IssuedToken, &'static str> {
        let t = self
            .tokens
            .get(token)
            .ok_or("[invalid bearer token, token lookup failed]")?;
        if t.expires < jiff::Timestamp::now().as_second() {
            return Err("[invalid bearer token, service account token has expired]");
        }
        let sa_alive = self
            .find("", "v1", "serviceaccounts")
            .and_then(|d| self.get(&d, Some(&t.namespace), &t.name))
            .is_some_and(|sa| meta_str(sa, "uid") == Some(t.sa_uid.as_str()));
        if !sa_alive {
            return Err("[invalid bearer token, service account token has been invalidated]");
        }
        Ok(t)
    }

    /// The issued token behind a bearer token, if it is still valid.
    pub fn valid_token(&self, token: &str) -> Option<&IssuedToken> {
        self.check_token(token).ok()
    }

    /// TokenReview of a token issued by [`Inner::token_request`].
    pub fn token_review(&self, body: &Value) -> Value {
        let spec = body.get("spec").cloned().unwrap_or_else(|| json!({}));
        let token = spec
            .get("token")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let wanted = string_list(&spec, "audiences");
        let mut out = json!({
            "kind": "TokenReview",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"creationTimestamp": null},
            "spec": spec,
        });
        let status = match self.check_token(token) {
            Err(error) => json!({"authenticated": false, "user": {}, "error": error}),
            Ok(t) => {
                let audiences: Vec<String> = if wanted.is_empty() {
                    t.audiences.clone()
                } else {
                    wanted
                        .iter()
                        .filter(|a| t.audiences.contains(a))
                        .cloned()
                        .collect()
                };
                if audiences.is_empty() {
                    json!({"authenticated": false, "user": {}, "error": "[invalid bearer token, token audiences is invalid for the target audiences]"})
                } else {
                    json!({
                        "authenticated": true,
                        "user": {
                            "username": format!("system:serviceaccount:{}:{}", t.namespace, t.name),
                            "uid": t.sa_uid,
                            "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{}", t.namespace), "system:authenticated"],
                        },
                        "audiences": audiences,
                    })
                }
            }
        };
        out["status"] = status;
        out
    }
}
