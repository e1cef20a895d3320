//! Broker start-up and shutdown: one pinned glommio executor per core, the core mesh, the
//! listeners, and the two-phase stop (drain every core, then close every log).

use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use futures_lite::StreamExt;
use glommio::channels::channel_mesh::MeshBuilder;
use glommio::net::TcpListener;
use glommio::{LocalExecutorBuilder, Placement};

use crate::config::BrokerConfig;
use crate::cores::{CoreContext, Envelope, MESH_CHANNEL_CAPACITY};
use crate::metadata::MetadataImage;

/// How long a draining core waits for its connections to finish their current request.
pub const DRAIN_TIMEOUT_MS: u64 = 10_000;

/// Start-up failures.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Data directory problem.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// Path.
        path: std::path::PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Metadata file problem.
    #[error(transparent)]
    Metadata(#[from] crate::metadata::MetadataError),
    /// Cannot listen.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// A core failed to start or stopped abnormally.
    #[error("core {core}: {message}")]
    Core {
        /// Core index.
        core: usize,
        /// What happened.
        message: String,
    },
    /// Signal handler registration failed.
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
}

/// Messages from the main thread to a core.
enum Control {
    /// Every core is ready: start accepting connections.
    Accept,
    /// Stop accepting, let connections finish, then acknowledge.
    Drain,
    /// Close every log and stop.
    Close,
}

// Control messages cross threads (main thread to each core). futures-channel, not flume 0.10,
// which was seen losing cross-thread messages (see `CoreContext::call`).
type ControlSender = futures_channel::mpsc::UnboundedSender<Control>;
type ControlReceiver = futures_channel::mpsc::UnboundedReceiver<Control>;

/// A running broker.
pub struct ServerHandle {
    local_addr: SocketAddr,
    controls: Vec<ControlSender>,
    acks: std::sync::mpsc::Receiver<usize>,
    threads: Vec<JoinHandle<()>>,
    connections: Arc<crate::balance::ConnectionCounts>,
    peer_requests: Arc<crate::service::PeerRequestCounts>,
}

impl ServerHandle {
    /// The address the broker listens on (with the real port if 0 was configured).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Client connections that carry data (have sent a Produce or Fetch) per core.
    pub fn data_connections_per_core(&self) -> Vec<usize> {
        self.connections.per_core()
    }

    /// Requests from one core being worked on by another right now (long-polling fetch
    /// waits among them), over all cores.
    pub fn peer_requests_in_progress(&self) -> usize {
        self.peer_requests.in_progress()
    }

    /// Requests cores have sent each other since start (each a wake-up of the receiving
    /// core if it slept, and another of the sender for the answer).
    pub fn peer_requests_served(&self) -> u64 {
        self.peer_requests.served()
    }

    /// Clean shutdown: stop accepting, finish in-flight requests, close every partition log.
    pub fn shutdown(self) -> Result<(), ServerError> {
        tracing::info!("shutting down");
        for c in &self.controls {
            let _ = c.unbounded_send(Control::Drain);
        }
        // Every core drains before any closes its logs: an in-flight request on one core may
        // still need partitions owned by another.
        for _ in 0..self.controls.len() {
            if self
                .acks
                .recv_timeout(Duration::from_millis(DRAIN_TIMEOUT_MS + 5_000))
                .is_err()
            {
                tracing::warn!("a core did not finish draining in time");
                break;
            }
        }
        for c in &self.controls {
            let _ = c.unbounded_send(Control::Close);
        }
        let mut result = Ok(());
        for (core, t) in self.threads.into_iter().enumerate() {
            if t.join().is_err() {
                result = Err(ServerError::Core {
                    core,
                    message: "thread panicked".to_string(),
                });
            }
        }
        tracing::info!("stopped");
        result
    }
}

/// Starts the broker; returns once every core listens.
pub fn start(config: BrokerConfig) -> Result<ServerHandle, ServerError> {
    crate::alloc::tune_system_allocator();
    let mut config = config;
    std::fs::create_dir_all(&config.data_dir).map_err(|source| ServerError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    // Partition directories retired by a previous run (deleted topics) that it did not get
    // to delete before it stopped.
    if let Err(e) = gregor_engine::sweep_retired(&config.data_dir) {
        tracing::warn!(error = %e, "cannot scan the data directory for retired partitions");
    }
    let image = MetadataImage::load(&config.data_dir)?;
    if image.epoch == 0 && image.topics.is_empty() {
        // Persist the cluster id now so it survives a restart even with no topics.
        image.save(&config.data_dir)?;
    }

    let online = crate::config::cores_in_use(0);
    let cores = crate::config::cores_in_use(config.cores);
    let (fds, local_addr) =
        crate::listener::bind_all(config.listen, cores).map_err(|source| ServerError::Listen {
            addr: config.listen,
            source,
        })?;
    if config.listen.port() == 0 && config.advertised_port == 0 {
        config.advertised_port = local_addr.port();
    }
    if local_addr.ip().is_unspecified() && config.advertised_host == local_addr.ip().to_string() {
        tracing::warn!(
            "listening on a wildcard address; advertising 127.0.0.1 (set advertised.listener)"
        );
        config.advertised_host = "127.0.0.1".to_string();
    }
    config.listen = local_addr;
    let config = Arc::new(config);

    let mesh: MeshBuilder<Envelope, _> = MeshBuilder::full(cores, MESH_CHANNEL_CAPACITY);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<usize, String>>();
    let (ack_tx, acks) = std::sync::mpsc::channel::<usize>();
    let mut controls = Vec::with_capacity(cores);
    let mut threads = Vec::with_capacity(cores);
    let connections = crate::balance::ConnectionCounts::new(cores);
    let appends = crate::disk_activity::AppendActivity::new();
    let peer_requests = Arc::new(crate::service::PeerRequestCounts::default());
    if let Some(warning) =
        crate::memlock::registration_shortfall(config.io_registered_memory_bytes_per_core, cores)
    {
        tracing::warn!("{warning}");
    }
    // The std backend writes from the heap: no registered memory to fit in.
    if config.storage_backend == crate::config::StorageBackend::Dma
        && let Some(warning) = crate::memlock::tail_cache_warning(
            config.tail_cache_requested_bytes_per_core,
            config.tail_cache_bytes_per_core,
            config.io_registered_memory_bytes_per_core,
        )
    {
        tracing::warn!("{warning}");
    }
    for (core, fd) in fds.into_iter().enumerate() {
        let (control_tx, control_rx) = futures_channel::mpsc::unbounded();
        controls.push(control_tx);
        let placement = if config.cores_pinned && cores <= online {
            Placement::Fixed(core)
        } else {
            Placement::Unbound
        };
        let config = config.clone();
        let mesh = mesh.clone();
        let image = image.clone();
        let ready_tx = ready_tx.clone();
        let ack_tx = ack_tx.clone();
        let connections = connections.clone();
        let appends = appends.clone();
        let peer_requests = peer_requests.clone();
        let raw_fd = fd.into_raw_fd();
        let spawned = LocalExecutorBuilder::new(placement)
            .name(&format!("gregor-core-{core}"))
            .io_memory(config.io_registered_memory_bytes_per_core)
            .spawn(move || async move {
                let setup = CoreSetup {
                    core,
                    cores,
                    config,
                    mesh,
                    image,
                    listener_fd: raw_fd,
                    connections,
                    appends,
                    peer_requests,
                    control: control_rx,
                    ready: ready_tx.clone(),
                    ack: ack_tx,
                };
                if let Err(message) = core_main(setup).await {
                    let _ = ready_tx.send(Err(message));
                }
            });
        match spawned {
            Ok(handle) => threads.push(std::thread::spawn(move || {
                if let Err(e) = handle.join() {
                    tracing::error!(core, error = %e, "core executor failed");
                }
            })),
            Err(e) => {
                return Err(ServerError::Core {
                    core,
                    message: format!("cannot start executor: {e}"),
                });
            }
        }
    }
    drop(ready_tx);
    for _ in 0..cores {
        match ready_rx.recv() {
            Ok(Ok(_)) => {}
            Ok(Err(message)) => return Err(ServerError::Core { core: 0, message }),
            Err(_) => {
                return Err(ServerError::Core {
                    core: 0,
                    message: "a core exited during start-up".to_string(),
                });
            }
        }
    }
    for c in &controls {
        let _ = c.unbounded_send(Control::Accept);
    }
    tracing::info!(
        address = %local_addr,
        cores,
        data_dir = %config.data_dir.display(),
        topics = image.topics.len(),
        "listening on {local_addr}"
    );
    Ok(ServerHandle {
        local_addr,
        controls,
        acks,
        threads,
        connections,
        peer_requests,
    })
}

/// Starts the broker and runs it until SIGTERM or SIGINT, then shuts down cleanly.
pub fn run_until_signal(config: BrokerConfig) -> Result<(), ServerError> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    // Register before starting so a signal during start-up is not lost.
    let mut signals =
        signal_hook::iterator::Signals::new([SIGTERM, SIGINT]).map_err(ServerError::Signals)?;
    let handle = start(config)?;
    if let Some(signal) = signals.forever().next() {
        tracing::info!(signal, "signal received");
    }
    // A second signal means "now": exit without waiting for the clean shutdown.
    std::thread::spawn(move || {
        if let Some(signal) = signals.forever().next() {
            tracing::warn!(signal, "second signal: exiting without a clean shutdown");
            std::process::exit(128 + signal);
        }
    });
    handle.shutdown()
}

struct CoreSetup {
    core: usize,
    cores: usize,
    config: Arc<BrokerConfig>,
    mesh: MeshBuilder<Envelope, glommio::channels::channel_mesh::Full>,
    image: MetadataImage,
    listener_fd: RawFd,
    connections: Arc<crate::balance::ConnectionCounts>,
    appends: Arc<crate::disk_activity::AppendActivity>,
    peer_requests: Arc<crate::service::PeerRequestCounts>,
    control: ControlReceiver,
    ready: std::sync::mpsc::Sender<Result<usize, String>>,
    ack: std::sync::mpsc::Sender<usize>,
}

async fn core_main(setup: CoreSetup) -> Result<(), String> {
    let CoreSetup {
        core,
        cores,
        config,
        mesh,
        image,
        listener_fd,
        connections,
        appends,
        peer_requests,
        mut control,
        ready,
        ack,
    } = setup;
    // SAFETY: the fd is a bound, listening socket created by `listener::bind_all` for this
    // core alone; ownership moves here (no one else closes it).
    let listener = unsafe { TcpListener::from_raw_fd(listener_fd) };
    let (senders, mut receivers) = mesh
        .join()
        .await
        .map_err(|e| format!("cannot join core mesh: {e}"))?;
    let ctx = Rc::new(CoreContext::new(
        core,
        cores,
        config,
        Some(senders),
        image,
        connections,
        appends,
    ));
    for (_peer, receiver) in receivers.streams() {
        glommio::spawn_local(crate::service::serve_peer(
            ctx.clone(),
            receiver,
            peer_requests.clone(),
        ))
        .detach();
    }
    crate::admin::open_all_owned(&ctx).await;
    tracing::debug!(core, partitions = ctx.registry.len(), "core ready");
    glommio::spawn_local(retention_loop(ctx.clone())).detach();
    glommio::spawn_local(crate::group::runtime::run(ctx.clone())).detach();
    let _ = ready.send(Ok(core));

    // Accept only once every core has opened its partitions: a request routed to a core
    // still recovering its logs would get NOT_LEADER_OR_FOLLOWER. Until then connections
    // wait in the listen backlog.
    let mut message = control.next().await;
    let mut accept_task = None;
    if let Some(Control::Accept) = message {
        accept_task = Some(glommio::spawn_local(accept_loop(ctx.clone(), listener)));
        message = control.next().await;
    }
    // Drain first (Close straight away only if the main thread is gone).
    if let Some(Control::Drain) = message {
        ctx.draining.set(true);
        ctx.drain_signal.notify_all();
        if let Some(task) = accept_task {
            task.cancel().await;
        }
        let deadline = glommio::timer::sleep(Duration::from_millis(DRAIN_TIMEOUT_MS));
        let drained = async {
            while ctx.open_connections.get() > 0 {
                ctx.connection_closed.notified().await;
            }
        };
        futures_lite::future::or(drained, deadline).await;
        let _ = ack.send(core);
        // Keep serving peers (they may still finish requests on our partitions) until Close.
        let _ = control.next().await;
    }
    crate::admin::close_all(&ctx).await;
    if let Some(mesh) = &ctx.mesh {
        mesh.close();
    }
    tracing::debug!(core, "core stopped");
    Ok(())
}

async fn accept_loop(ctx: Rc<CoreContext>, listener: TcpListener) {
    // Each core holds its share of `max.connections`; the kernel spreads connections over the
    // cores' listeners, so the shares fill about evenly.
    let max_connections_per_core = ctx.config.max_connections.div_ceil(ctx.cores).max(1);
    let mut refused_since_log: u64 = 0;
    let mut last_refusal_log = std::time::Instant::now() - Duration::from_secs(60);
    loop {
        match listener.accept().await {
            Ok(stream) if ctx.open_connections.get() >= max_connections_per_core => {
                // Refuse by closing at once, as Kafka does past max.connections; one log line
                // per second at most, so a connection flood cannot flood the log too.
                refused_since_log += 1;
                if last_refusal_log.elapsed() >= Duration::from_secs(1) {
                    tracing::warn!(
                        core = ctx.core_id,
                        open = ctx.open_connections.get(),
                        limit_per_core = max_connections_per_core,
                        refused = refused_since_log,
                        "max.connections reached: closing new connections"
                    );
                    refused_since_log = 0;
                    last_refusal_log = std::time::Instant::now();
                }
                drop(stream);
            }
            Ok(stream) => {
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!(error = %e, "cannot set TCP_NODELAY");
                }
                let peer = stream
                    .peer_addr()
                    .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
                glommio::spawn_local(crate::connection::serve(ctx.clone(), stream, peer, None))
                    .detach();
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                glommio::timer::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn retention_loop(ctx: Rc<CoreContext>) {
    let interval = Duration::from_millis(ctx.config.retention_check_interval_ms.max(1_000));
    loop {
        glommio::timer::sleep(interval).await;
        if ctx.draining.get() {
            return;
        }
        for partition in ctx.registry.all() {
            if let Err(code) = partition.log.apply_retention().await {
                tracing::warn!(topic = %partition.topic, partition = partition.index, code, "retention failed");
            }
        }
    }
}
