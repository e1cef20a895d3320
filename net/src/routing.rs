//! Splitting a request's partitions by owning core and merging the answers back in request
//! order.

use std::rc::Rc;

use crate::cores::{CoreContext, CoreReply, CoreRequest};
use crate::join::join_all;

/// Sends each owning core its share of `items` at once, waits for every answer, and merges
/// them back in request order. `request` builds one core's request from its items; `unpack`
/// takes the per-item results out of the reply (`None` for any other kind of reply); an item
/// whose core did not answer gets `fallback()`.
pub async fn call_owners<T, R>(
    ctx: &Rc<CoreContext>,
    items: Vec<T>,
    owner: impl Fn(&T) -> usize,
    request: impl Fn(Vec<T>) -> CoreRequest,
    unpack: impl Fn(CoreReply) -> Option<Vec<R>>,
    fallback: impl Fn() -> R,
) -> Vec<R> {
    let total = items.len();
    let calls = split_by_owner(items, owner).into_iter().map(|split| {
        let ctx = ctx.clone();
        let core = split.core;
        let core_request = request(split.items);
        async move { (split.positions, core, ctx.call(core, core_request).await) }
    });
    let answers = join_all(calls.collect())
        .await
        .into_iter()
        .map(|(positions, core, reply)| {
            // A failed call is logged by `CoreContext::call`.
            (positions, unpack_reply(core, reply.ok(), &unpack))
        })
        .collect();
    merge(total, answers, fallback)
}

/// The items of one request owned by one core, with their positions in the request.
#[derive(Debug)]
pub struct Split<T> {
    /// Owning core.
    pub core: usize,
    /// Position of each item in the original list.
    pub positions: Vec<usize>,
    /// The items.
    pub items: Vec<T>,
}

/// One core's share of a request, handed over, its answer still to come (see
/// [`issue_to_owners`]).
pub struct Issued {
    positions: Vec<usize>,
    core: usize,
    answer: Option<futures_channel::oneshot::Receiver<CoreReply>>,
}

/// The first half of [`call_owners`]: hands each owning core its share of `items`, one core
/// after the other, and returns once all are handed over (not answered). Requests issued
/// later from this core start after these on every core (`CoreContext::issue`), which is what
/// lets a connection pipeline Produce requests and still append them in request order.
pub async fn issue_to_owners<T>(
    ctx: &Rc<CoreContext>,
    items: Vec<T>,
    owner: impl Fn(&T) -> usize,
    request: impl Fn(Vec<T>) -> CoreRequest,
) -> Vec<Issued> {
    let mut issued = Vec::new();
    for split in split_by_owner(items, owner) {
        let answer = ctx.issue(split.core, request(split.items)).await.ok();
        issued.push(Issued {
            positions: split.positions,
            core: split.core,
            answer,
        });
    }
    issued
}

/// The second half: waits for every answer of [`issue_to_owners`] and merges them back in
/// request order (`total` items); as [`call_owners`] for `unpack` and `fallback`.
pub async fn answers_of<R>(
    total: usize,
    issued: Vec<Issued>,
    unpack: impl Fn(CoreReply) -> Option<Vec<R>>,
    fallback: impl Fn() -> R,
) -> Vec<R> {
    let mut answers = Vec::with_capacity(issued.len());
    for call in issued {
        // Each answer arrives on its own; waiting for them in turn costs nothing extra.
        let reply = match call.answer {
            Some(rx) => rx.await.map_err(|_| {
                tracing::error!(core = call.core, "core dropped a request without replying");
            }),
            None => Err(()),
        };
        let results = unpack_reply(call.core, reply.ok(), &unpack);
        answers.push((call.positions, results));
    }
    merge(total, answers, fallback)
}

/// The per-item results in one core's reply; `None` if it did not answer or (a bug, logged)
/// answered with another kind of reply.
fn unpack_reply<R>(
    core: usize,
    reply: Option<CoreReply>,
    unpack: &impl Fn(CoreReply) -> Option<Vec<R>>,
) -> Option<Vec<R>> {
    let results = unpack(reply?);
    if results.is_none() {
        tracing::error!(core, "unexpected kind of reply from a core");
    }
    results
}

/// Groups `items` by owner core (`owner(item)`), preserving order within each group.
pub fn split_by_owner<T>(items: Vec<T>, owner: impl Fn(&T) -> usize) -> Vec<Split<T>> {
    let mut splits: Vec<Split<T>> = Vec::new();
    for (position, item) in items.into_iter().enumerate() {
        let core = owner(&item);
        match splits.iter_mut().find(|s| s.core == core) {
            Some(split) => {
                split.positions.push(position);
                split.items.push(item);
            }
            None => splits.push(Split {
                core,
                positions: vec![position],
                items: vec![item],
            }),
        }
    }
    splits
}

/// Puts per-core answers back in request order. A core whose answer is missing or short
/// (unreachable) gets `fallback()` for each of its items.
pub fn merge<R>(
    total: usize,
    answers: Vec<(Vec<usize>, Option<Vec<R>>)>,
    fallback: impl Fn() -> R,
) -> Vec<R> {
    let mut out: Vec<Option<R>> = (0..total).map(|_| None).collect();
    for (positions, results) in answers {
        let mut results = results.unwrap_or_default().into_iter();
        for position in positions {
            if let Some(slot) = out.get_mut(position) {
                *slot = Some(results.next().unwrap_or_else(&fallback));
            }
        }
    }
    out.into_iter()
        .map(|r| r.unwrap_or_else(&fallback))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_and_merge_round_trip() {
        let items = vec![10, 11, 12, 13, 14];
        let splits = split_by_owner(items, |x| (*x % 2) as usize);
        assert_eq!(splits.len(), 2);
        assert_eq!(splits[0].core, 0);
        assert_eq!(splits[0].items, vec![10, 12, 14]);
        let answers = splits
            .into_iter()
            .map(|s| {
                let r = if s.core == 1 {
                    None
                } else {
                    Some(s.items.iter().map(|x| x * 2).collect())
                };
                (s.positions, r)
            })
            .collect();
        assert_eq!(merge(5, answers, || -1), vec![20, -1, 24, -1, 28]);
    }
}
