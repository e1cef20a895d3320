//! Shared helpers: run one async test body on either backend, build batches.
#![allow(dead_code)]

use gregor_engine::batch::{SimpleRecord, encode_batch};
use gregor_engine::{BackendKind, LogConfig};
use std::future::Future;
use std::path::PathBuf;

/// Run `body` for `backend`: plain `block_on` for Std, a glommio LocalExecutor for Dma.
pub fn run<F, Fut>(backend: BackendKind, body: F)
where
    F: FnOnce(BackendKind, PathBuf) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("topic-0");
    match backend {
        BackendKind::Std => futures_lite::future::block_on(body(backend, dir)),
        BackendKind::Dma => {
            let handle = glommio::LocalExecutorBuilder::default()
                .spawn(move || body(backend, dir))
                .expect("spawn glommio executor");
            handle.join().expect("glommio executor panicked");
        }
    }
    drop(tmp);
}

/// Run `body` inside a glommio executor whatever the backend (for tests that spawn tasks).
pub fn run_in_glommio<F, Fut>(backend: BackendKind, body: F)
where
    F: FnOnce(BackendKind, PathBuf) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("topic-0");
    let handle = glommio::LocalExecutorBuilder::default()
        .spawn(move || body(backend, dir))
        .expect("spawn glommio executor");
    handle.join().expect("glommio executor panicked");
}

/// Generate `std` and `dma` test functions running the same async body.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn std() {
                $crate::common::run(gregor_engine::BackendKind::Std, super::$name);
            }
            #[test]
            fn dma() {
                $crate::common::run(gregor_engine::BackendKind::Dma, super::$name);
            }
        }
    )*};
}

/// A batch of `n` records with values `"{tag}-{i}"` and timestamps `ts, ts+1, ...`.
pub fn batch(n: usize, ts: i64, tag: &str) -> Vec<u8> {
    let values: Vec<String> = (0..n).map(|i| format!("{tag}-{i}")).collect();
    let recs: Vec<SimpleRecord<'_>> = values
        .iter()
        .enumerate()
        .map(|(i, v)| SimpleRecord {
            timestamp_ms: ts + i as i64,
            key: Some(b"k"),
            value: Some(v.as_bytes()),
        })
        .collect();
    encode_batch(&recs)
}

/// A batch with one record of `value_bytes` bytes.
pub fn sized_batch(value_bytes: usize, ts: i64) -> Vec<u8> {
    let value = vec![0xAB; value_bytes];
    encode_batch(&[SimpleRecord {
        timestamp_ms: ts,
        key: None,
        value: Some(&value),
    }])
}

/// Small segments and a dense index so tests cross many boundaries quickly.
pub fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 8 * 1024,
        index_interval_bytes: 256,
        tail_cache_bytes: 8 * 1024,
        ..LogConfig::default()
    }
}
