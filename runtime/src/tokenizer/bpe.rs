//! Byte-pair merging of one pre-tokenized word.
//!
//! The word starts as one symbol per byte; repeatedly the adjacent pair with the best
//! (lowest) merge rank is merged, the leftmost one among equal ranks, until no adjacent
//! pair has a merge. This is the order Hugging Face's BPE model uses (a priority queue of
//! (rank, position)). Short words use a direct scan; long ones a heap over a linked list,
//! so a 1 MB word costs O(n log n), not O(n^2).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::fxhash::FxHashMap;

/// Merge table: (left id, right id) -> (rank, merged id).
#[derive(Clone, Default)]
pub(crate) struct Merges {
    map: FxHashMap<u64, (u32, u32)>,
}

#[inline]
fn key(a: u32, b: u32) -> u64 {
    ((a as u64) << 32) | b as u64
}

/// Words with at most this many bytes use the direct scan.
const SCAN_LIMIT: usize = 48;

impl Merges {
    pub(crate) fn with_capacity(n: usize) -> Self {
        let mut map = FxHashMap::default();
        map.reserve(n);
        Merges { map }
    }

    /// Adds a merge; returns the rank of an earlier merge of the same pair, if any.
    pub(crate) fn insert(&mut self, a: u32, b: u32, rank: u32, merged: u32) -> Option<u32> {
        match self.map.entry(key(a, b)) {
            std::collections::hash_map::Entry::Occupied(e) => Some(e.get().0),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert((rank, merged));
                None
            }
        }
    }

    #[inline]
    fn get(&self, a: u32, b: u32) -> Option<(u32, u32)> {
        self.map.get(&key(a, b)).copied()
    }

    /// Merges `symbols` (initial ids, one per byte) in place.
    pub(crate) fn apply(&self, symbols: &mut Vec<u32>) {
        if symbols.len() < 2 {
            return;
        }
        if symbols.len() <= SCAN_LIMIT {
            self.apply_scan(symbols)
        } else {
            self.apply_heap(symbols)
        }
    }

    /// Direct method: keep the rank of every adjacent pair, merge the best, update its
    /// two neighbours. O(n^2) in the word length, fastest for short words.
    pub(crate) fn apply_scan(&self, symbols: &mut Vec<u32>) {
        const NONE: (u32, u32) = (u32::MAX, u32::MAX);
        if symbols.len() < 2 {
            return;
        }
        let mut pairs: Vec<(u32, u32)> = symbols
            .windows(2)
            .map(|w| self.get(w[0], w[1]).unwrap_or(NONE))
            .collect();
        loop {
            let mut best = u32::MAX;
            let mut at = 0;
            for (k, &(rank, _)) in pairs.iter().enumerate() {
                if rank < best {
                    best = rank;
                    at = k;
                }
            }
            if best == u32::MAX {
                break;
            }
            symbols[at] = pairs[at].1;
            symbols.remove(at + 1);
            pairs.remove(at);
            if at > 0 {
                pairs[at - 1] = self.get(symbols[at - 1], symbols[at]).unwrap_or(NONE);
            }
            if at < pairs.len() {
                pairs[at] = self.get(symbols[at], symbols[at + 1]).unwrap_or(NONE);
            }
        }
    }

    /// Heap method: symbols in a doubly linked list, candidate pairs in a min-heap keyed by
    /// (rank, position of the left symbol); stale entries are skipped when popped.
    pub(crate) fn apply_heap(&self, symbols: &mut Vec<u32>) {
        const END: u32 = u32::MAX;
        let n = symbols.len();
        if n < 2 {
            return;
        }
        let mut next: Vec<u32> = (1..=n as u32).collect();
        next[n - 1] = END;
        let mut prev: Vec<u32> = (0..n as u32).map(|i| i.wrapping_sub(1)).collect();
        prev[0] = END;
        let mut alive = vec![true; n];
        let mut heap: BinaryHeap<Reverse<(u32, u32)>> = BinaryHeap::new();
        for i in 0..n - 1 {
            if let Some((rank, _)) = self.get(symbols[i], symbols[i + 1]) {
                heap.push(Reverse((rank, i as u32)));
            }
        }
        while let Some(Reverse((rank, left))) = heap.pop() {
            let left = left as usize;
            if !alive[left] || next[left] == END {
                continue;
            }
            let right = next[left] as usize;
            let merged = match self.get(symbols[left], symbols[right]) {
                Some((r, merged)) if r == rank => merged,
                _ => continue, // the pair changed since this entry was pushed
            };
            symbols[left] = merged;
            alive[right] = false;
            let after = next[right];
            next[left] = after;
            if after != END {
                prev[after as usize] = left as u32;
                if let Some((r, _)) = self.get(merged, symbols[after as usize]) {
                    heap.push(Reverse((r, left as u32)));
                }
            }
            let before = prev[left];
            if before != END {
                if let Some((r, _)) = self.get(symbols[before as usize], merged) {
                    heap.push(Reverse((r, before)));
                }
            }
        }
        let mut out = 0;
        let mut i = 0u32;
        while i != END {
            symbols[out] = symbols[i as usize];
            out += 1;
            i = next[i as usize];
        }
        symbols.truncate(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ids 0..4 are symbols a b c d; merges build longer ids.
    fn table() -> Merges {
        let mut m = Merges::default();
        // rank: (a, b) -> new
        m.insert(0, 1, 0, 10); // ab
        m.insert(1, 2, 1, 11); // bc
        m.insert(10, 2, 2, 12); // abc
        m.insert(0, 0, 3, 13); // aa
        m.insert(13, 13, 4, 14); // aaaa
        m.insert(2, 3, 5, 15); // cd
        m.insert(10, 15, 6, 16); // abcd
        m
    }

    fn both(m: &Merges, input: &[u32]) -> Vec<u32> {
        let mut a = input.to_vec();
        m.apply_scan(&mut a);
        let mut b = input.to_vec();
        m.apply_heap(&mut b);
        assert_eq!(a, b, "scan and heap disagree on {input:?}");
        a
    }

    #[test]
    fn rank_order() {
        let m = table();
        // ab (rank 0) beats bc (rank 1); then abc (rank 2).
        assert_eq!(both(&m, &[0, 1, 2]), [12]);
        // After ab the pairs are (ab,c) rank 2 and (c,d) rank 5: abc wins, so abcd never
        // applies.
        assert_eq!(both(&m, &[0, 1, 2, 3]), [12, 3]);
        // bcd: bc (1) then nothing.
        assert_eq!(both(&m, &[1, 2, 3]), [11, 3]);
        // leftmost among equal ranks: aaa -> (aa)a
        assert_eq!(both(&m, &[0, 0, 0]), [13, 0]);
        assert_eq!(both(&m, &[0, 0, 0, 0, 0]), [14, 0]);
        assert_eq!(both(&m, &[3]), [3]);
    }

    #[test]
    fn scan_equals_heap_on_random_words() {
        let m = table();
        let mut seed = 0x1234_5678_u64;
        for len in 0..200 {
            let word: Vec<u32> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    (seed % 4) as u32
                })
                .collect();
            both(&m, &word);
        }
    }
}
