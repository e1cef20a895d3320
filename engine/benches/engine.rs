//! Criterion benchmarks: append, read (tail cache and cold O_DIRECT) and index lookups,
//! on both backends. `cargo bench -p gregor-engine`.

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use glommio::LocalExecutor;
use gregor_engine::batch::{SimpleRecord, encode_batch};
use gregor_engine::{BackendKind, Log, LogConfig};
use std::time::{Duration, Instant};

/// A batch of `records` records of 100 bytes each (a typical small-message batch).
fn make_batch(records: usize) -> Bytes {
    let value = vec![7u8; 100];
    let recs: Vec<SimpleRecord<'_>> = (0..records)
        .map(|i| SimpleRecord {
            timestamp_ms: 1_000 + i as i64,
            key: None,
            value: Some(&value),
        })
        .collect();
    Bytes::from(encode_batch(&recs))
}

/// Run `f` on `backend`'s executor: a glommio LocalExecutor for Dma, block_on for Std.
fn on<T>(ex: &LocalExecutor, backend: BackendKind, f: impl std::future::Future<Output = T>) -> T {
    match backend {
        BackendKind::Dma => ex.run(f),
        BackendKind::Std => futures_lite::future::block_on(f),
    }
}

fn bench_append(c: &mut Criterion) {
    let ex = LocalExecutor::default();
    let mut group = c.benchmark_group("append");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(3));
    for backend in [BackendKind::Std, BackendKind::Dma] {
        for records in [10usize, 160] {
            let batch = make_batch(records);
            group.throughput(Throughput::Bytes(batch.len() as u64));
            let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
            let log = on(
                &ex,
                backend,
                Log::open(tmp.path().join("p"), LogConfig::default(), backend),
            )
            .unwrap();
            group.bench_with_input(
                BenchmarkId::new(format!("{backend:?}"), batch.len()),
                &batch,
                |b, batch| {
                    b.iter_custom(|iters| {
                        on(&ex, backend, async {
                            let start = Instant::now();
                            for _ in 0..iters {
                                log.append(batch.clone(), 0, 1).await.unwrap();
                            }
                            start.elapsed()
                        })
                    })
                },
            );
        }
    }
    group.finish();
}

/// 16 producers appending to one log at once: the engine groups their requests into shared
/// writes (Dma) where one producer pays a full O_DIRECT write per append.
fn bench_append_concurrent(c: &mut Criterion) {
    let ex = LocalExecutor::default();
    let mut group = c.benchmark_group("append_16_producers");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(3));
    let producers = 16u64;
    for backend in [BackendKind::Std, BackendKind::Dma] {
        let batch = make_batch(10);
        group.throughput(Throughput::Bytes(batch.len() as u64));
        let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let log = std::rc::Rc::new(
            on(
                &ex,
                backend,
                Log::open(tmp.path().join("p"), LogConfig::default(), backend),
            )
            .unwrap(),
        );
        group.bench_with_input(
            BenchmarkId::new(format!("{backend:?}"), batch.len()),
            &batch,
            |b, batch| {
                b.iter_custom(|iters| {
                    let per_task = iters.div_ceil(producers);
                    ex.run(async {
                        let start = Instant::now();
                        let tasks: Vec<_> = (0..producers)
                            .map(|_| {
                                let (log, batch) = (log.clone(), batch.clone());
                                glommio::spawn_local(async move {
                                    for _ in 0..per_task {
                                        log.append(batch.clone(), 0, 1).await.unwrap();
                                    }
                                })
                            })
                            .collect();
                        for t in tasks {
                            t.await;
                        }
                        start.elapsed()
                    })
                })
            },
        );
    }
    group.finish();
}

fn bench_read(c: &mut Criterion) {
    let ex = LocalExecutor::default();
    let mut group = c.benchmark_group("read");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(3));
    let batch = make_batch(10);
    let batches = 20_000i64;
    for backend in [BackendKind::Std, BackendKind::Dma] {
        for (name, cache_bytes) in [("tail_cache", 64usize << 20), ("cold", 0)] {
            let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
            let config = LogConfig {
                tail_cache_bytes: cache_bytes,
                ..LogConfig::default()
            };
            let log = on(&ex, backend, async {
                let log = Log::open(tmp.path().join("p"), config, backend)
                    .await
                    .unwrap();
                for _ in 0..batches {
                    log.append(batch.clone(), 0, 1).await.unwrap();
                }
                log
            });
            let leo = log.log_end_offset();
            // 64 KiB fetches from a pseudo-random position (index lookup + header walk + copy).
            group.throughput(Throughput::Bytes(64 << 10));
            group.bench_function(BenchmarkId::new(format!("{backend:?}"), name), |b| {
                let mut x = 12345u64;
                b.iter_custom(|iters| {
                    on(&ex, backend, async {
                        let start = Instant::now();
                        for _ in 0..iters {
                            x = x
                                .wrapping_mul(6364136223846793005)
                                .wrapping_add(1442695040888963407);
                            let offset = (x >> 33) as i64 % leo;
                            let r = log.read(offset, 64 << 10, i64::MAX).await.unwrap();
                            assert!(!r.data.is_empty());
                        }
                        start.elapsed()
                    })
                })
            });
        }
    }
    group.finish();
}

fn bench_lookup(c: &mut Criterion) {
    let ex = LocalExecutor::default();
    let mut group = c.benchmark_group("index_lookup");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(3));
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let batch = make_batch(10);
    let log = on(&ex, BackendKind::Std, async {
        let log = Log::open(tmp.path().join("p"), LogConfig::default(), BackendKind::Std)
            .await
            .unwrap();
        for _ in 0..50_000 {
            log.append(batch.clone(), 0, 1).await.unwrap();
        }
        log
    });
    let leo = log.log_end_offset();
    group.bench_function("offset_1_byte_read", |b| {
        let mut x = 1u64;
        b.iter(|| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let offset = (x >> 33) as i64 % leo;
            futures_lite::future::block_on(log.read(offset, 1, i64::MAX)).unwrap()
        })
    });
    group.bench_function("offset_for_timestamp", |b| {
        let mut x = 1u64;
        b.iter(|| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let ts = 1_000 + (x >> 33) as i64 % 10;
            futures_lite::future::block_on(log.offset_for_timestamp(ts)).unwrap()
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    bench_append,
    bench_append_concurrent,
    bench_read,
    bench_lookup
);
criterion_main!(benches);
