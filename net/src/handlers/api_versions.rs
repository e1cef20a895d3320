//! ApiVersions (key 18): the APIs and versions this broker serves.
//!
//! A request at a version we do not know gets a v0 response with UNSUPPORTED_VERSION and the
//! full list (KIP-511), so the client can retry at a version we share; see [`fallback_frame`].

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader};

use super::{RequestError, SUPPORTED_APIS, encode_frame};
use crate::cores::CoreContext;

fn api_list() -> Vec<ApiVersion> {
    SUPPORTED_APIS
        .iter()
        .map(|(key, min, max)| {
            ApiVersion::default()
                .with_api_key(*key as i16)
                .with_min_version(*min)
                .with_max_version(*max)
        })
        .collect()
}

/// Answers ApiVersions. Optional tagged fields (features) stay at their defaults, so
/// `kafka-protocol` leaves them out: librdkafka 2.0.2 mis-parses them when present.
pub async fn handle(
    _ctx: &Rc<CoreContext>,
    _header: &RequestHeader,
    _request: ApiVersionsRequest,
) -> ApiVersionsResponse {
    ApiVersionsResponse::default()
        .with_error_code(0)
        .with_api_keys(api_list())
}

/// The v0 UNSUPPORTED_VERSION answer to an ApiVersions request at an unknown version.
pub fn fallback_frame(correlation_id: i32) -> Result<Bytes, RequestError> {
    let response = ApiVersionsResponse::default()
        .with_error_code(ResponseError::UnsupportedVersion.code())
        .with_api_keys(api_list());
    // ApiVersions responses always use header v0, whatever the request version.
    encode_frame(ApiKey::ApiVersions, 0, correlation_id, 0, &response)
}
