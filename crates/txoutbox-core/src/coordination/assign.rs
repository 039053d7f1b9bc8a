//! Which buckets a node owns in work-balance mode: even, contiguous ranges over the live nodes
//! sorted by id, so every node computes the same assignment from the same live set.

/// The buckets `node` should own when `live` (sorted, deduplicated ids) share `buckets` buckets.
pub fn assign_buckets(live: &[String], node: &str, buckets: i32) -> Vec<i32> {
    let Some(index) = live.iter().position(|n| n == node) else {
        return Vec::new();
    };
    let nodes = live.len() as i64;
    (0..buckets)
        .filter(|&bucket| (i64::from(bucket) * nodes / i64::from(buckets)) as usize == index)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("node-{i}")).collect()
    }

    #[test]
    fn every_bucket_has_exactly_one_owner_and_shares_are_even() {
        for nodes in 1..=7 {
            let live = names(nodes);
            let mut owners = vec![0; 64];
            let mut sizes = Vec::new();
            for node in &live {
                let mine = assign_buckets(&live, node, 64);
                sizes.push(mine.len());
                for b in mine {
                    owners[b as usize] += 1;
                }
            }
            assert!(owners.iter().all(|&n| n == 1), "{nodes} nodes: {owners:?}");
            let (min, max) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
            assert!(max - min <= 1, "{nodes} nodes: {sizes:?}");
        }
    }

    #[test]
    fn a_node_not_alive_owns_nothing() {
        assert!(assign_buckets(&names(3), "other", 64).is_empty());
    }
}
