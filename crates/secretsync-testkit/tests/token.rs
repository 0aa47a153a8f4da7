//! TokenRequest and TokenReview.

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenReview};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, DeleteParams, PostParams};
use secretsync_testkit::FakeApiServer;
use serde_json::{Value, json};

/// The review's status as JSON (independent of k8s-openapi's field optionality).
async fn review(client: &kube::Client, token: &str, audiences: Option<Vec<&str>>) -> Value {
    let mut spec = json!({"token": token});
    if let Some(a) = audiences {
        spec["audiences"] = json!(a);
    }
    let tr: TokenReview = serde_json::from_value(json!({"spec": spec})).unwrap();
    let out = Api::<TokenReview>::all(client.clone())
        .create(&PostParams::default(), &tr)
        .await
        .unwrap();
    serde_json::to_value(out).unwrap()["status"].clone()
}

#[tokio::test]
async fn token_request_and_review_round_trip() {
    let server = FakeApiServer::start().await.unwrap();
    let client = server.client().await.unwrap();
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), "shop");
    let mut sa = ServiceAccount::default();
    sa.metadata.name = Some("reader".into());
    sas.create(&PostParams::default(), &sa).await.unwrap();

    let req: TokenRequest =
        serde_json::from_value(json!({"spec": {"audiences": ["vault"], "expirationSeconds": 600}}))
            .unwrap();
    let issued = sas
        .create_token_request("reader", &PostParams::default(), &req)
        .await
        .unwrap();
    let issued = serde_json::to_value(issued).unwrap();
    let token = issued["status"]["token"].as_str().unwrap().to_owned();
    assert_eq!(token.split('.').count(), 3, "JWT-shaped");

    let ok = review(&client, &token, Some(vec!["vault"])).await;
    assert_eq!(ok["authenticated"], true);
    assert_eq!(ok["user"]["username"], "system:serviceaccount:shop:reader");
    let groups = ok["user"]["groups"].as_array().unwrap();
    assert!(groups.contains(&json!("system:serviceaccounts:shop")));
    assert_eq!(ok["audiences"], json!(["vault"]));

    let wrong_aud = review(&client, &token, Some(vec!["other"])).await;
    assert_ne!(wrong_aud["authenticated"], true);
    let unknown = review(&client, "not-a-token", None).await;
    assert_ne!(unknown["authenticated"], true);

    // deleting the service account invalidates its tokens
    sas.delete("reader", &DeleteParams::default())
        .await
        .unwrap();
    let revoked = review(&client, &token, None).await;
    assert_ne!(revoked["authenticated"], true);

    // no token for a missing service account
    let err = sas
        .create_token_request("ghost", &PostParams::default(), &req)
        .await
        .unwrap_err();
    assert!(matches!(err, kube::Error::Api(s) if s.code == 404));
}
