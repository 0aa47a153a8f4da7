//! What the fake API server's conformance tests share: a started server and its client,
//! the objects they write, and the errors they expect.
#![allow(dead_code)] // each test file uses its own part

use std::fmt::Debug;

use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use kube::core::Status;
use secretsync_testkit::FakeApiServer;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// A started fake API server and a client of it.
pub async fn setup() -> (FakeApiServer, Client) {
    let server = FakeApiServer::start().await.expect("start fake");
    let client = server.client().await.expect("client");
    (server, client)
}

/// An empty Secret `name` with `labels`.
pub fn secret(name: &str, labels: &[(&str, &str)]) -> Secret {
    let mut s = Secret::default();
    s.metadata.name = Some(name.into());
    s.metadata.labels = Some(
        labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    s
}

/// The API status a request failed with.
pub fn api_err(e: kube::Error) -> Status {
    match e {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// Merge-patches object `name` with `body` (no field manager); the object as patched.
pub async fn merge<K>(api: &Api<K>, name: &str, body: Value) -> K
where
    K: Clone + DeserializeOwned + Debug,
{
    api.patch(name, &PatchParams::default(), &Patch::Merge(body))
        .await
        .unwrap()
}
