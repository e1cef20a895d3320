//! A core-local "something happened" signal: tasks wait on it, one call wakes them all.
//! Used for appends (long-polling fetches wait on the partitions they read) and shutdown.
//! Single-threaded by design (`Rc`/`RefCell`, no atomics): every user lives on one core.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// Wakes every waiter registered since the last notification.
#[derive(Default)]
pub struct LocalNotify {
    generation: Cell<u64>,
    waiters: RefCell<Vec<Waker>>,
}

impl LocalNotify {
    /// A new signal with no waiters.
    pub fn new() -> Self {
        Self::default()
    }

    /// Wakes all current waiters.
    pub fn notify_all(&self) {
        self.generation.set(self.generation.get().wrapping_add(1));
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        for waker in waiters {
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
}

/// Future returned by [`LocalNotify::notified`].
pub struct Notified<'a> {
    notify: &'a LocalNotify,
    generation: u64,
    /// Index of our waker in `waiters`; valid while the generation is unchanged (the list is
    /// only drained by a notification), so re-polls replace it instead of growing the list.
    slot: Option<usize>,
}

impl Future for Notified<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.notify.generation.get() != self.generation {
            return Poll::Ready(());
        }
        let mut waiters = self.notify.waiters.borrow_mut();
        match self.slot {
            Some(i) if i < waiters.len() => waiters[i].clone_from(cx.waker()),
            _ => {
                waiters.push(cx.waker().clone());
                let slot = waiters.len() - 1;
                drop(waiters);
                self.slot = Some(slot);
            }
        }
        Poll::Pending
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
        assert_eq!(
            notify.waiters.borrow().len(),
            1,
            "re-poll must not grow the list"
        );
        notify.notify_all();
        assert!(fut.as_mut().poll(&mut cx).is_ready());
        assert!(notify.waiters.borrow().is_empty());
    }
}
