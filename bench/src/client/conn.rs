//! One TCP connection to a broker: length-prefixed frames, correlation ids, and pipelining. Up
//! to `max_in_flight` requests may be outstanding; Kafka answers them in order on a connection,
//! so a FIFO of pending requests is matched against each response (and a mismatch is a protocol
//! error that fails the connection).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures_lite::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use glommio::net::TcpStream;
use glommio::sync::Semaphore;
use glommio::task::JoinHandle;
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};

use super::error::{ClientError, Result};
use super::oneshot;
use super::versions::Negotiated;

/// Settings of a connection.
#[derive(Debug, Clone)]
pub struct ConnConfig {
    /// Client id sent in every request header.
    pub client_id: String,
    /// Maximum requests awaiting a response.
    pub max_in_flight: usize,
    /// Largest response frame accepted; bigger ones fail the connection before allocating.
    pub max_response_bytes: usize,
    /// Connect timeout.
    pub connect_timeout: Duration,
}

impl Default for ConnConfig {
    fn default() -> Self {
        Self {
            client_id: "gregor".into(),
            max_in_flight: 5,
            max_response_bytes: 128 << 20,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// Pieces of an encoded body shorter than this are copied into the frame around them rather
/// than written on their own (a write costs a syscall and, with TCP_NODELAY, a packet).
const WRITE_COALESCE_BYTES_MAX: usize = 4096;

/// A request body: a message to encode, or pieces already encoded.
enum Body<'a, R> {
    Message(&'a R),
    Encoded(&'a [Bytes]),
}

struct Pending {
    correlation_id: i32,
    header_version: i16,
    reply: oneshot::Sender<Result<Bytes>>,
}

struct Shared {
    addr: String,
    pending: RefCell<VecDeque<Pending>>,
    /// The write half is taken out while a frame is written (under `write_lock`), so no
    /// `RefCell` borrow lives across an await.
    writer: RefCell<Option<WriteHalf<TcpStream>>>,
    write_lock: Semaphore,
    in_flight: Semaphore,
    next_correlation_id: Cell<i32>,
    failed: RefCell<Option<String>>,
    client_id: StrBytes,
}

impl Shared {
    fn fail(&self, why: String) {
        if self.failed.borrow().is_none() {
            *self.failed.borrow_mut() = Some(why);
        }
        let drained: Vec<Pending> = self.pending.borrow_mut().drain(..).collect();
        for p in drained {
            p.reply.send(Err(ClientError::Closed(self.addr.clone())));
            self.in_flight.signal(1);
        }
    }
}

/// A connection with negotiated API versions.
pub struct Connection {
    shared: Rc<Shared>,
    reader: Option<JoinHandle<()>>,
    versions: Negotiated,
}

/// A response not yet received; await [`ResponseFuture::wait`].
pub struct ResponseFuture<R: Request> {
    rx: oneshot::Receiver<Result<Bytes>>,
    version: i16,
    addr: String,
    _marker: std::marker::PhantomData<R>,
}

impl<R: Request> ResponseFuture<R> {
    /// Waits for the response body, undecoded.
    pub async fn wait_raw(self) -> Result<Bytes> {
        match self.rx.await {
            Some(r) => r,
            None => Err(ClientError::Closed(self.addr)),
        }
    }

    /// Waits for and decodes the response.
    pub async fn wait(self) -> Result<R::Response> {
        let version = self.version;
        let mut body = self.wait_raw().await?;
        R::Response::decode(&mut body, version).map_err(|e| {
            ClientError::Protocol(format!(
                "decode {:?} v{} response: {e}",
                api_of::<R>(),
                version
            ))
        })
    }
}

fn api_of<R: Request>() -> ApiKey {
    ApiKey::try_from(R::KEY).unwrap_or(ApiKey::ApiVersions)
}

impl Connection {
    /// Connects and negotiates versions with ApiVersions.
    pub async fn connect(addr: &str, cfg: &ConnConfig) -> Result<Connection> {
        let io_err = |source| ClientError::Io {
            addr: addr.to_string(),
            source,
        };
        let sock_addr = std::net::ToSocketAddrs::to_socket_addrs(addr)
            .map_err(io_err)?
            .next()
            .ok_or_else(|| ClientError::Invalid(format!("cannot resolve {addr}")))?;
        let stream = TcpStream::connect_timeout(sock_addr, cfg.connect_timeout)
            .await
            .map_err(|e| ClientError::Io {
                addr: addr.to_string(),
                source: e.into(),
            })?;
        stream.set_nodelay(true).map_err(|e| io_err(e.into()))?;
        let (rd, wr) = futures_lite::io::split(stream);
        let shared = Rc::new(Shared {
            addr: addr.to_string(),
            pending: RefCell::new(VecDeque::new()),
            writer: RefCell::new(Some(wr)),
            write_lock: Semaphore::new(1),
            in_flight: Semaphore::new(cfg.max_in_flight.max(1) as u64),
            next_correlation_id: Cell::new(1),
            failed: RefCell::new(None),
            client_id: StrBytes::from_string(cfg.client_id.clone()),
        });
        let reader =
            glommio::spawn_local(read_loop(shared.clone(), rd, cfg.max_response_bytes)).detach();
        let mut conn = Connection {
            shared,
            reader: Some(reader),
            versions: Negotiated::default(),
        };
        conn.versions = conn.negotiate().await?;
        Ok(conn)
    }

    async fn negotiate(&self) -> Result<Negotiated> {
        let mut req = ApiVersionsRequest::default();
        req.client_software_name = StrBytes::from_static_str("gregor");
        req.client_software_version = StrBytes::from_static_str(env!("CARGO_PKG_VERSION"));
        let mut version = 3;
        for _ in 0..2 {
            let mut body = self.send(&req, version).await?.wait_raw().await?;
            // A broker that does not know this ApiVersions version answers UNSUPPORTED_VERSION
            // in a v0 body (KIP-511), whatever version was asked; both start with the error.
            let error_code = body
                .first_chunk::<2>()
                .map(|b| i16::from_be_bytes(*b))
                .unwrap_or(0);
            let body_version = if error_code == 35 { 0 } else { version };
            let resp = ApiVersionsResponse::decode(&mut body, body_version).map_err(|e| {
                ClientError::Protocol(format!("decode ApiVersions v{body_version}: {e}"))
            })?;
            if resp.error_code == 35 {
                // UNSUPPORTED_VERSION: the broker lists its ApiVersions range; retry inside it.
                let theirs = resp
                    .api_keys
                    .iter()
                    .find(|k| k.api_key == ApiKey::ApiVersions as i16);
                match theirs {
                    Some(k) if k.max_version < version => {
                        version = k.max_version.min(3);
                        continue;
                    }
                    _ => {}
                }
            }
            ClientError::check(resp.error_code, || "ApiVersions".into())?;
            return Ok(Negotiated::from_broker(
                resp.api_keys
                    .iter()
                    .map(|k| (k.api_key, k.min_version, k.max_version)),
            ));
        }
        Err(ClientError::UnsupportedVersion {
            api: "ApiVersions".into(),
        })
    }

    /// Broker address.
    pub fn addr(&self) -> &str {
        &self.shared.addr
    }

    /// The negotiated versions.
    pub fn versions(&self) -> &Negotiated {
        &self.versions
    }

    /// True once the connection failed; it must be replaced.
    pub fn is_failed(&self) -> bool {
        self.shared.failed.borrow().is_some()
    }

    /// The agreed version for request type `R`.
    pub fn version_of<R: Request>(&self) -> Result<i16> {
        self.versions.version(api_of::<R>())
    }

    /// Sends a request at the negotiated version and waits for its response.
    pub async fn call<R: Request>(&self, req: &R) -> Result<R::Response> {
        let v = self.version_of::<R>()?;
        self.send(req, v).await?.wait().await
    }

    /// Writes a request and returns a future for its response. Waits while `max_in_flight`
    /// requests are outstanding.
    pub async fn send<R: Request>(&self, req: &R, version: i16) -> Result<ResponseFuture<R>> {
        self.send_body(Body::Message(req), version).await
    }

    async fn send_body<R: Request>(
        &self,
        body: Body<'_, R>,
        version: i16,
    ) -> Result<ResponseFuture<R>> {
        let (tx, rx) = oneshot::channel();
        self.write::<R>(body, version, Some(tx)).await?;
        Ok(ResponseFuture {
            rx,
            version,
            addr: self.shared.addr.clone(),
            _marker: Default::default(),
        })
    }

    /// Writes a request the broker will not answer (Produce with acks=0).
    pub async fn send_no_response<R: Request>(&self, req: &R, version: i16) -> Result<()> {
        self.write::<R>(Body::Message(req), version, None).await
    }

    /// Like [`Connection::send`], for a request body already encoded (for `version`) as
    /// `pieces`, which are written in order without being copied into one frame.
    pub async fn send_encoded<R: Request>(
        &self,
        pieces: &[Bytes],
        version: i16,
    ) -> Result<ResponseFuture<R>> {
        self.send_body(Body::Encoded(pieces), version).await
    }

    /// Like [`Connection::send_no_response`], for a body already encoded as `pieces`.
    pub async fn send_encoded_no_response<R: Request>(
        &self,
        pieces: &[Bytes],
        version: i16,
    ) -> Result<()> {
        self.write::<R>(Body::Encoded(pieces), version, None).await
    }

    async fn write<R: Request>(
        &self,
        body: Body<'_, R>,
        version: i16,
        reply: Option<oneshot::Sender<Result<Bytes>>>,
    ) -> Result<()> {
        let s = &self.shared;
        let api = api_of::<R>();
        let closed = || ClientError::Closed(s.addr.clone());
        s.in_flight.acquire(1).await.map_err(|_| closed())?;
        if s.failed.borrow().is_some() {
            s.in_flight.signal(1);
            return Err(closed());
        }
        let correlation_id = s.next_correlation_id.get();
        s.next_correlation_id
            .set(correlation_id.wrapping_add(1) & 0x7fff_ffff);
        let mut header = RequestHeader::default();
        header.request_api_key = R::KEY;
        header.request_api_version = version;
        header.correlation_id = correlation_id;
        header.client_id = Some(s.client_id.clone());
        let header_version = api.request_header_version(version);
        let encode = || -> anyhow::Result<Vec<Bytes>> {
            let header_size = header.compute_size(header_version)?;
            let (body_size, head_capacity) = match &body {
                Body::Message(req) => {
                    let n = req.compute_size(version)?;
                    (n, n)
                }
                Body::Encoded(pieces) => (pieces.iter().map(|p| p.len()).sum(), 0),
            };
            let size = i32::try_from(header_size + body_size)?;
            let mut frame = BytesMut::with_capacity(4 + header_size + head_capacity);
            frame.extend_from_slice(&size.to_be_bytes());
            header.encode(&mut frame, header_version)?;
            let mut writes = Vec::new();
            match &body {
                Body::Message(req) => req.encode(&mut frame, version)?,
                Body::Encoded(pieces) => {
                    // Small pieces join the buffer before them (one write instead of many);
                    // big ones (record batches) are written from where they are.
                    for p in pieces.iter() {
                        if p.len() < WRITE_COALESCE_BYTES_MAX {
                            frame.extend_from_slice(p);
                        } else {
                            if !frame.is_empty() {
                                writes.push(frame.split().freeze());
                            }
                            writes.push(p.clone());
                        }
                    }
                }
            }
            if !frame.is_empty() {
                writes.push(frame.freeze());
            }
            Ok(writes)
        };
        let frame = match encode() {
            Ok(f) => f,
            Err(e) => {
                s.in_flight.signal(1);
                return Err(ClientError::Protocol(format!(
                    "encode {api:?} v{version}: {e}"
                )));
            }
        };
        s.write_lock.acquire(1).await.map_err(|_| closed())?;
        let expects_response = reply.is_some();
        if let Some(reply) = reply {
            s.pending.borrow_mut().push_back(Pending {
                correlation_id,
                header_version: api.response_header_version(version),
                reply,
            });
        }
        let writer = s.writer.borrow_mut().take();
        let result = match writer {
            Some(mut w) => {
                let mut r = Ok(());
                for piece in &frame {
                    r = w.write_all(piece).await;
                    if r.is_err() {
                        break;
                    }
                }
                *s.writer.borrow_mut() = Some(w);
                r.map_err(|e| ClientError::Io {
                    addr: s.addr.clone(),
                    source: e,
                })
            }
            None => Err(closed()),
        };
        s.write_lock.signal(1);
        if let Err(e) = result {
            s.fail(e.to_string());
            return Err(e);
        }
        if !expects_response {
            s.in_flight.signal(1);
        }
        Ok(())
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if let Some(r) = self.reader.take() {
            r.cancel();
        }
        self.shared.fail("connection dropped".into());
        self.shared.in_flight.close();
    }
}

async fn read_loop(shared: Rc<Shared>, mut rd: ReadHalf<TcpStream>, max_response_bytes: usize) {
    let pool = Arc::new(BodyPool::default());
    let why = loop {
        let mut len = [0u8; 4];
        if let Err(e) = rd.read_exact(&mut len).await {
            break format!("read: {e}");
        }
        let len = i32::from_be_bytes(len);
        if len < 4 || len as usize > max_response_bytes {
            break format!("response frame of {len} bytes is out of bounds");
        }
        let mut body = pool.take(len as usize);
        if let Err(e) = rd.read_exact(&mut body.buf[..body.len]).await {
            break format!("read: {e}");
        }
        let mut body = body.into_bytes();
        let Some(p) = shared.pending.borrow_mut().pop_front() else {
            break "response without a pending request".into();
        };
        let correlation_id = body.get_i32();
        if correlation_id != p.correlation_id {
            p.reply.send(Err(ClientError::Protocol(format!(
                "correlation id {correlation_id}, expected {}",
                p.correlation_id
            ))));
            shared.in_flight.signal(1);
            break "correlation id mismatch".into();
        }
        if p.header_version >= 1 {
            // Response header v1 adds tagged fields after the correlation id.
            if let Err(e) = skip_tagged_fields(&mut body) {
                p.reply.send(Err(e));
                shared.in_flight.signal(1);
                break "bad response header".into();
            }
        }
        p.reply.send(Ok(body));
        shared.in_flight.signal(1);
    };
    tracing::debug!(addr = %shared.addr, %why, "connection closed");
    shared.fail(why);
}

/// Response bodies at least this big are read into pooled buffers; smaller ones are cheap to
/// allocate and clear.
const POOLED_BODY_BYTES_MIN: usize = 64 << 10;
/// Buffers bigger than this go back to the allocator instead of the pool, so an odd huge
/// response does not stay resident.
const POOLED_BODY_BYTES_MAX: usize = 16 << 20;
/// Idle buffers kept per connection. A consumer holds about two responses at a time (one being
/// read by the caller, one arriving), so a few suffice.
const POOLED_BODIES_MAX: usize = 4;

/// Response buffers for reuse. A socket read needs an initialized `&mut [u8]`, so a fresh buffer
/// must be cleared first (a memset per response byte, about 2% of the machine at 5 GB/s of
/// fetches). A buffer returned here stays initialized, so a reused one is read into as is; only
/// the part beyond its previous length is cleared. Shared through an `Arc` because `Bytes` owners
/// must be `Send`; the lock is uncontended (one thread) and taken twice per large response.
#[derive(Default)]
struct BodyPool(Mutex<Vec<Vec<u8>>>);

impl BodyPool {
    /// A buffer of at least `len` initialized bytes, of which the first `len` will hold the body.
    fn take(self: &Arc<Self>, len: usize) -> PooledBody {
        let reused = if len >= POOLED_BODY_BYTES_MIN {
            self.0.lock().ok().and_then(|mut idle| {
                // The smallest buffer that fits, else the biggest (grown below).
                let fit = idle
                    .iter()
                    .enumerate()
                    .filter(|(_, b)| b.len() >= len)
                    .min_by_key(|(_, b)| b.len())
                    .or_else(|| idle.iter().enumerate().max_by_key(|(_, b)| b.len()))
                    .map(|(i, _)| i);
                fit.map(|i| idle.swap_remove(i))
            })
        } else {
            None
        };
        let mut buf = reused.unwrap_or_default();
        if buf.len() < len {
            buf.resize(len, 0);
        }
        PooledBody {
            buf,
            len,
            pool: (len >= POOLED_BODY_BYTES_MIN).then(|| self.clone()),
        }
    }
}

/// One response body; its buffer goes back to the pool when the last `Bytes` into it is dropped.
struct PooledBody {
    buf: Vec<u8>,
    len: usize,
    pool: Option<Arc<BodyPool>>,
}

impl PooledBody {
    fn into_bytes(mut self) -> Bytes {
        if self.pool.is_none() {
            // Small: hand the allocation over as is (no pool round trip).
            let mut buf = std::mem::take(&mut self.buf);
            buf.truncate(self.len);
            return Bytes::from(buf);
        }
        Bytes::from_owner(self)
    }
}

impl AsRef<[u8]> for PooledBody {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        let Some(pool) = &self.pool else { return };
        if self.buf.len() > POOLED_BODY_BYTES_MAX {
            return;
        }
        if let Ok(mut idle) = pool.0.lock()
            && idle.len() < POOLED_BODIES_MAX
        {
            idle.push(std::mem::take(&mut self.buf));
        }
    }
}

fn skip_tagged_fields(buf: &mut Bytes) -> Result<()> {
    let bad = || ClientError::Protocol("bad tagged fields".into());
    let read_uvarint = |buf: &mut Bytes| -> Result<u64> {
        let mut v = 0u64;
        for i in 0..10 {
            if !buf.has_remaining() {
                return Err(bad());
            }
            let b = buf.get_u8();
            v |= ((b & 0x7f) as u64) << (7 * i);
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(bad())
    };
    let n = read_uvarint(buf)?;
    for _ in 0..n.min(1024) {
        let _tag = read_uvarint(buf)?;
        let size = read_uvarint(buf)? as usize;
        if buf.remaining() < size {
            return Err(bad());
        }
        buf.advance(size);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_bodies_reuse_buffers_and_small_ones_do_not_enter_the_pool() {
        let pool = Arc::new(BodyPool::default());
        let mut a = pool.take(100_000);
        a.buf[..a.len].fill(7);
        let a_ptr = a.buf.as_ptr();
        let a = a.into_bytes();
        assert_eq!(a.len(), 100_000);
        assert!(a.iter().all(|b| *b == 7));
        drop(a);
        // The freed buffer comes back for a body that fits, holding exactly `len` bytes.
        let b = pool.take(80_000);
        assert_eq!(b.buf.as_ptr(), a_ptr);
        let b = b.into_bytes();
        assert_eq!(b.len(), 80_000);
        // While `b` lives its buffer is not handed out again.
        let c = pool.take(90_000);
        assert_ne!(c.buf.as_ptr(), a_ptr);
        drop((b, c));
        // Both come back (a body dropped unread too, as on a read error).
        assert_eq!(pool.0.lock().unwrap().len(), 2);
        // Small bodies bypass the pool.
        let small = pool.take(100).into_bytes();
        assert_eq!(small.len(), 100);
        drop(small);
        assert_eq!(pool.0.lock().unwrap().len(), 2);
        // At most POOLED_BODIES_MAX idle buffers are kept.
        let many: Vec<Bytes> = (0..POOLED_BODIES_MAX + 3)
            .map(|_| pool.take(70_000).into_bytes())
            .collect();
        drop(many);
        assert_eq!(pool.0.lock().unwrap().len(), POOLED_BODIES_MAX);
    }
}
