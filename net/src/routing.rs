//! Splitting a request's partitions by owning core and merging the answers back in request
//! order.

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
