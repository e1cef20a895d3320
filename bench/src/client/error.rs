//! Client errors. Kafka error codes keep their protocol name (`UNKNOWN_TOPIC_OR_PARTITION`) so a
//! user can look them up in Kafka's documentation.

use kafka_protocol::ResponseError;

/// Everything that can go wrong talking to a Kafka-protocol broker.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Socket-level failure (connect refused, reset, ...).
    #[error("I/O error talking to {addr}: {source}")]
    Io {
        /// Broker address.
        addr: String,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The broker closed the connection or it failed earlier; pending requests are lost.
    #[error("connection to {0} closed")]
    Closed(String),
    /// The broker sent bytes we could not decode.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A Kafka error code returned by the broker.
    #[error("{context}: {name} ({code}){}", message.as_ref().map(|m| format!(": {m}")).unwrap_or_default())]
    Kafka {
        /// What was being done ("create topic t").
        context: String,
        /// Kafka error code.
        code: i16,
        /// Kafka's name for the code, e.g. `TOPIC_ALREADY_EXISTS`.
        name: String,
        /// Optional message from the broker.
        message: Option<String>,
    },
    /// No version of an API is supported by both sides.
    #[error("broker does not support {api} at any version this client implements")]
    UnsupportedVersion {
        /// API name.
        api: String,
    },
    /// A request did not complete in time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// Bad input from the user (arguments, topic not found in metadata, ...).
    #[error("{0}")]
    Invalid(String),
}

impl ClientError {
    /// Builds a [`ClientError::Kafka`] from a non-zero error code.
    pub fn kafka(context: impl Into<String>, code: i16, message: Option<String>) -> Self {
        ClientError::Kafka {
            context: context.into(),
            code,
            name: error_name(code),
            message: message.filter(|m| !m.is_empty()),
        }
    }

    /// Returns `Err` if `code` is non-zero.
    pub fn check(code: i16, context: impl FnOnce() -> String) -> std::result::Result<(), Self> {
        if code == 0 {
            Ok(())
        } else {
            Err(Self::kafka(context(), code, None))
        }
    }

    /// True for errors after which retrying (after a metadata refresh) can succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            ClientError::Kafka { code, .. } => ResponseError::try_from_code(*code)
                .map(|e| e.is_retriable())
                .unwrap_or(false),
            ClientError::Io { .. } | ClientError::Closed(_) | ClientError::Timeout(_) => true,
            _ => false,
        }
    }
}

/// Kafka's upper-case name for an error code (`3` -> `UNKNOWN_TOPIC_OR_PARTITION`).
pub fn error_name(code: i16) -> String {
    match ResponseError::try_from_code(code) {
        None => "NONE".to_string(),
        Some(ResponseError::Unknown(c)) => format!("UNKNOWN_ERROR_CODE_{c}"),
        Some(e) => {
            let camel = e.to_string();
            let mut out = String::with_capacity(camel.len() + 8);
            for (i, ch) in camel.chars().enumerate() {
                if ch.is_ascii_uppercase() && i > 0 {
                    out.push('_');
                }
                out.push(ch.to_ascii_uppercase());
            }
            out
        }
    }
}

/// Result alias for the client.
pub type Result<T> = std::result::Result<T, ClientError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_names_match_kafka() {
        assert_eq!(error_name(3), "UNKNOWN_TOPIC_OR_PARTITION");
        assert_eq!(error_name(36), "TOPIC_ALREADY_EXISTS");
        assert_eq!(error_name(37), "INVALID_PARTITIONS");
        assert_eq!(error_name(0), "NONE");
        assert_eq!(error_name(-1), "UNKNOWN_SERVER_ERROR");
        let e = ClientError::kafka("create topic t", 36, Some("exists".into()));
        assert_eq!(
            e.to_string(),
            "create topic t: TOPIC_ALREADY_EXISTS (36): exists"
        );
    }
}
