//! Waits for a set of futures concurrently on the current core (a tiny `join_all`).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Runs all futures concurrently; outputs come back in input order.
pub async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    JoinAll {
        futures: futures.into_iter().map(|f| Some(Box::pin(f))).collect(),
        outputs: Vec::new(),
    }
    .await
}

struct JoinAll<F: Future> {
    futures: Vec<Option<Pin<Box<F>>>>,
    outputs: Vec<Option<F::Output>>,
}

impl<F: Future> Unpin for JoinAll<F> {}

impl<F: Future> Future for JoinAll<F> {
    type Output = Vec<F::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if this.outputs.len() != this.futures.len() {
            this.outputs = (0..this.futures.len()).map(|_| None).collect();
        }
        let mut pending = false;
        for (slot, out) in this.futures.iter_mut().zip(this.outputs.iter_mut()) {
            if let Some(f) = slot {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => {
                        *out = Some(v);
                        *slot = None;
                    }
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            return Poll::Pending;
        }
        Poll::Ready(this.outputs.drain(..).flatten().collect())
    }
}

/// Completes with the output of the first of `futures` to complete (the others are dropped
/// with it).
pub async fn first_of<F: Future>(futures: Vec<Pin<Box<F>>>) -> F::Output {
    FirstOf(futures).await
}

struct FirstOf<F>(Vec<Pin<Box<F>>>);

impl<F: Future> Future for FirstOf<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        for f in self.0.iter_mut() {
            if let Poll::Ready(v) = f.as_mut().poll(cx) {
                return Poll::Ready(v);
            }
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order() {
        let futs = vec![
            Box::pin(async { 1 }) as Pin<Box<dyn Future<Output = i32>>>,
            Box::pin(async {
                futures_lite::future::yield_now().await;
                2
            }),
            Box::pin(async { 3 }),
        ];
        assert_eq!(
            futures_lite::future::block_on(join_all(futs)),
            vec![1, 2, 3]
        );
    }
}
