//! A single-threaded async mutex. The engine's `Log` lives on one core and is `!Send`, so a
//! lock only has to order tasks of one executor; this one works under any executor (glommio,
//! tokio `LocalSet`, `block_on`), which the portable backend needs.
//!
//! It is a FIFO ticket lock. A waiter that is dropped before acquiring gives up its ticket, so
//! a cancelled request never blocks the queue.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

#[derive(Default)]
pub(crate) struct LocalMutex {
    next_ticket: Cell<u64>,
    serving: Cell<u64>,
    waiters: RefCell<BTreeMap<u64, Waker>>,
    abandoned: RefCell<BTreeSet<u64>>,
}

impl LocalMutex {
    pub(crate) fn lock(&self) -> LockFuture<'_> {
        let ticket = self.next_ticket.get();
        self.next_ticket.set(ticket + 1);
        LockFuture {
            mutex: self,
            ticket,
            acquired: false,
        }
    }

    /// Pass the lock to the next live ticket.
    fn advance(&self) {
        let mut next = self.serving.get() + 1;
        {
            let mut abandoned = self.abandoned.borrow_mut();
            while abandoned.remove(&next) {
                next += 1;
            }
        }
        self.serving.set(next);
        let waker = self.waiters.borrow_mut().remove(&next);
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

pub(crate) struct LockFuture<'a> {
    mutex: &'a LocalMutex,
    ticket: u64,
    acquired: bool,
}

impl<'a> Future for LockFuture<'a> {
    type Output = LocalGuard<'a>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.mutex.serving.get() == self.ticket {
            self.acquired = true;
            self.mutex.waiters.borrow_mut().remove(&self.ticket);
            return Poll::Ready(LocalGuard { mutex: self.mutex });
        }
        self.mutex
            .waiters
            .borrow_mut()
            .insert(self.ticket, cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for LockFuture<'_> {
    fn drop(&mut self) {
        if self.acquired {
            return;
        }
        self.mutex.waiters.borrow_mut().remove(&self.ticket);
        if self.mutex.serving.get() == self.ticket {
            // Our turn came but we were cancelled: hand the lock on.
            self.mutex.advance();
        } else {
            self.mutex.abandoned.borrow_mut().insert(self.ticket);
        }
    }
}

pub(crate) struct LocalGuard<'a> {
    mutex: &'a LocalMutex,
}

impl Drop for LocalGuard<'_> {
    fn drop(&mut self) {
        self.mutex.advance();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::{block_on, poll_once};

    #[test]
    fn fifo_and_cancellation() {
        let m = LocalMutex::default();
        block_on(async {
            let g1 = m.lock().await;
            let mut f2 = Box::pin(m.lock());
            let mut f3 = Box::pin(m.lock());
            assert!(poll_once(&mut f2).await.is_none());
            assert!(poll_once(&mut f3).await.is_none());
            drop(f2); // cancelled waiter must not block f3
            drop(g1);
            let g3 = poll_once(&mut f3).await;
            assert!(g3.is_some());
            let mut f4 = Box::pin(m.lock());
            assert!(poll_once(&mut f4).await.is_none());
            drop(g3);
            assert!(poll_once(&mut f4).await.is_some());
        });
    }
}
