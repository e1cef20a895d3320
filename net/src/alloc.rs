//! A global allocator guard against hostile array lengths.
//!
//! `kafka-protocol` decodes an array by reading its length and calling
//! `Vec::with_capacity(len)` before reading any element. A 20-byte request declaring 2^31
//! elements thus asks for hundreds of GiB; the system allocator refuses and Rust aborts the
//! whole broker. [`GuardedAlloc`] serves every allocation of [`HUGE_ALLOCATION_BYTES`] or
//! more with an anonymous `MAP_NORESERVE` mapping instead: address space only, no memory is
//! committed until touched, and the decoder fails on the first missing element and frees it.
//! Legitimate allocations that large are rare and behave the same (pages appear on first
//! touch). Everything smaller goes to the system allocator unchanged.
//!
//! Install it in a binary with `#[global_allocator] static A: GuardedAlloc = GuardedAlloc;`.

use std::alloc::{GlobalAlloc, Layout, System};

/// Allocations at least this large are served by `mmap(MAP_NORESERVE)`.
pub const HUGE_ALLOCATION_BYTES: usize = 1 << 30;

const PAGE_BYTES: usize = 4096;

/// The system allocator, except for huge allocations (see the module docs).
pub struct GuardedAlloc;

fn is_huge(layout: &Layout) -> bool {
    layout.size() >= HUGE_ALLOCATION_BYTES && layout.align() <= PAGE_BYTES
}

// SAFETY: small requests are forwarded to `System` unchanged. Huge ones get a fresh private
// anonymous mapping of at least `size` bytes, page aligned (satisfying any align <= 4096, the
// only ones routed here), zero-filled, and are unmapped with the same length on dealloc; the
// routing decision depends only on the layout, which Rust passes identically to alloc and
// dealloc, so each pointer returns to the allocator that produced it.
unsafe impl GlobalAlloc for GuardedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !is_huge(&layout) {
            // SAFETY: forwarded with the caller's guarantees.
            return unsafe { System.alloc(layout) };
        }
        // SAFETY: anonymous private mapping, no fd, no fixed address.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                layout.size(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            std::ptr::null_mut()
        } else {
            ptr.cast()
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !is_huge(&layout) {
            // SAFETY: forwarded with the caller's guarantees.
            return unsafe { System.alloc_zeroed(layout) };
        }
        // SAFETY: anonymous mappings are zero-filled.
        unsafe { self.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if !is_huge(&layout) {
            // SAFETY: `ptr` came from `System` with this layout (same routing rule).
            return unsafe { System.dealloc(ptr, layout) };
        }
        // SAFETY: `ptr` is the start of a mapping of `layout.size()` bytes made by `alloc`.
        unsafe {
            libc::munmap(ptr.cast(), layout.size());
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `new_size` with `layout.align()` is a valid layout.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        if !is_huge(&layout) && !is_huge(&new_layout) {
            // SAFETY: forwarded with the caller's guarantees.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // Crossing the threshold (or staying huge): allocate, copy, free.
        // SAFETY: new_layout is valid (above); copying min(old, new) bytes stays in bounds
        // of both blocks; the old block is freed with its own layout.
        unsafe {
            let new_ptr = self.alloc(new_layout);
            if !new_ptr.is_null() {
                std::ptr::copy_nonoverlapping(ptr, new_ptr, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            new_ptr
        }
    }
}

/// glibc serves allocations from this size up with `mmap`, each freed with `munmap`.
const MMAP_THRESHOLD_BYTES: usize = 32 << 20;

/// glibc gives the top of a heap back to the kernel once this much of it is free. Above the
/// 64 MiB of a thread arena's heap: the cores' heaps are never trimmed.
const TRIM_THRESHOLD_BYTES: usize = 128 << 20;

/// Keeps glibc's allocator from mapping and unmapping the broker's large buffers.
///
/// O_DIRECT write buffers (hundreds of KiB each, kept by the tail cache) and large request
/// bodies start above glibc's initial `mmap` threshold (128 KiB). glibc raises it only when such
/// a block is freed, and the tail cache frees nothing until it is full (256 MiB per core by
/// default), so on a fresh broker every buffer was an `mmap`, later a `munmap`: 1,500 of each in
/// the first 5 s of a 1.3 GB/s load. Each takes the process's `mmap_lock` for writing, and the
/// page faults of the other core waited on it (sampled in D state in `lock_mm_and_find_vma`):
/// end-to-end p99 in the first seconds after start was tens to hundreds of ms, 2 ms later on.
/// With a fixed threshold the buffers come from the cores' heaps, and with a high trim
/// threshold their pages stay for reuse: memory the configured budgets (tail cache, request
/// pool) allow anyway. Call once at start-up; a no-op where the allocator is not glibc's.
pub fn tune_system_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only sets allocator parameters; it is called before the cores start,
    // and glibc serialises it with allocations anyway.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES as libc::c_int);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES as libc::c_int);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// After tuning, a 1 MiB buffer (an O_DIRECT write's size) comes from the heap, not from a
    /// mapping of its own. Test threads run concurrently, so the count of mapped blocks is read
    /// while the buffers are held: 16 of them would add 16 mappings untuned.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn large_buffers_come_from_the_heap_once_tuned() {
        tune_system_allocator();
        // SAFETY: mallinfo2 only reads allocator statistics.
        let mapped = || unsafe { libc::mallinfo2().hblks };
        let before = mapped();
        let buffers: Vec<Vec<u8>> = (0..16).map(|i| vec![i as u8; 1 << 20]).collect();
        let during = mapped();
        assert!(during < before + 16, "{before} -> {during} mapped blocks");
        assert_eq!(buffers.iter().map(|b| b[7] as usize).sum::<usize>(), 120);
    }

    #[test]
    fn huge_allocation_is_address_space_only() {
        let a = GuardedAlloc;
        // 256 GiB: more than this machine's memory; must not fail or commit memory.
        let layout = Layout::from_size_align(256 << 30, 8).unwrap();
        // SAFETY: valid non-zero layout; freed below with the same layout.
        unsafe {
            let p = a.alloc(layout);
            assert!(!p.is_null());
            *p = 7;
            *p.add((256 << 30) - 1) = 9;
            assert_eq!(*p, 7);
            let q = a.realloc(p, layout, 4096);
            assert_eq!(*q, 7);
            a.dealloc(q, Layout::from_size_align(4096, 8).unwrap());
        }
        // Small allocations go to the system allocator.
        let small = Layout::from_size_align(64, 8).unwrap();
        // SAFETY: as above.
        unsafe {
            let p = a.alloc_zeroed(small);
            assert_eq!(*p, 0);
            a.dealloc(p, small);
        }
    }
}
