//! Kafka framing: every request and response is a big-endian `i32` length followed by that
//! many bytes. The length is checked against `socket.request.max.bytes` before any buffer of
//! that size is allocated.

use bytes::{Bytes, BytesMut};
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

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
}
