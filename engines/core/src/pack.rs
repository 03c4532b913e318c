//! Best-fit-decreasing bin packing, as Prepacking packs prompts into rows.

/// Packs items of the given lengths into bins of `capacity` by best fit
/// decreasing: items in decreasing length (ties by index), each into the
/// fullest bin where it still fits (ties: the earliest bin), else into a new
/// bin. Returns the bins as lists of item indices in placement order.
/// Items longer than `capacity` get a bin of their own.
///
/// # Example
/// ```
/// let bins = fuselab_engine::best_fit_decreasing(&[5, 3, 4, 2, 6], 6);
/// assert_eq!(bins, vec![vec![4], vec![0], vec![2, 3], vec![1]]);
/// ```
pub fn best_fit_decreasing(lens: &[u32], capacity: u32) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lens.len()).collect();
    order.sort_by(|&a, &b| lens[b].cmp(&lens[a]).then(a.cmp(&b)));
    let mut bins: Vec<Vec<usize>> = Vec::new();
    let mut fill: Vec<u64> = Vec::new();
    for i in order {
        let len = u64::from(lens[i]);
        let best = fill
            .iter()
            .enumerate()
            .filter(|&(_, &f)| f + len <= u64::from(capacity))
            .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(&a.0)))
            .map(|(j, _)| j);
        match best {
            Some(j) => {
                bins[j].push(i);
                fill[j] += len;
            }
            None => {
                bins.push(vec![i]);
                fill.push(len);
            }
        }
    }
    bins
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_example() {
        // Capacity 10 (the longest prompt). Decreasing: 10(0) 7(3) 6(1) 4(5) 3(2) 3(6) 2(4) 1(7).
        // 10 -> new A(10); 7 -> new B(7); 6 -> new C(6); 4 -> C is the only fit (10) -> C full;
        // 3 -> B (7+3=10); 3 -> new D(3); 2 -> D(5); 1 -> D(6).
        let lens = [10, 6, 3, 7, 2, 4, 3, 1];
        let bins = best_fit_decreasing(&lens, 10);
        assert_eq!(bins, vec![vec![0], vec![3, 2], vec![1, 5], vec![6, 4, 7]]);
    }

    /// First fit decreasing, the rule best fit must not be mistaken for.
    fn first_fit_decreasing(lens: &[u32], capacity: u32) -> Vec<Vec<usize>> {
        let mut order: Vec<usize> = (0..lens.len()).collect();
        order.sort_by(|&a, &b| lens[b].cmp(&lens[a]).then(a.cmp(&b)));
        let mut bins: Vec<(Vec<usize>, u32)> = Vec::new();
        for i in order {
            match bins.iter_mut().find(|(_, f)| f + lens[i] <= capacity) {
                Some((bin, f)) => {
                    bin.push(i);
                    *f += lens[i];
                }
                None => bins.push((vec![i], lens[i])),
            }
        }
        bins.into_iter().map(|(b, _)| b).collect()
    }

    #[test]
    fn best_fit_prefers_the_fullest_bin_where_first_fit_does_not() {
        // Capacity 10, the longest prompt. 10 -> A(10); 7 -> B(7); 4 -> C(4); 4 -> C(8);
        // 2 fits B (7+2) and C (8+2): best fit takes the fuller C, first fit the earlier B.
        let lens = [10, 7, 4, 4, 2];
        assert_eq!(
            best_fit_decreasing(&lens, 10),
            vec![vec![0], vec![1], vec![2, 3, 4]]
        );
        assert_eq!(
            first_fit_decreasing(&lens, 10),
            vec![vec![0], vec![1, 4], vec![2, 3]]
        );
    }
}
