//! Polls a glommio I/O future only when it asked to be woken.
//!
//! Why: glommio 0.9's file I/O futures (`read_at`, `write_rc_at`, `fdatasync`, ...) keep a
//! clone of the task's waker on every poll while the I/O is in flight, and a glommio task
//! panics once 32,767 clones of its waker are alive (the count is an `i16`). A caller that
//! polls a pending future again without being woken for it does exactly that: a `join_all`
//! over many reads re-polls every pending one each time any of them completes (n² clones for
//! n reads), and so does a loop of `poll_once`. A release build of the engine's
//! `concurrent_appends_and_reads` test hit the limit during one zero write.
//!
//! [`WokenOnly`] hands the inner future a waker of its own and polls it again only once that
//! waker was woken, so the inner future holds a bounded number of clones of *that* waker, and
//! the task's waker is held once, whatever the caller does.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

/// Runs `inner`, polling it only on the first poll and after it woke its waker.
pub(crate) fn woken_only<F: Future>(inner: F) -> WokenOnly<F> {
    WokenOnly {
        inner: Box::pin(inner),
        gate: None,
    }
}

pub(crate) struct WokenOnly<F> {
    inner: Pin<Box<F>>,
    /// Created at the first poll; the inner future only ever sees this waker, so each wake-up
    /// it sends passes through the gate.
    gate: Option<(Arc<Gate>, Waker)>,
}

/// What the inner future wakes: it notes the wake-up and passes it on to the latest task.
struct Gate {
    woken: AtomicBool,
    task: Mutex<Option<Waker>>,
}

impl Wake for Gate {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        // A poisoned lock only means a waker panicked while it was held; the slot is fine.
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(task) = task.as_ref() {
            task.wake_by_ref();
        }
    }
}

impl<F: Future> Future for WokenOnly<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        let first = this.gate.is_none();
        let (gate, waker) = this.gate.get_or_insert_with(|| {
            let gate = Arc::new(Gate {
                woken: AtomicBool::new(false),
                task: Mutex::new(None),
            });
            let waker = Waker::from(gate.clone());
            (gate, waker)
        });
        {
            // Kept current even when the inner future is not polled: the task may move on to
            // another waker (another join, another executor queue).
            let mut task = gate.task.lock().unwrap_or_else(|e| e.into_inner());
            if !task.as_ref().is_some_and(|t| t.will_wake(cx.waker())) {
                *task = Some(cx.waker().clone());
            }
        }
        if !first && !gate.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        this.inner.as_mut().poll(&mut Context::from_waker(waker))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::{block_on, poll_once};
    use std::cell::{Cell, RefCell};
    use std::rc::Rc;

    /// A pending future that, like glommio's I/O, keeps a waker clone on every poll.
    struct Hoarder {
        wakers: Rc<RefCell<Vec<Waker>>>,
        polls: Rc<Cell<u32>>,
        done: Rc<Cell<bool>>,
    }

    impl Future for Hoarder {
        type Output = u32;
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<u32> {
            self.polls.set(self.polls.get() + 1);
            if self.done.get() {
                return Poll::Ready(7);
            }
            self.wakers.borrow_mut().push(cx.waker().clone());
            Poll::Pending
        }
    }

    #[test]
    fn repolls_without_a_wake_do_not_reach_the_inner_future() {
        let wakers = Rc::new(RefCell::new(Vec::new()));
        let (polls, done) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(false)));
        let mut f = Box::pin(woken_only(Hoarder {
            wakers: wakers.clone(),
            polls: polls.clone(),
            done: done.clone(),
        }));
        block_on(async {
            for _ in 0..10_000 {
                assert!(poll_once(&mut f).await.is_none());
            }
            assert_eq!(polls.get(), 1, "polled again without a wake");
            assert_eq!(wakers.borrow().len(), 1);
            // The I/O completes: the inner future wakes, and only then is polled again.
            done.set(true);
            for w in wakers.borrow_mut().drain(..) {
                w.wake();
            }
            assert_eq!(poll_once(&mut f).await, Some(7));
            assert_eq!(polls.get(), 2);
        });
    }

    #[test]
    fn a_wake_reaches_the_task_that_polled_last() {
        use std::sync::atomic::AtomicUsize;
        struct Count(AtomicUsize);
        impl Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let wakers = Rc::new(RefCell::new(Vec::new()));
        let (polls, done) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(false)));
        let mut f = Box::pin(woken_only(Hoarder {
            wakers: wakers.clone(),
            polls,
            done,
        }));
        let (a, b) = (
            Arc::new(Count(AtomicUsize::new(0))),
            Arc::new(Count(AtomicUsize::new(0))),
        );
        let (wa, wb) = (Waker::from(a.clone()), Waker::from(b.clone()));
        assert!(f.as_mut().poll(&mut Context::from_waker(&wa)).is_pending());
        assert!(f.as_mut().poll(&mut Context::from_waker(&wb)).is_pending());
        wakers.borrow()[0].wake_by_ref();
        assert_eq!(a.0.load(Ordering::SeqCst), 0);
        assert_eq!(b.0.load(Ordering::SeqCst), 1);
    }
}
