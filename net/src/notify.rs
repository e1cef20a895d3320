//! A core-local "something happened" signal: tasks wait on it, one call wakes them all.
//! Used for appends (long-polling fetches wait on the partitions they read) and shutdown.
//! Single-threaded by design (`Rc`/`RefCell`, no atomics): every user lives on one core.
//!
//! Waiters live in a slab: a [`Notified`] that is dropped before the signal fires (a fetch
//! that timed out, a connection whose read won the race against the drain signal) frees its
//! slot, so the waiter list is bounded by the number of *live* waiters, however many come
//! and go between two notifications.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

#[derive(Default)]
struct Waiters {
    /// Registered wakers; `None` marks a free slot.
    slots: Vec<Option<Waker>>,
    /// Indexes of free slots in `slots`.
    free: Vec<usize>,
}

/// Wakes every waiter registered since the last notification.
#[derive(Default)]
pub struct LocalNotify {
    /// Bumped by each notification; slots handed out under an older generation are void.
    generation: Cell<u64>,
    waiters: RefCell<Waiters>,
}

impl LocalNotify {
    /// A new signal with no waiters.
    pub fn new() -> Self {
        Self::default()
    }

    /// Wakes all current waiters.
    pub fn notify_all(&self) {
        self.generation.set(self.generation.get().wrapping_add(1));
        let slots = {
            let mut waiters = self.waiters.borrow_mut();
            waiters.free.clear();
            std::mem::take(&mut waiters.slots)
        };
        for waker in slots.into_iter().flatten() {
            waker.wake();
        }
    }

    /// A future that completes at the next [`notify_all`](Self::notify_all) after this call.
    pub fn notified(&self) -> Notified<'_> {
        Notified {
            notify: self,
            generation: self.generation.get(),
            slot: None,
        }
    }

    /// Registered waiters (for tests and metrics).
    pub fn waiter_count(&self) -> usize {
        self.waiters
            .borrow()
            .slots
            .iter()
            .filter(|w| w.is_some())
            .count()
    }

    /// Slots allocated, live or free (for tests: shows the list does not grow).
    #[cfg(test)]
    fn slot_capacity(&self) -> usize {
        self.waiters.borrow().slots.len()
    }
}

/// Future returned by [`LocalNotify::notified`].
pub struct Notified<'a> {
    notify: &'a LocalNotify,
    generation: u64,
    /// Our slot in the waiter slab; valid while the generation is unchanged (a notification
    /// empties the slab).
    slot: Option<usize>,
}

impl Notified<'_> {
    fn registered(&self) -> Option<usize> {
        self.slot
            .filter(|_| self.notify.generation.get() == self.generation)
    }
}

impl Future for Notified<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.notify.generation.get() != self.generation {
            return Poll::Ready(());
        }
        let slot = {
            let mut waiters = self.notify.waiters.borrow_mut();
            match self.slot {
                Some(i) => {
                    if let Some(entry) = waiters.slots.get_mut(i) {
                        *entry = Some(cx.waker().clone());
                    }
                    i
                }
                None => match waiters.free.pop() {
                    Some(i) => {
                        waiters.slots[i] = Some(cx.waker().clone());
                        i
                    }
                    None => {
                        waiters.slots.push(Some(cx.waker().clone()));
                        waiters.slots.len() - 1
                    }
                },
            }
        };
        self.slot = Some(slot);
        Poll::Pending
    }
}

impl Drop for Notified<'_> {
    fn drop(&mut self) {
        if let Some(i) = self.registered() {
            let mut waiters = self.notify.waiters.borrow_mut();
            if let Some(entry) = waiters.slots.get_mut(i)
                && entry.take().is_some()
            {
                waiters.free.push(i);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wakes_after_notify_and_not_before() {
        let notify = LocalNotify::new();
        let mut fut = Box::pin(notify.notified());
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        assert_eq!(notify.waiter_count(), 1, "re-poll must not grow the list");
        notify.notify_all();
        assert!(fut.as_mut().poll(&mut cx).is_ready());
        assert_eq!(notify.waiter_count(), 0);
    }

    #[test]
    fn dropped_waiters_free_their_slot() {
        let notify = LocalNotify::new();
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut keep = Box::pin(notify.notified());
        assert!(keep.as_mut().poll(&mut cx).is_pending());
        // A connection's many requests: each races a fresh waiter and drops it.
        for _ in 0..10_000 {
            let mut f = Box::pin(notify.notified());
            assert!(f.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(notify.waiter_count(), 1);
        assert!(notify.slot_capacity() <= 2, "{}", notify.slot_capacity());
        // A waiter from before a notification does not free a slot of the next generation.
        let mut old = Box::pin(notify.notified());
        assert!(old.as_mut().poll(&mut cx).is_pending());
        notify.notify_all();
        let mut new = Box::pin(notify.notified());
        assert!(new.as_mut().poll(&mut cx).is_pending());
        drop(old);
        assert_eq!(
            notify.waiter_count(),
            1,
            "the new waiter is still registered"
        );
        assert!(keep.as_mut().poll(&mut cx).is_ready());
        notify.notify_all();
        assert!(new.as_mut().poll(&mut cx).is_ready());
    }
}
