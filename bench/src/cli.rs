//! Helpers shared by the `gregor` console commands (topics, produce, consume, bench).

use std::future::Future;
use std::process::ExitCode;

use crate::client::{ClientError, Result, block_on};

/// Default broker address of every command.
pub const DEFAULT_BOOTSTRAP: &str = "127.0.0.1:9092";

/// Runs a client future on a fresh executor; prints `error: ...` and fails on error.
pub fn run<F>(f: impl FnOnce() -> F + Send + 'static) -> ExitCode
where
    F: Future<Output = Result<()>> + 'static,
{
    match block_on(f) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Reads the next chunk of stdin (at most `max_bytes`) on glommio's blocking thread pool, so
/// the executor keeps serving the producer while it waits. Empty at end of input.
pub async fn read_stdin_chunk(max_bytes: usize) -> std::io::Result<Vec<u8>> {
    glommio::executor()
        .spawn_blocking(move || {
            use std::io::Read;
            let mut buf = vec![0u8; max_bytes];
            let n = std::io::stdin().lock().read(&mut buf)?;
            buf.truncate(n);
            Ok(buf)
        })
        .await
}

/// Parses `key=value`.
pub fn parse_kv(s: &str) -> std::result::Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected key=value, got '{s}'")),
    }
}

/// Parses `--acks`: `0`, `1`, `all` or `-1`.
pub fn parse_acks(s: &str) -> std::result::Result<i16, String> {
    match s {
        "0" => Ok(0),
        "1" => Ok(1),
        "all" | "-1" => Ok(-1),
        _ => Err(format!("acks must be 0, 1 or all, got '{s}'")),
    }
}

/// Parses `--compression`.
pub fn parse_compression(s: &str) -> std::result::Result<crate::client::Compression, String> {
    crate::client::records::parse_compression(s).map_err(|e| e.to_string())
}

/// An error for a flag combination that makes no sense.
pub fn invalid(msg: impl Into<String>) -> ClientError {
    ClientError::Invalid(msg.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_flags() {
        assert_eq!(parse_kv("a=b=c").unwrap(), ("a".into(), "b=c".into()));
        assert!(parse_kv("=x").is_err());
        assert!(parse_kv("nox").is_err());
        assert_eq!(parse_acks("all").unwrap(), -1);
        assert!(parse_acks("2").is_err());
        assert!(parse_compression("zstd").is_ok());
        assert!(parse_compression("brotli").is_err());
    }
}
