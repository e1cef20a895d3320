//! One client connection: read a frame, answer it, repeat. Responses go out in request order.
//! Like Kafka, we process one request per connection at a time (requests the client pipelines
//! wait in the socket buffer), except consecutive Produce requests: up to
//! `produce.pipeline.depth` of those are written at once, so a producer's throughput is not
//! its batch size over one disk write's latency.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::panic::AssertUnwindSafe;
use std::rc::Rc;

use bytes::{Buf, Bytes};
use futures_lite::{AsyncReadExt, FutureExt};
use glommio::net::TcpStream;
use glommio::sync::Permit;
use kafka_protocol::messages::{ApiKey, RequestHeader};
use kafka_protocol::protocol::Decodable;

use crate::balance::ConnectionSlot;
use crate::cores::{CoreContext, CoreRequest};
use crate::framing::{FrameError, read_frame_body, read_frame_len, write_frame, write_frame_parts};
use crate::handlers::{self, PendingReply, Reply, RequestError};

/// Decrements the connection count when the connection task ends, however it ends.
struct ConnectionGuard(Rc<CoreContext>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        let ctx = &self.0;
        ctx.open_connections
            .set(ctx.open_connections.get().saturating_sub(1));
        ctx.connection_closed.notify_all();
    }
}

/// Serves a connection that another core handed over (see `balance.rs`). A draining core
/// closes it as it closes its own: gracefully, without reading another request.
pub fn adopt(ctx: &Rc<CoreContext>, socket: OwnedFd, peer: SocketAddr, slot: ConnectionSlot) {
    // SAFETY: `socket` is a connected TCP socket whose only owner is this `OwnedFd` (the
    // other core duplicated it and closed its own descriptor); ownership moves into the
    // stream, which closes it.
    let stream = unsafe { TcpStream::from_raw_fd(socket.into_raw_fd()) };
    glommio::spawn_local(serve(ctx.clone(), stream, peer, Some(slot))).detach();
}

/// Whether a request moves records (Produce, Fetch): what makes a connection count when
/// spreading connections over the cores.
fn carries_data(body: &Bytes) -> bool {
    matches!(api_key(body), Some(ApiKey::Produce | ApiKey::Fetch))
}

/// Serves one connection until the peer closes it, it misbehaves, the core drains, or it
/// moves to another core. `slot` is its place among the data connections (see `balance.rs`):
/// `None` until its first Produce or Fetch has been answered; then it is placed on the core
/// with the fewest data connections, and if that is another core the socket moves there, at
/// that request boundary (pipelined requests wait in the socket for the new core).
///
/// Once placed, consecutive Produce requests are pipelined (`produce.pipeline.depth`): each is
/// read and handed to its partitions' cores while the ones before it are still being written,
/// and the answers go out in request order. Any other request first waits for those in flight,
/// so everything else sees the one-at-a-time order Kafka gives.
pub async fn serve(
    ctx: Rc<CoreContext>,
    mut stream: TcpStream,
    peer: SocketAddr,
    slot: Option<ConnectionSlot>,
) {
    debug_assert!(slot.as_ref().is_none_or(|s| s.core() == ctx.core_id));
    let mut slot = slot;
    ctx.open_connections.set(ctx.open_connections.get() + 1);
    let _guard = ConnectionGuard(ctx.clone());
    let max_bytes = ctx.config.socket_request_max_bytes;
    let depth = ctx.config.produce_pipeline_depth;
    tracing::debug!(%peer, core = ctx.core_id, "connection opened");
    let mut conn = Conn {
        ctx: &ctx,
        stream: &mut stream,
        peer,
        sent_cold: crate::page_cache::SentCold::new(!ctx.config.fetch_cold_pages_keep),
        in_flight: VecDeque::with_capacity(depth),
        in_flight_max: 0,
    };
    loop {
        if ctx.draining.get() || !conn.answer_until_readable(depth).await || ctx.draining.get() {
            break;
        }
        let size = {
            let read = async { Some(read_frame_len(conn.stream, max_bytes).await) };
            let drain = async {
                ctx.drain_signal.notified().await;
                None
            };
            read.or(drain).await
        };
        let size = match size {
            None => break,
            Some(Ok(Some(size))) => size,
            Some(Ok(None)) => break,
            Some(Err(FrameError::Io(e))) => {
                tracing::debug!(%peer, error = %e, "connection lost");
                break;
            }
            Some(Err(e)) => {
                tracing::warn!(%peer, error = %e, "closing connection: bad frame");
                break;
            }
        };
        // Bound the request bytes buffered on this core (`queued.max.request.bytes`): wait
        // for room before allocating the body. Held until the request is answered. Requests
        // in flight here hold room too: answer them rather than wait on ourselves.
        let permit = loop {
            match ctx.request_bytes.try_acquire_permit(size as u64) {
                Ok(permit) => break Some(permit),
                Err(_) if !conn.in_flight.is_empty() => {
                    if !conn.answer_oldest().await {
                        break None;
                    }
                }
                Err(_) => break ctx.request_bytes.acquire_permit(size as u64).await.ok(),
            }
        };
        let Some(permit) = permit else { break };
        let body = match read_frame_body(conn.stream, size, &ctx.request_pool).await {
            Ok(body) => body,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "connection lost mid-request");
                break;
            }
        };
        if depth > 1 && slot.is_some() && api_key(&body) == Some(ApiKey::Produce) {
            match AssertUnwindSafe(start_produce(&ctx, body))
                .catch_unwind()
                .await
            {
                Ok(Ok(reply)) => {
                    conn.in_flight.push_back(InFlight {
                        reply,
                        _permit: permit,
                    });
                    conn.in_flight_max = conn.in_flight_max.max(conn.in_flight.len());
                    continue;
                }
                // Answer what came before, then fail as a request handled alone would.
                Ok(Err(e)) => {
                    let _ = conn.answer_all().await;
                    conn.send(Ok(Err(e))).await;
                }
                Err(panic) => {
                    let _ = conn.answer_all().await;
                    conn.send(Err(panic)).await;
                }
            }
            break;
        }
        if !conn.answer_all().await {
            break;
        }
        let place_after = slot.is_none() && carries_data(&body);
        let answer = AssertUnwindSafe(handle_frame(&ctx, body, peer))
            .catch_unwind()
            .await;
        // Counted on its core before the client sees the answer, so its next connection is
        // placed knowing about this one.
        let placed = (place_after && !ctx.draining.get()).then(|| {
            ctx.connections
                .claim(ctx.connections.least_loaded(ctx.core_id))
        });
        let go_on = conn.send(answer).await;
        drop(permit);
        if !go_on {
            break;
        }
        if let Some(placed) = placed {
            if placed.core() == ctx.core_id {
                slot = Some(placed);
                continue;
            }
            match duplicate(conn.stream) {
                Ok(socket) => {
                    hand_over(&ctx, socket, peer, placed);
                    // This core's descriptor closes with `stream`; the socket lives on.
                    return;
                }
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "cannot move a connection; serving it here");
                    drop(placed);
                    slot = Some(ctx.connections.claim(ctx.core_id));
                }
            }
        }
    }
    if ctx.draining.get() {
        // Appends already issued are answered, so their clients do not resend them.
        if conn.answer_all().await {
            close_gracefully(conn.stream).await;
        }
    }
    let produce_in_flight_max = conn.in_flight_max;
    tracing::debug!(%peer, core = ctx.core_id, produce_in_flight_max, "connection closed");
}

/// A request's outcome: its reply, its error, or its handler's panic.
type Answer = std::thread::Result<Result<Reply, RequestError>>;

/// A Produce read and handed to its partitions' cores while earlier ones were still being
/// written; answered in request order.
struct InFlight<'a> {
    reply: PendingReply,
    /// Its bytes stay counted in `queued.max.request.bytes` until it is answered.
    _permit: Permit<'a>,
}

/// One connection's socket and the requests it has in flight.
struct Conn<'a> {
    ctx: &'a Rc<CoreContext>,
    stream: &'a mut TcpStream,
    peer: SocketAddr,
    sent_cold: crate::page_cache::SentCold,
    /// Oldest first; at most `produce.pipeline.depth`.
    in_flight: VecDeque<InFlight<'a>>,
    /// The most Produce requests this connection has had in flight at once (logged).
    in_flight_max: usize,
}

impl Conn<'_> {
    /// Answers pipelined requests as they complete, until the client has sent more and there
    /// is room in the pipeline for it (or there is nothing in flight). False if the connection
    /// must close.
    async fn answer_until_readable(&mut self, depth: usize) -> bool {
        loop {
            if self.in_flight.len() >= depth {
                if !self.answer_oldest().await {
                    return false;
                }
                continue;
            }
            let Some(front) = self.in_flight.front_mut() else {
                return true;
            };
            let answer = AssertUnwindSafe(front.reply.as_mut()).catch_unwind();
            let answer = match futures_lite::future::poll_once(answer).await {
                Some(answer) => Some(answer),
                None if bytes_waiting(self.stream) => return true,
                None => {
                    let answer =
                        async { Some(AssertUnwindSafe(front.reply.as_mut()).catch_unwind().await) };
                    let readable = async {
                        // Peeking consumes nothing, so losing this race loses no bytes.
                        let _ = self.stream.peek(&mut [0u8; 1]).await;
                        None
                    };
                    answer.or(readable).await
                }
            };
            let Some(answer) = answer else {
                return true;
            };
            let done = self.in_flight.pop_front();
            let go_on = self.send(answer).await;
            drop(done);
            if !go_on {
                return false;
            }
        }
    }

    /// Waits for the oldest request in flight and sends its answer. False if the connection
    /// must close.
    async fn answer_oldest(&mut self) -> bool {
        let Some(mut oldest) = self.in_flight.pop_front() else {
            return true;
        };
        let answer = AssertUnwindSafe(oldest.reply.as_mut()).catch_unwind().await;
        let go_on = self.send(answer).await;
        drop(oldest);
        go_on
    }

    /// Answers every request in flight, in order. False if the connection must close.
    async fn answer_all(&mut self) -> bool {
        while !self.in_flight.is_empty() {
            if !self.answer_oldest().await {
                return false;
            }
        }
        true
    }

    /// Sends one request's answer. False if the connection must close: the write failed, or
    /// the request failed in a way that closes it.
    async fn send(&mut self, answer: Answer) -> bool {
        let peer = self.peer;
        let written = match answer {
            Ok(Ok(Reply::Frame(frame))) => write_frame(self.stream, &frame).await,
            Ok(Ok(Reply::Parts(parts))) => {
                // Reads queued ahead delay every append: cold parts are read all at once (and
                // ahead) only while no producer writes, a step at a time otherwise.
                let appends_quiet = self
                    .ctx
                    .appends
                    .quiet_for(crate::disk_activity::READ_AHEAD_QUIET_MS);
                write_frame_parts(self.stream, &parts, appends_quiet, &mut self.sent_cold).await
            }
            Ok(Ok(Reply::None)) => Ok(()),
            Ok(Ok(Reply::Close)) => {
                tracing::debug!(%peer, "acks=0 produce failed; closing connection");
                return false;
            }
            Ok(Err(e)) => {
                tracing::warn!(%peer, error = %e, "closing connection");
                return false;
            }
            Err(_) => {
                tracing::error!(%peer, "request handler panicked; closing connection");
                return false;
            }
        };
        if let Err(e) = written {
            tracing::debug!(%peer, error = %e, "write failed");
            return false;
        }
        true
    }
}

/// Whether the client has sent bytes not read yet (or closed its side, or the socket failed:
/// the next read says which). Does not wait.
fn bytes_waiting(stream: &TcpStream) -> bool {
    let mut byte = 0u8;
    // SAFETY: `stream` keeps its descriptor open for the call, and `byte` is a valid one-byte
    // buffer for it; MSG_PEEK leaves the data in the socket.
    let n = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n >= 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::WouldBlock
}

/// The API key of a request frame's body.
fn api_key(body: &Bytes) -> Option<ApiKey> {
    let key = body.get(..2).map(|k| i16::from_be_bytes([k[0], k[1]]))?;
    ApiKey::try_from(key).ok()
}

/// A second descriptor of the connection's socket, to move it to another core.
fn duplicate(stream: &TcpStream) -> std::io::Result<OwnedFd> {
    // SAFETY: `stream` keeps its descriptor open for the duration of the call.
    let dup = unsafe { libc::fcntl(stream.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
    if dup < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `dup` is a fresh descriptor (checked above) that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(dup) })
}

/// Sends a connection's socket to the core `slot` counts it on, which serves it from its next
/// request. If that core is gone (shutting down), the socket is closed and the client
/// reconnects.
fn hand_over(ctx: &Rc<CoreContext>, socket: OwnedFd, peer: SocketAddr, slot: ConnectionSlot) {
    let target = slot.core();
    let ctx = ctx.clone();
    glommio::spawn_local(async move {
        let request = CoreRequest::Adopt { socket, peer, slot };
        if ctx.call(target, request).await.is_err() {
            tracing::debug!(core = target, %peer, "core gone; connection closed");
        }
    })
    .detach();
}

/// How long a connection closed by a shutdown waits for the client to close its side.
pub const DRAIN_LINGER_MS: u64 = 1_000;

/// How long a connection closed by a shutdown keeps quiet after its last response before
/// sending its FIN.
pub const DRAIN_FIN_DELAY_MS: u64 = 250;

/// Ends a connection at shutdown without losing answers already sent.
///
/// First [`DRAIN_FIN_DELAY_MS`] of silence: some clients (kafka-python 3) drop the bytes of a
/// read that ends in EOF, so a last response arriving together with the FIN would be lost and
/// its appended Produce retried after the restart: a duplicate. Then FIN, and read and discard
/// what the client had already pipelined (requests we will not answer; it resends them
/// elsewhere) until it closes or [`DRAIN_LINGER_MS`] pass. Closing with unread bytes in the
/// receive buffer would send an RST instead, and an RST makes the client's kernel drop
/// responses it received but had not read yet.
async fn close_gracefully(stream: &mut TcpStream) {
    let client_closed = discard_until_eof(stream)
        .or(async {
            glommio::timer::sleep(std::time::Duration::from_millis(DRAIN_FIN_DELAY_MS)).await;
            false
        })
        .await;
    if client_closed {
        return;
    }
    let _ = stream.shutdown(std::net::Shutdown::Write).await;
    discard_until_eof(stream)
        .or(async {
            glommio::timer::sleep(std::time::Duration::from_millis(DRAIN_LINGER_MS)).await;
            false
        })
        .await;
}

/// Reads and drops bytes until the peer closes (true) or the connection fails (false).
async fn discard_until_eof(stream: &mut TcpStream) -> bool {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) => return true,
            Ok(_) => {}
            Err(_) => return false,
        }
    }
}

/// Parses the header and dispatches one request.
pub async fn handle_frame(
    ctx: &Rc<CoreContext>,
    body: Bytes,
    peer: SocketAddr,
) -> Result<Reply, RequestError> {
    match parse_header(body)? {
        Parsed::Request { key, header, body } => {
            handlers::dispatch(ctx, key, &header, body, peer).await
        }
        Parsed::Answered(reply) => Ok(reply),
    }
}

/// Parses a Produce frame's header and hands its records to their partitions' cores; the
/// future it returns gives the answer (see [`handlers::start_produce`]).
async fn start_produce(ctx: &Rc<CoreContext>, body: Bytes) -> Result<PendingReply, RequestError> {
    match parse_header(body)? {
        Parsed::Request { header, body, .. } => handlers::start_produce(ctx, &header, body).await,
        Parsed::Answered(reply) => Ok(Box::pin(std::future::ready(Ok(reply)))),
    }
}

/// A request frame after its header.
enum Parsed {
    /// To be handled.
    Request {
        key: ApiKey,
        header: RequestHeader,
        body: Bytes,
    },
    /// Answered from the header alone.
    Answered(Reply),
}

fn parse_header(mut body: Bytes) -> Result<Parsed, RequestError> {
    // The frame reader guarantees at least 10 bytes: key, version, correlation id.
    let mut peek = &body[..];
    let raw_key = peek.get_i16();
    let version = peek.get_i16();
    let correlation_id = peek.get_i32();
    let key = ApiKey::try_from(raw_key).map_err(|_| RequestError::UnknownApi(raw_key))?;
    if key == ApiKey::ApiVersions {
        let (min, max) = handlers::supported_range(key).unwrap_or((0, 0));
        if !(min..=max).contains(&version) {
            return handlers::api_versions::fallback_frame(correlation_id)
                .map(|frame| Parsed::Answered(Reply::Frame(frame)));
        }
    }
    if handlers::supported_range(key).is_none() {
        return Err(RequestError::UnknownApi(raw_key));
    }
    let header_version = key.request_header_version(version);
    let header =
        RequestHeader::decode(&mut body, header_version).map_err(|e| RequestError::Malformed {
            key,
            version,
            message: e.to_string(),
        })?;
    Ok(Parsed::Request { key, header, body })
}
