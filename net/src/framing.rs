//! Kafka framing: every request and response is a big-endian `i32` length followed by that
//! many bytes. The length is checked against `socket.request.max.bytes` before any buffer of
//! that size is allocated.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::sync::Arc;

use bytes::Bytes;
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use gregor_engine::FileRange;
use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::sys::sendfile::sendfile64;
use nix::sys::socket::{MsgFlags, sendmsg};

use crate::request_pool::RequestPool;
use crate::vectored::Part;

/// Smallest possible request: api key, api version, correlation id, client id length.
pub const REQUEST_BYTES_MIN: usize = 10;

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The declared size is negative, tiny, or above the limit.
    #[error("frame size {size} outside 10..={max_bytes} bytes")]
    BadSize {
        /// Declared size.
        size: i64,
        /// The configured limit.
        max_bytes: usize,
    },
    /// The peer closed the connection inside a frame.
    #[error("connection closed mid-frame")]
    Truncated,
    /// Socket error.
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads one frame. `Ok(None)` means the peer closed the connection cleanly between frames.
pub async fn read_frame<S: AsyncRead + Unpin>(
    stream: &mut S,
    max_bytes: usize,
    pool: &Arc<RequestPool>,
) -> Result<Option<Bytes>, FrameError> {
    match read_frame_len(stream, max_bytes).await? {
        Some(size) => read_frame_body(stream, size, pool).await.map(Some),
        None => Ok(None),
    }
}

/// Reads and checks a frame's length prefix. `Ok(None)`: clean close between frames.
pub async fn read_frame_len<S: AsyncRead + Unpin>(
    stream: &mut S,
    max_bytes: usize,
) -> Result<Option<usize>, FrameError> {
    let mut len_buf = [0u8; 4];
    let mut filled = 0;
    while filled < 4 {
        let n = stream.read(&mut len_buf[filled..]).await?;
        if n == 0 {
            return if filled == 0 {
                Ok(None)
            } else {
                Err(FrameError::Truncated)
            };
        }
        filled += n;
    }
    let size = i32::from_be_bytes(len_buf);
    if size < REQUEST_BYTES_MIN as i32 || size as usize > max_bytes {
        return Err(FrameError::BadSize {
            size: i64::from(size),
            max_bytes,
        });
    }
    Ok(Some(size as usize))
}

/// Reads a frame body of `size` bytes (already checked by [`read_frame_len`]) into a buffer
/// of `pool`, which gets it back once the body is released.
pub async fn read_frame_body<S: AsyncRead + Unpin>(
    stream: &mut S,
    size: usize,
    pool: &Arc<RequestPool>,
) -> Result<Bytes, FrameError> {
    let mut body = pool.take(size);
    stream.read_exact(body.as_mut_slice()).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            FrameError::Truncated
        } else {
            FrameError::Io(e)
        }
    })?;
    Ok(body.freeze())
}

/// Writes one already-framed response (length prefix included) and flushes it.
pub async fn write_frame<S: AsyncWrite + Unpin>(
    stream: &mut S,
    frame: &[u8],
) -> std::io::Result<()> {
    stream.write_all(frame).await?;
    stream.flush().await
}

/// Writes a response given as parts (see `crate::vectored`) with as few syscalls as the
/// socket allows: runs of memory parts with `sendmsg` and one iovec per part, file parts with
/// `sendfile`. When the socket is full, the stream's own write (which waits for room) takes
/// the rest of the current part (a file part through a bounded buffer).
///
/// `appends_quiet`: whether no producer writes now. Then all cold file parts start reading at
/// once, with the data that follows them ([`FileRange::read_ahead_bytes`]) for the next
/// fetch. Otherwise each cold part is read when it is sent, a step at a time
/// ([`crate::page_cache::load`]), so appends never queue behind more than a step or two of
/// reads. `sent_cold`: the connection's record of the file ranges it sent last, whose pages
/// are dropped now (unless it keeps them) and which then holds this response's.
pub async fn write_frame_parts<S: AsyncWrite + AsRawFd + Unpin>(
    stream: &mut S,
    parts: &[Part],
    appends_quiet: bool,
    sent_cold: &mut crate::page_cache::SentCold,
) -> std::io::Result<()> {
    start_file_reads(parts, appends_quiet, sent_cold.take()).await;
    let mut i = 0;
    while i < parts.len() {
        match &parts[i] {
            Part::File(range) => {
                send_file_range(stream, range, !appends_quiet).await?;
                i += 1;
            }
            Part::Memory(_) => {
                let run_end = parts[i..]
                    .iter()
                    .position(|p| matches!(p, Part::File(_)))
                    .map_or(parts.len(), |k| i + k);
                send_memory_parts(stream, &parts[i..run_end]).await?;
                i = run_end;
            }
        }
    }
    sent_cold.sent(file_parts(parts).map(|r| (&r.file, r.position, r.len)));
    stream.flush().await
}

fn file_parts(parts: &[Part]) -> impl Iterator<Item = &FileRange> {
    parts.iter().filter_map(|p| match p {
        Part::File(range) => Some(range),
        Part::Memory(_) => None,
    })
}

fn memory_of(part: &Part) -> &[u8] {
    match part {
        Part::Memory(b) => b,
        Part::File(_) => &[],
    }
}

async fn send_memory_parts<S: AsyncWrite + AsRawFd + Unpin>(
    stream: &mut S,
    parts: &[Part],
) -> std::io::Result<()> {
    // Bounded by IOV_MAX (1024 on Linux) per call.
    const IOVECS_PER_CALL: usize = 1024;
    let mut index = 0; // first part not fully sent
    let mut offset = 0; // bytes of parts[index] already sent
    while index < parts.len() {
        let slices: Vec<IoSlice<'_>> = parts[index..]
            .iter()
            .take(IOVECS_PER_CALL)
            .enumerate()
            .map(|(i, p)| {
                let bytes = memory_of(p);
                IoSlice::new(if i == 0 { &bytes[offset..] } else { bytes })
            })
            .collect();
        let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
        match sendmsg::<()>(stream.as_raw_fd(), &slices, &[], flags, None) {
            Ok(mut sent) if sent > 0 => {
                while sent > 0 && index < parts.len() {
                    let left = memory_of(&parts[index]).len() - offset;
                    if sent >= left {
                        sent -= left;
                        index += 1;
                        offset = 0;
                    } else {
                        offset += sent;
                        sent = 0;
                    }
                }
                // Skip empty parts so the loop always makes progress.
                while index < parts.len() && memory_of(&parts[index]).len() == offset {
                    index += 1;
                    offset = 0;
                }
            }
            Ok(_) | Err(Errno::EAGAIN) => {
                // Socket full: the peer is the bottleneck, so one send per part costs nothing
                // that matters; the stream's write waits for room.
                stream
                    .write_all(&memory_of(&parts[index])[offset..])
                    .await?;
                index += 1;
                offset = 0;
            }
            Err(Errno::EINTR) => {}
            Err(e) => return Err(std::io::Error::from(e)),
        }
    }
    Ok(())
}

/// Bytes copied through memory at a time when a file part meets a full socket.
const FILE_COPY_CHUNK_BYTES: usize = 256 << 10;

/// With `appends_quiet` (no producer writes): starts reading, in the background, every file
/// part of a response that is not in the page cache, then the data after each part. All at once,
/// before the first part is sent: the disk then has every range of the response to work on
/// together, instead of one range (and its read-ahead) at a time while the parts go out in
/// order (a catch-up consumer read 1.0 to 1.2 GB/s that way, with about 5 reads in flight).
/// Without, only drops `sent_before` (if asked to): the parts are read as they are sent, a
/// step at a time, so the appends do not queue behind them.
async fn start_file_reads(
    parts: &[Part],
    appends_quiet: bool,
    sent_before: Vec<crate::page_cache::Range>,
) {
    if !appends_quiet {
        // Producers write: the parts are read one step at a time as they are sent.
        crate::page_cache::start_reads(sent_before, Vec::new(), Vec::new()).await;
        return;
    }
    let ranges: Vec<crate::page_cache::Range> = file_parts(parts)
        .filter(|r| !crate::page_cache::is_resident(&r.file, r.position, r.len))
        .map(|r| (r.file.clone(), r.position, r.len))
        .collect();
    let ahead: Vec<crate::page_cache::Range> = file_parts(parts)
        .filter(|r| r.read_ahead_bytes > 0)
        .map(|r| {
            (
                r.file.clone(),
                r.position + r.len as u64,
                r.read_ahead_bytes,
            )
        })
        .collect();
    crate::page_cache::start_reads(sent_before, ranges, ahead).await;
}

async fn send_file_range<S: AsyncWrite + AsRawFd + Unpin>(
    stream: &mut S,
    range: &FileRange,
    paced: bool,
) -> std::io::Result<()> {
    if !crate::page_cache::is_resident(&range.file, range.position, range.len) {
        // Cold: sendfile would wait for the disk with the whole core; the core's blocking
        // thread waits instead (see `page_cache`).
        crate::page_cache::load(range.file.clone(), range.position, range.len, paced).await;
    }
    let mut offset = range.position as i64;
    let mut left = range.len;
    while left > 0 {
        match sendfile_nonblocking(stream.as_raw_fd(), &range.file, &mut offset, left) {
            Ok(0) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "segment file ended before the range being sent (deleted meanwhile?)",
                ));
            }
            Ok(n) => left -= n.min(left),
            Err(Errno::EAGAIN) => {
                // Socket full: sendfile cannot wait, so copy a bounded chunk and let the
                // stream's write wait for room; then try sendfile again.
                let chunk = left.min(FILE_COPY_CHUNK_BYTES);
                let mut buf = vec![0u8; chunk];
                std::os::unix::fs::FileExt::read_exact_at(&*range.file, &mut buf, offset as u64)?;
                stream.write_all(&buf).await?;
                offset += chunk as i64;
                left -= chunk;
            }
            Err(Errno::EINTR) => {}
            Err(e) => return Err(std::io::Error::from(e)),
        }
    }
    Ok(())
}

/// `sendfile` that never blocks on the socket. glommio leaves accepted sockets in blocking
/// mode (it sends with MSG_DONTWAIT), and sendfile takes no such flag, so the socket is made
/// non-blocking for the call only. Nothing else uses the socket meanwhile: a connection
/// handles one request at a time and reads nothing while it answers.
fn sendfile_nonblocking(
    socket: RawFd,
    file: &std::fs::File,
    offset: &mut i64,
    count: usize,
) -> nix::Result<usize> {
    let flags = OFlag::from_bits_truncate(fcntl(socket, FcntlArg::F_GETFL)?);
    let toggle = !flags.contains(OFlag::O_NONBLOCK);
    if toggle {
        fcntl(socket, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    }
    // SAFETY: `socket` is the descriptor of the stream the caller borrows mutably for the
    // whole call, so it stays open while borrowed here.
    let socket_fd = unsafe { BorrowedFd::borrow_raw(socket) };
    let result = sendfile64(socket_fd, file, Some(offset), count);
    if toggle {
        fcntl(socket, FcntlArg::F_SETFL(flags))?;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run<F: std::future::Future>(f: F) -> F::Output {
        futures_lite::future::block_on(f)
    }

    #[test]
    fn reads_frames_and_clean_eof() {
        let mut data = Vec::new();
        data.extend_from_slice(&12i32.to_be_bytes());
        data.extend_from_slice(&[7u8; 12]);
        let mut cursor = futures_lite::io::Cursor::new(data);
        let frame = run(read_frame(&mut cursor, 100, &RequestPool::new()))
            .unwrap()
            .unwrap();
        assert_eq!(&frame[..], &[7u8; 12]);
        assert!(
            run(read_frame(&mut cursor, 100, &RequestPool::new()))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn rejects_bad_sizes_before_reading_body() {
        for size in [-1i32, 0, 5, 101, i32::MAX] {
            let mut cursor = futures_lite::io::Cursor::new(size.to_be_bytes().to_vec());
            let err = run(read_frame(&mut cursor, 100, &RequestPool::new())).unwrap_err();
            assert!(matches!(err, FrameError::BadSize { .. }), "{size}");
        }
    }

    #[test]
    fn truncated_frame_is_an_error() {
        let mut data = Vec::new();
        data.extend_from_slice(&20i32.to_be_bytes());
        data.extend_from_slice(&[1u8; 5]);
        let mut cursor = futures_lite::io::Cursor::new(data);
        assert!(matches!(
            run(read_frame(&mut cursor, 100, &RequestPool::new())),
            Err(FrameError::Truncated)
        ));
        let mut cursor = futures_lite::io::Cursor::new(vec![0u8, 0]);
        assert!(matches!(
            run(read_frame(&mut cursor, 100, &RequestPool::new())),
            Err(FrameError::Truncated)
        ));
    }

    /// Many parts (memory and file ranges) through a socket whose reader is slow, so sends
    /// go partial and hit a full buffer (EAGAIN) mid-part: the reader gets every byte, in
    /// order.
    #[test]
    fn parts_survive_partial_sends_and_a_full_socket() {
        use std::io::Read;
        use std::io::Write;
        // Memory parts, with file parts (sendfile) between some of them.
        let mut file = tempfile::tempfile().unwrap();
        let content: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
        file.write_all(&content).unwrap();
        let file = std::sync::Arc::new(file);
        let mut parts = Vec::new();
        let mut expected = Vec::new();
        for i in 0..600u32 {
            let len = 1 + (i as usize * 7919) % 40_000;
            if i % 50 == 7 {
                let position = (i as u64 * 4099) % 1_000_000;
                let len = len * 40;
                parts.push(Part::File(FileRange {
                    file: file.clone(),
                    position,
                    len,
                    read_ahead_bytes: 0,
                }));
                expected.extend_from_slice(&content[position as usize..position as usize + len]);
            } else {
                let bytes: Vec<u8> = (0..len).map(|j| (i as usize + j) as u8).collect();
                expected.extend_from_slice(&bytes);
                parts.push(Part::Memory(Bytes::from(bytes)));
            }
        }
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let total = expected.len();
        let reader = std::thread::spawn(move || {
            let (mut sock, _) = listener.accept().unwrap();
            let mut got = Vec::with_capacity(total);
            let mut chunk = vec![0u8; 7_000];
            while got.len() < total {
                let n = sock.read(&mut chunk).unwrap();
                assert!(n > 0, "closed early");
                got.extend_from_slice(&chunk[..n]);
                if got.len() < total / 4 {
                    // Slow at first, so the sender's socket fills up.
                    std::thread::sleep(std::time::Duration::from_micros(200));
                }
            }
            got
        });
        glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                let mut stream = glommio::net::TcpStream::connect(addr).await.unwrap();
                write_frame_parts(&mut stream, &parts, false, &mut Default::default())
                    .await
                    .unwrap();
            })
            .unwrap()
            .join()
            .unwrap();
        let got = reader.join().unwrap();
        assert_eq!(got.len(), expected.len());
        assert!(got == expected, "bytes differ");
    }

    /// With no producer writing (`appends_quiet`), every cold file part of a response and what
    /// follows each is being read before the first part is sent. While producers write,
    /// nothing is: each part is read a step at a time when it is sent.
    #[test]
    fn file_parts_are_all_read_before_the_first_is_sent() {
        use crate::page_cache::tests::{cold_file, page_is_resident};
        let mib = 1usize << 20;
        for appends_quiet in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let file = cold_file(dir.path(), 16 * mib);
            let part = |position: usize| {
                Part::File(FileRange {
                    file: file.clone(),
                    position: position as u64,
                    len: mib,
                    read_ahead_bytes: 2 * mib,
                })
            };
            let parts = vec![
                part(0),
                Part::Memory(Bytes::from_static(b"x")),
                part(8 * mib),
            ];
            let wanted = [0, mib - 1, 8 * mib, 9 * mib - 1, 3 * mib - 1, 11 * mib - 1];
            let probe = file.clone();
            glommio::LocalExecutorBuilder::default()
                .spawn(move || async move {
                    start_file_reads(&parts, appends_quiet, Vec::new()).await;
                    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
                    let read = || wanted.iter().all(|&at| page_is_resident(&probe, at as u64));
                    if appends_quiet {
                        while !read() {
                            assert!(std::time::Instant::now() < deadline, "parts not read");
                            glommio::timer::sleep(std::time::Duration::from_millis(5)).await;
                        }
                    } else {
                        glommio::timer::sleep(std::time::Duration::from_millis(200)).await;
                        assert!(
                            !page_is_resident(&probe, (8 * mib) as u64),
                            "a later part was read ahead of its turn"
                        );
                    }
                })
                .unwrap()
                .join()
                .unwrap();
            // Nothing far past the parts.
            assert!(!page_is_resident(&file, (14 * mib) as u64));
        }
    }

    /// With pages dropped after sending (`fetch.cold.pages.keep=false`), a file part's pages
    /// leave the page cache when the connection answers its next request; kept, they stay.
    #[test]
    fn sent_file_pages_are_dropped_with_the_next_response() {
        use crate::page_cache::SentCold;
        use crate::page_cache::tests::{cold_file, page_is_resident};
        use std::io::Read;
        let mib = 1usize << 20;
        for drop_pages in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let file = cold_file(dir.path(), 4 * mib);
            let parts = vec![
                Part::Memory(Bytes::from_static(b"head")),
                Part::File(FileRange {
                    file: file.clone(),
                    position: mib as u64,
                    len: 2 * mib,
                    read_ahead_bytes: 0,
                }),
            ];
            let first_len = 4 + 2 * mib;
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let (got_first, first_read) = std::sync::mpsc::channel();
            let reader = std::thread::spawn(move || {
                let (mut sock, _) = listener.accept().unwrap();
                let mut first = vec![0u8; first_len];
                sock.read_exact(&mut first).unwrap();
                got_first.send(()).unwrap();
                let mut second = [0u8; 6];
                sock.read_exact(&mut second).unwrap();
                first
            });
            let probe = file.clone();
            glommio::LocalExecutorBuilder::default()
                .spawn(move || async move {
                    let mut stream = glommio::net::TcpStream::connect(addr).await.unwrap();
                    let mut sent = SentCold::new(drop_pages);
                    write_frame_parts(&mut stream, &parts, false, &mut sent)
                        .await
                        .unwrap();
                    assert!(
                        page_is_resident(&probe, (2 * mib) as u64),
                        "not sent from cache"
                    );
                    // The client has read the whole response before it asks again.
                    first_read.recv().unwrap();
                    let next = [Part::Memory(Bytes::from_static(b"second"))];
                    write_frame_parts(&mut stream, &next, false, &mut sent)
                        .await
                        .unwrap();
                    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
                    while drop_pages && page_is_resident(&probe, (2 * mib) as u64) {
                        assert!(std::time::Instant::now() < deadline, "sent pages kept");
                        glommio::timer::sleep(std::time::Duration::from_millis(5)).await;
                    }
                })
                .unwrap()
                .join()
                .unwrap();
            let first = reader.join().unwrap();
            assert!(first[4..].iter().all(|&b| b == 7), "file bytes differ");
            assert_eq!(
                page_is_resident(&file, (2 * mib) as u64),
                !drop_pages,
                "drop_pages {drop_pages}"
            );
        }
    }
}
