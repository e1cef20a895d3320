//! Whether the process may register its I/O memory with io_uring, and whether the tail cache
//! fits in it.
//!
//! Each core registers `io.registered.memory.bytes.per.core` with each of glommio's three
//! io_uring rings. Without `CAP_IPC_LOCK` the kernel counts every registration against
//! `RLIMIT_MEMLOCK` (often 8 MiB), registration fails, and glommio logs a bare "registering
//! buffers ... Skipping". The broker still works (the region serves as plain buffers), but
//! every O_DIRECT write then pins its pages; [`registration_shortfall`] lets the broker say why
//! and how to fix it.

/// io_uring rings glommio registers the region with, per core (main, latency, poll).
const RINGS_PER_CORE: u64 = 3;

/// `CAP_IPC_LOCK`'s bit in the capability sets of `/proc/self/status`.
const CAP_IPC_LOCK_BIT: u32 = 14;

/// A warning to log when registering `bytes_per_core` on `cores` cores will fail, or None.
pub fn registration_shortfall(bytes_per_core: usize, cores: usize) -> Option<String> {
    if has_cap_ipc_lock() {
        return None;
    }
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) } != 0 {
        return None;
    }
    shortfall(bytes_per_core, cores, limit.rlim_cur)
}

fn shortfall(bytes_per_core: usize, cores: usize, memlock_bytes: u64) -> Option<String> {
    let needed_bytes = (bytes_per_core as u64)
        .saturating_mul(RINGS_PER_CORE)
        .saturating_mul(cores as u64);
    if memlock_bytes == libc::RLIM_INFINITY || needed_bytes <= memlock_bytes {
        return None;
    }
    Some(format!(
        "io.registered.memory.bytes.per.core: registering {} MiB per core needs {} MiB of \
         locked memory ({RINGS_PER_CORE} io_uring rings x {cores} cores) but RLIMIT_MEMLOCK is \
         {} KiB; write buffers stay unregistered and each O_DIRECT write pins its pages. Raise \
         the limit (`ulimit -l`, systemd `LimitMEMLOCK=`) or grant CAP_IPC_LOCK",
        bytes_per_core >> 20,
        needed_bytes >> 20,
        memlock_bytes >> 10,
    ))
}

/// A warning to log when the tail cache and the registered region do not fit together, or
/// None. `requested` is `tail.cache.bytes.per.core`, `cache` what the broker uses (less when
/// `auto` registered memory could not hold it, see `BrokerConfig`), `region` the registered
/// bytes per core. A cache that takes the region leaves later write buffers to the heap:
/// unregistered (each write pins its pages) and faulted in on their first write.
pub fn tail_cache_warning(requested: usize, cache: usize, region: usize) -> Option<String> {
    use crate::config::{REGISTERED_BYTES_BEYOND_CACHE, REGISTERED_BYTES_MAX};
    if cache < requested {
        return Some(format!(
            "tail.cache.bytes.per.core: the cache holds {} MiB per core, not the {} MiB set: \
             it lives in the memory registered with io_uring for O_DIRECT writes, {} MiB per \
             core here with {} MiB kept for writes in flight (io_uring registers at most {} MiB, \
             and `auto` takes at most half the machine's memory over all cores)",
            cache >> 20,
            requested >> 20,
            region >> 20,
            REGISTERED_BYTES_BEYOND_CACHE >> 20,
            REGISTERED_BYTES_MAX >> 20,
        ));
    }
    if cache.saturating_add(REGISTERED_BYTES_BEYOND_CACHE) > region {
        return Some(format!(
            "tail.cache.bytes.per.core: a cache of {} MiB per core does not fit in the {} MiB \
             of io.registered.memory.bytes.per.core with {} MiB to spare for writes in flight; \
             write buffers beyond it come from the heap, unregistered, and their pages are \
             touched on first use",
            cache >> 20,
            region >> 20,
            REGISTERED_BYTES_BEYOND_CACHE >> 20,
        ));
    }
    None
}

fn has_cap_ipc_lock() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| effective_caps(&status))
        .is_some_and(|caps| caps & (1 << CAP_IPC_LOCK_BIT) != 0)
}

fn effective_caps(status: &str) -> Option<u64> {
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortfall_counts_every_ring_of_every_core() {
        let mib = 1u64 << 20;
        // 2 cores x 3 rings x 10 MiB = 60 MiB.
        assert!(shortfall(10 << 20, 2, 8 * mib).is_some());
        assert!(shortfall(10 << 20, 2, 59 * mib).is_some());
        assert!(shortfall(10 << 20, 2, 60 * mib).is_none());
        assert!(shortfall(320 << 20, 64, libc::RLIM_INFINITY).is_none());
        let text = shortfall(320 << 20, 2, 8 * mib).unwrap();
        assert!(
            text.contains("1920 MiB") && text.contains("8192 KiB"),
            "{text}"
        );
    }

    #[test]
    fn a_cache_cut_or_outgrowing_the_region_is_reported() {
        let mib = 1usize << 20;
        // The default: 256 MiB of cache in `auto`'s 320 MiB; the most that fits in 1 GiB.
        assert!(tail_cache_warning(256 * mib, 256 * mib, 320 * mib).is_none());
        assert!(tail_cache_warning(960 * mib, 960 * mib, 1024 * mib).is_none());
        // Cut to fit under `auto`.
        let text = tail_cache_warning(2048 * mib, 960 * mib, 1024 * mib).unwrap();
        assert!(
            text.contains("holds 960 MiB") && text.contains("2048 MiB set"),
            "{text}"
        );
        // A region set smaller by hand.
        let text = tail_cache_warning(256 * mib, 256 * mib, 64 * mib).unwrap();
        assert!(text.contains("does not fit in the 64 MiB"), "{text}");
    }

    #[test]
    fn effective_caps_come_from_the_status_line() {
        let status = "Name:\tgregor\nCapInh:\t0000000000000000\nCapEff:\t0000000000004000\n";
        assert_eq!(effective_caps(status), Some(1 << CAP_IPC_LOCK_BIT));
        assert_eq!(effective_caps("Name:\tx\n"), None);
    }
}
