//! Shared by the fuzz targets that need a data directory.

/// A temp directory in memory (`/dev/shm`) where there is one: the targets check request
/// handling and recovery logic, not the disk, and on a busy disk one fdatasync (after large
/// deletions, while the journal commit discards the freed blocks) took over 20 s and tripped
/// libFuzzer's timeout.
pub fn scratch_dir() -> tempfile::TempDir {
    tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .expect("temp dir")
}
