//! AWS Systems Manager Parameter Store backend (`aws.service: ParameterStore`).
//!
//! Remote key `K` with prefix `P` is the parameter named `P + K` (e.g. `/shop/db/password`).
//! String, StringList (the comma-separated text as stored) and SecureString parameters are
//! read with `WithDecryption=true`; `version` pins a version number (`3`) or a label
//! (`prod`), sent as SSM's selector `name:3` / `name:prod`. Credentials, endpoint and
//! timeouts are the Secrets Manager backend's (see the parent module), so one `aws` block
//! configures either service.
//!
//! Layout: `read` (single and batched reads, version selectors), `list` (listing for
//! `find`).

mod list;
mod read;

use aws_sdk_ssm::Client;

use super::AwsServiceBackend;

/// What errors and logs call the service.
pub(super) const SERVICE: &str = "AWS Systems Manager Parameter Store";

/// AWS Systems Manager Parameter Store backend.
pub type ParameterStoreBackend = AwsServiceBackend<Client>;
