//! A single-value, single-core channel: how a parked JoinGroup or SyncGroup request learns its
//! answer. The group state machine keeps the [`Sender`] inside the member; the handler awaits
//! the [`Receiver`] without holding any borrow of the coordinator.
//!
//! Everything lives on one executor (a group is owned by one core), so `Rc<RefCell<_>>` is
//! enough; neither half is `Send`.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

struct Slot<T> {
    value: Option<T>,
    waker: Option<Waker>,
    sender_alive: bool,
    receiver_alive: bool,
}

/// The sending half; consumed by [`Sender::send`]. Dropping it unsent cancels the receiver.
pub struct Sender<T> {
    slot: Rc<RefCell<Slot<T>>>,
}

/// The receiving half: a future resolving to the value, or [`Canceled`] if the sender was
/// dropped without sending (the member was removed, replaced or the coordinator shut down).
pub struct Receiver<T> {
    slot: Rc<RefCell<Slot<T>>>,
}

/// The sender went away without a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Canceled;

/// Creates a connected sender/receiver pair.
pub fn channel<T>() -> (Sender<T>, Receiver<T>) {
    let slot = Rc::new(RefCell::new(Slot {
        value: None,
        waker: None,
        sender_alive: true,
        receiver_alive: true,
    }));
    (Sender { slot: slot.clone() }, Receiver { slot })
}

impl<T> Sender<T> {
    /// Delivers `value`; gives it back if the receiver is gone (the client disconnected).
    pub fn send(self, value: T) -> Result<(), T> {
        let waker = {
            let mut slot = self.slot.borrow_mut();
            if !slot.receiver_alive {
                return Err(value);
            }
            slot.value = Some(value);
            slot.waker.take()
        };
        // Wake after the borrow ends: a waker may poll synchronously in some executors.
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }

    /// True while the receiver still waits (the request has not been abandoned).
    pub fn is_receiver_alive(&self) -> bool {
        self.slot.borrow().receiver_alive
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let waker = {
            let mut slot = self.slot.borrow_mut();
            slot.sender_alive = false;
            slot.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        self.slot.borrow_mut().receiver_alive = false;
    }
}

impl<T> Receiver<T> {
    /// The value if it has arrived, without waiting.
    pub fn try_recv(&mut self) -> Option<T> {
        self.slot.borrow_mut().value.take()
    }
}

impl<T> Future for Receiver<T> {
    type Output = Result<T, Canceled>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut slot = self.slot.borrow_mut();
        if let Some(v) = slot.value.take() {
            return Poll::Ready(Ok(v));
        }
        if !slot.sender_alive {
            return Poll::Ready(Err(Canceled));
        }
        slot.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivers_value_and_reports_cancel() {
        let (tx, rx) = channel::<u32>();
        tx.send(7).unwrap();
        assert_eq!(futures_lite::future::block_on(rx), Ok(7));

        let (tx, rx) = channel::<u32>();
        drop(tx);
        assert_eq!(futures_lite::future::block_on(rx), Err(Canceled));

        let (tx, rx) = channel::<u32>();
        drop(rx);
        assert_eq!(tx.send(1), Err(1));
    }
}
