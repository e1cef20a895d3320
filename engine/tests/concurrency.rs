//! Many producer tasks and a reader on one log inside a glommio executor (the broker's
//! situation): grouped appends across segment rolls keep offsets unique, contiguous and in
//! per-producer order, and everything reads back after a crash.

mod common;

use bytes::Bytes;
use gregor_engine::batch::{BatchIter, SimpleRecord, encode_batch};
use gregor_engine::{BackendKind, Log};
use std::rc::Rc;

const PRODUCERS: usize = 8;
const APPENDS_PER_PRODUCER: usize = 150;

fn tagged_batch(producer: usize, seq: usize) -> Vec<u8> {
    let key = format!("P@{producer:03}@{seq:05}");
    let value = "x".repeat((seq * 37 + producer * 11) % 700);
    let n = 1 + (seq % 3);
    let recs: Vec<SimpleRecord<'_>> = (0..n)
        .map(|_| SimpleRecord {
            timestamp_ms: seq as i64,
            key: Some(key.as_bytes()),
            value: Some(value.as_bytes()),
        })
        .collect();
    encode_batch(&recs)
}

/// (producer, seq) of every batch in the log, in offset order; checks contiguity.
async fn scan(log: &Log) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut offset = 0;
    while offset < log.log_end_offset() {
        let r = log.read(offset, 5000, i64::MAX).await.unwrap();
        for (h, b) in BatchIter::new(&r.data) {
            assert_eq!(h.base_offset.get(), offset, "offsets must be contiguous");
            offset = h.last_offset() + 1;
            let (producer, seq) = parse_tag(b);
            out.push((producer, seq));
        }
    }
    out
}

fn parse_tag(batch: &[u8]) -> (usize, usize) {
    let at = batch.windows(2).position(|w| w == b"P@").expect("tag") + 2;
    let tag = std::str::from_utf8(&batch[at..at + 9]).unwrap();
    (tag[0..3].parse().unwrap(), tag[4..9].parse().unwrap())
}

async fn producers_and_reader(backend: BackendKind, dir: std::path::PathBuf) {
    let log = Rc::new(
        Log::open(&dir, common::small_config(), backend)
            .await
            .unwrap(),
    );
    let tasks: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let log = log.clone();
            glommio::spawn_local(async move {
                let mut last = -1;
                for seq in 0..APPENDS_PER_PRODUCER {
                    let info = log
                        .append(Bytes::from(tagged_batch(p, seq)), 0, 1)
                        .await
                        .unwrap();
                    assert!(info.base_offset > last, "per-producer order");
                    last = info.last_offset;
                    if seq % 50 == 0 {
                        log.flush().await.unwrap();
                    }
                }
            })
        })
        .collect();
    let reader = {
        let log = log.clone();
        glommio::spawn_local(async move {
            let mut offset = 0;
            let mut reads = 0;
            while reads < 2000 && offset < (PRODUCERS * APPENDS_PER_PRODUCER) as i64 {
                let r = log.read(offset, 3000, log.log_end_offset()).await.unwrap();
                for (h, _) in BatchIter::new(&r.data) {
                    assert_eq!(
                        h.base_offset.get(),
                        offset,
                        "reads resume at the next batch"
                    );
                    offset = h.last_offset() + 1;
                }
                reads += 1;
                glommio::yield_if_needed().await;
                if r.data.is_empty() {
                    glommio::timer::sleep(std::time::Duration::from_micros(50)).await;
                }
            }
        })
    };
    for t in tasks {
        t.await;
    }
    reader.await;
    assert!(log.segment_count() > 5);
    let check = |seen: Vec<(usize, usize)>| {
        assert_eq!(seen.len(), PRODUCERS * APPENDS_PER_PRODUCER);
        let mut next = [0usize; PRODUCERS];
        for (p, s) in seen {
            assert_eq!(s, next[p], "producer {p} out of order");
            next[p] += 1;
        }
    };
    check(scan(&log).await);
    drop(log);
    let log = Log::open(&dir, common::small_config(), backend)
        .await
        .unwrap();
    check(scan(&log).await);
}

#[test]
fn producers_and_reader_dma() {
    common::run(BackendKind::Dma, producers_and_reader);
}

#[test]
fn producers_and_reader_std() {
    // glommio tasks over the portable backend (it never yields inside I/O, still correct).
    common::run_in_glommio(BackendKind::Std, producers_and_reader);
}
