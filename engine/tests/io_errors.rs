//! A failing write (here EFBIG from RLIMIT_FSIZE, standing in for ENOSPC/EIO) returns
//! `LogError::Io`, loses nothing acknowledged, and the log works again once writes succeed.
//! Its own test binary: the file size limit is process-wide.

mod common;

use bytes::Bytes;
use gregor_engine::batch::BatchIter;
use gregor_engine::{BackendKind, Log, LogConfig, LogError};
use std::path::PathBuf;

fn set_file_size_limit(bytes: u64) {
    let lim = libc::rlimit {
        rlim_cur: bytes as libc::rlim_t,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain syscall with a valid struct pointer.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_FSIZE, &lim) };
    assert_eq!(rc, 0);
}

async fn write_error_keeps_log_consistent(backend: BackendKind, dir: PathBuf) {
    let log = Log::open(&dir, LogConfig::default(), backend)
        .await
        .unwrap();
    for i in 0..10 {
        log.append(Bytes::from(common::sized_batch(1000, i)), 0, 1)
            .await
            .unwrap();
    }
    let size_before = std::fs::metadata(dir.join(gregor_engine::segment_file_name(0)))
        .unwrap()
        .len();
    set_file_size_limit(size_before + 8192);
    let mut acked = log.log_end_offset();
    let mut failures = 0;
    for i in 0..40 {
        match log
            .append(Bytes::from(common::sized_batch(1000, 100 + i)), 0, 1)
            .await
        {
            Ok(info) => {
                assert_eq!(info.base_offset, acked);
                acked = info.last_offset + 1;
            }
            Err(LogError::Io(_)) => {
                failures += 1;
                assert_eq!(
                    log.log_end_offset(),
                    acked,
                    "a failed append must not advance the log end"
                );
            }
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert!(failures > 0, "the limit never hit");
    // Everything acknowledged reads back.
    let r = log.read(0, 1 << 20, i64::MAX).await.unwrap();
    assert_eq!(BatchIter::new(&r.data).count() as i64, acked);
    set_file_size_limit(u64::MAX);
    let info = log
        .append(Bytes::from(common::sized_batch(1000, 999)), 0, 1)
        .await
        .unwrap();
    assert_eq!(info.base_offset, acked);
    log.flush().await.unwrap();
    drop(log);
    // Crash-reopen: exactly the acknowledged batches plus the last one, no garbage.
    let log = Log::open(&dir, LogConfig::default(), backend)
        .await
        .unwrap();
    assert_eq!(log.log_end_offset(), acked + 1);
    let r = log.read(0, 1 << 20, i64::MAX).await.unwrap();
    let bases: Vec<i64> = BatchIter::new(&r.data)
        .map(|(h, _)| h.base_offset.get())
        .collect();
    assert_eq!(bases, (0..=acked).collect::<Vec<_>>());
}

#[test]
fn write_errors_both_backends() {
    // SAFETY: ignoring SIGXFSZ so exceeding the limit yields EFBIG instead of killing us.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    common::run(BackendKind::Std, write_error_keeps_log_consistent);
    common::run(BackendKind::Dma, write_error_keeps_log_consistent);
}
