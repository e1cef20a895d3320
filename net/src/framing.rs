//! Kafka framing: every request and response is a big-endian `i32` length followed by that
//! many bytes. The length is checked against `socket.request.max.bytes` before any buffer of
//! that size is allocated.

use std::io::IoSlice;
use std::os::fd::AsRawFd;

use bytes::{Bytes, BytesMut};
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, sendmsg};

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
) -> Result<Option<Bytes>, FrameError> {
    match read_frame_len(stream, max_bytes).await? {
        Some(size) => read_frame_body(stream, size).await.map(Some),
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

/// Reads a frame body of `size` bytes (already checked by [`read_frame_len`]).
pub async fn read_frame_body<S: AsyncRead + Unpin>(
    stream: &mut S,
    size: usize,
) -> Result<Bytes, FrameError> {
    let mut body = BytesMut::zeroed(size);
    stream.read_exact(&mut body).await.map_err(|e| {
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
/// socket allows: `sendmsg` with one iovec per part while the socket takes data, and when it
/// is full, the stream's own write (which waits for room) for the rest of the current part.
pub async fn write_frame_parts<S: AsyncWrite + AsRawFd + Unpin>(
    stream: &mut S,
    parts: &[Bytes],
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
            .map(|(i, p)| IoSlice::new(if i == 0 { &p[offset..] } else { p }))
            .collect();
        let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
        match sendmsg::<()>(stream.as_raw_fd(), &slices, &[], flags, None) {
            Ok(mut sent) if sent > 0 => {
                while sent > 0 && index < parts.len() {
                    let left = parts[index].len() - offset;
                    if sent >= left {
                        sent -= left;
                        index += 1;
                        offset = 0;
                    } else {
                        offset += sent;
                        sent = 0;
                    }
                }
            }
            Ok(_) | Err(Errno::EAGAIN) => {
                // Socket full: the peer is the bottleneck, so one send per part costs nothing
                // that matters; the stream's write waits for room.
                stream.write_all(&parts[index][offset..]).await?;
                index += 1;
                offset = 0;
            }
            Err(Errno::EINTR) => {}
            Err(e) => return Err(std::io::Error::from(e)),
        }
    }
    stream.flush().await
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
        let frame = run(read_frame(&mut cursor, 100)).unwrap().unwrap();
        assert_eq!(&frame[..], &[7u8; 12]);
        assert!(run(read_frame(&mut cursor, 100)).unwrap().is_none());
    }

    #[test]
    fn rejects_bad_sizes_before_reading_body() {
        for size in [-1i32, 0, 5, 101, i32::MAX] {
            let mut cursor = futures_lite::io::Cursor::new(size.to_be_bytes().to_vec());
            let err = run(read_frame(&mut cursor, 100)).unwrap_err();
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
            run(read_frame(&mut cursor, 100)),
            Err(FrameError::Truncated)
        ));
        let mut cursor = futures_lite::io::Cursor::new(vec![0u8, 0]);
        assert!(matches!(
            run(read_frame(&mut cursor, 100)),
            Err(FrameError::Truncated)
        ));
    }

    /// Many parts through a socket whose reader is slow, so sends go partial and hit a full
    /// buffer (EAGAIN) mid-part: the reader gets every byte, in order.
    #[test]
    fn parts_survive_partial_sends_and_a_full_socket() {
        use std::io::Read;
        let parts: Vec<Bytes> = (0..600u32)
            .map(|i| {
                let len = 1 + (i as usize * 7919) % 40_000;
                Bytes::from(
                    (0..len)
                        .map(|j| (i as usize + j) as u8)
                        .collect::<Vec<u8>>(),
                )
            })
            .collect();
        let expected: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
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
                write_frame_parts(&mut stream, &parts).await.unwrap();
            })
            .unwrap()
            .join()
            .unwrap();
        let got = reader.join().unwrap();
        assert_eq!(got.len(), expected.len());
        assert!(got == expected, "bytes differ");
    }
}
