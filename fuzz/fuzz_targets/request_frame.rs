//! Request framing, header decoding and dispatch on arbitrary bytes from a client: the bytes
//! are cut into frames by the broker's own frame reader and each frame goes through
//! `connection::handle_frame` (api key/version check, `kafka-protocol` header and body
//! decoding, the handler) on a real one-core broker context with a temp data directory. Must
//! never panic. Handlers that wait (long-polling Fetch) are cut off after a short time.
#![no_main]

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use gregor_net::ConfigBuilder;
use gregor_net::connection::handle_frame;
use gregor_net::cores::CoreContext;
use gregor_net::framing::read_frame;
use gregor_net::metadata::MetadataImage;
use libfuzzer_sys::fuzz_target;

// Same allocator as the broker binary: a tiny request that declares a huge array must not
// abort the process.
#[global_allocator]
static ALLOCATOR: gregor_net::alloc::GuardedAlloc = gregor_net::alloc::GuardedAlloc;

const FRAME_BYTES_MAX: usize = 1 << 20;
const FRAMES_PER_INPUT_MAX: usize = 8;
const HANDLER_TIME_MAX: Duration = Duration::from_millis(50);

struct Broker {
    executor: glommio::LocalExecutor,
    ctx: RefCell<Option<Rc<CoreContext>>>,
    _dir: tempfile::TempDir,
    config: Arc<gregor_net::BrokerConfig>,
}

#[path = "shared/scratch.rs"]
mod scratch;
use scratch::scratch_dir;

thread_local! {
    static BROKER: Broker = {
        let dir = scratch_dir();
        let mut b = ConfigBuilder::new();
        for (k, v) in [
            ("data.dir", dir.path().display().to_string()),
            ("storage.backend", "std".to_string()),
            ("cores", "1".to_string()),
            ("listen", "127.0.0.1:0".to_string()),
        ] {
            b.set(k, &v, "fuzz").expect("setting");
        }
        let config = Arc::new(b.build().expect("config"));
        let executor = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .make()
            .expect("executor");
        Broker { executor, ctx: RefCell::new(None), _dir: dir, config }
    };
}

fuzz_target!(|data: &[u8]| {
    BROKER.with(|broker| {
        broker.executor.run(async {
            let ctx = broker
                .ctx
                .borrow_mut()
                .get_or_insert_with(|| {
                    Rc::new(CoreContext::new(
                        0,
                        1,
                        broker.config.clone(),
                        None,
                        MetadataImage::fresh(),
                        gregor_net::balance::ConnectionCounts::new(1),
                        gregor_net::disk_activity::AppendActivity::new(),
                    ))
                })
                .clone();
            let peer = std::net::SocketAddr::from(([127, 0, 0, 1], 1));
            let mut stream = futures_lite::io::Cursor::new(data.to_vec());
            for _ in 0..FRAMES_PER_INPUT_MAX {
                let body = match read_frame(&mut stream, FRAME_BYTES_MAX, &ctx.request_pool).await {
                    Ok(Some(body)) => body,
                    Ok(None) | Err(_) => break,
                };
                let handled = async {
                    let _ = handle_frame(&ctx, body, peer).await;
                };
                futures_lite::future::or(handled, glommio::timer::sleep(HANDLER_TIME_MAX)).await;
            }
        });
    });
});
