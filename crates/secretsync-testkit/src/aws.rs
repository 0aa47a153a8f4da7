//! SDK configuration for test clients of an AWS emulator (moto): dummy static keys, one
//! region, the emulator's endpoint. Build any service's client on it with `Client::new`.
//! Also Parameter Store test data, which two crates' tests create.

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;

/// Configuration for clients of the emulator at `endpoint` in `region`, signing with
/// `access_key_id` (moto accepts any keys; the id shows up in its request recorder).
pub fn emulator_config(endpoint: &str, region: &str, access_key_id: &str) -> SdkConfig {
    SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region.to_string()))
        .endpoint_url(endpoint)
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            access_key_id,
            "test-secret-key",
            None,
            None,
            "secretsync-tests",
        )))
        .build()
}

/// Creates or overwrites a Parameter Store parameter and returns its new version.
pub async fn put_parameter(
    client: &aws_sdk_ssm::Client,
    name: &str,
    kind: aws_sdk_ssm::types::ParameterType,
    value: &str,
) -> i64 {
    client
        .put_parameter()
        .name(name)
        .r#type(kind)
        .value(value)
        .overwrite(true)
        .send()
        .await
        .unwrap_or_else(|e| panic!("PutParameter {name}: {e:?}"))
        .version
}
