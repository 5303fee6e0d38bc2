//! The paged KV cache: a fixed pool of blocks of `block_size` tokens, handed to sequences as
//! they grow, with vLLM-v1-style prefix caching.
//!
//! Prefix caching: when a block full of prompt tokens has been computed, its hash (covering the
//! whole prefix up to it) is registered. A later prompt with the same prefix takes the cached
//! block instead of computing it again (the block's reference count goes up). Freed blocks go
//! to the back of an LRU free queue but stay findable by hash until they are handed out again,
//! so a prefix survives until memory is actually needed.

use std::collections::HashMap;

pub type BlockId = u32;

const NIL: u32 = u32::MAX;

/// Free blocks in LRU order (front = next to hand out), with O(1) removal from the middle
/// (a cache hit on a free block takes it out of the queue).
#[derive(Debug)]
struct FreeQueue {
    prev: Vec<u32>,
    next: Vec<u32>,
    queued: Vec<bool>,
    head: u32,
    tail: u32,
    len: u32,
}

impl FreeQueue {
    fn with_all(num_blocks: u32) -> Self {
        let n = num_blocks as usize;
        let mut queue = Self {
            prev: vec![NIL; n],
            next: vec![NIL; n],
            queued: vec![false; n],
            head: NIL,
            tail: NIL,
            len: 0,
        };
        for block in 0..num_blocks {
            queue.push_back(block);
        }
        queue
    }

    fn push_back(&mut self, block: BlockId) {
        let b = block as usize;
        debug_assert!(!self.queued[b]);
        self.prev[b] = self.tail;
        self.next[b] = NIL;
        if self.tail == NIL {
            self.head = block;
        } else {
            self.next[self.tail as usize] = block;
        }
        self.tail = block;
        self.queued[b] = true;
        self.len += 1;
    }

    fn pop_front(&mut self) -> Option<BlockId> {
        let block = self.head;
        if block == NIL {
            return None;
        }
        self.remove(block);
        Some(block)
    }

    fn remove(&mut self, block: BlockId) {
        let b = block as usize;
        debug_assert!(self.queued[b]);
        let (prev, next) = (self.prev[b], self.next[b]);
        if prev == NIL {
            self.head = next;
        } else {
            self.next[prev as usize] = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.prev[next as usize] = prev;
        }
        self.prev[b] = NIL;
        self.next[b] = NIL;
        self.queued[b] = false;
        self.len -= 1;
    }
}

#[derive(Debug)]
pub struct KvCache {
    block_size: u32,
    ref_counts: Vec<u32>,
    /// The prefix hash of each block whose tokens are registered in `cached`.
    hashes: Vec<Option<u64>>,
    cached: HashMap<u64, BlockId>,
    free: FreeQueue,
    /// Blocks made unavailable by the KV-pressure fault; they count as used.
    reserved: u32,
    prefix_caching: bool,
}

impl KvCache {
    pub fn new(num_blocks: u32, block_size: u32, prefix_caching: bool) -> Self {
        Self {
            block_size,
            ref_counts: vec![0; num_blocks as usize],
            hashes: vec![None; num_blocks as usize],
            cached: HashMap::new(),
            free: FreeQueue::with_all(num_blocks),
            reserved: 0,
            prefix_caching,
        }
    }

    pub fn block_size(&self) -> u32 {
        self.block_size
    }

    pub fn num_blocks(&self) -> u32 {
        self.ref_counts.len() as u32
    }

    /// Blocks that can be handed out now (free, minus those taken by KV pressure).
    pub fn num_free(&self) -> u32 {
        self.free.len.saturating_sub(self.reserved)
    }

    /// Blocks held by sequences or taken by KV pressure. Free blocks that still hold a cached
    /// prefix count as free, as in vLLM's usage figure.
    pub fn num_used(&self) -> u32 {
        self.num_blocks() - self.num_free()
    }

    /// Fraction of blocks in use (0–1).
    #[cfg(test)]
    pub fn usage(&self) -> f64 {
        match self.num_blocks() {
            0 => 0.0,
            total => f64::from(self.num_used()) / f64::from(total),
        }
    }

    /// Takes `fraction` of all blocks out of service (KV-pressure fault); 0 gives them back.
    pub fn set_pressure(&mut self, fraction: f64) {
        self.reserved = (f64::from(self.num_blocks()) * fraction.clamp(0.0, 1.0)).round() as u32;
    }

    pub fn blocks_for(&self, tokens: u32) -> u32 {
        tokens.div_ceil(self.block_size)
    }

    /// The longest run of cached blocks matching the start of `hashes`, at most `max_blocks`.
    pub fn cached_prefix(&self, hashes: &[u64], max_blocks: usize) -> Vec<BlockId> {
        if !self.prefix_caching {
            return Vec::new();
        }
        hashes
            .iter()
            .take(max_blocks)
            .map_while(|hash| self.cached.get(hash).copied())
            .collect()
    }

    /// Grows `table` so it holds `total_tokens` tokens, first adopting the cached `hits` (only
    /// when `table` is empty). All or nothing: on `false` nothing changed.
    pub fn allocate(
        &mut self,
        table: &mut Vec<BlockId>,
        hits: &[BlockId],
        total_tokens: u32,
    ) -> bool {
        debug_assert!(hits.is_empty() || table.is_empty());
        let have = table.len() + hits.len();
        let new_blocks = (self.blocks_for(total_tokens) as usize).saturating_sub(have);
        // A hit on a free block takes it out of the free queue, so it costs capacity too.
        let free_hits = hits
            .iter()
            .filter(|&&b| self.ref_counts[b as usize] == 0)
            .count();
        if new_blocks + free_hits > self.num_free() as usize {
            return false;
        }
        for &block in hits {
            if self.ref_counts[block as usize] == 0 {
                self.free.remove(block);
            }
            self.ref_counts[block as usize] += 1;
            table.push(block);
        }
        for _ in 0..new_blocks {
            let block = self.free.pop_front().expect("free count checked above");
            self.evict(block);
            self.ref_counts[block as usize] = 1;
            table.push(block);
        }
        true
    }

    /// Forgets the prefix a free block held, now that it is being reused.
    fn evict(&mut self, block: BlockId) {
        if let Some(hash) = self.hashes[block as usize].take() {
            if self.cached.get(&hash) == Some(&block) {
                self.cached.remove(&hash);
            }
        }
    }

    /// Registers the prefix hashes of the table's blocks that are now full of computed prompt
    /// tokens. `registered` is how many leading blocks were registered before; returns the new
    /// count.
    pub fn register_full_blocks(
        &mut self,
        table: &[BlockId],
        hashes: &[u64],
        computed_tokens: u32,
        registered: usize,
    ) -> usize {
        if !self.prefix_caching {
            return registered;
        }
        let full = ((computed_tokens / self.block_size) as usize)
            .min(hashes.len())
            .min(table.len());
        for k in registered..full {
            let block = table[k];
            if self.hashes[block as usize].is_none() {
                // Two sequences may compute the same prefix at once; the first one registered
                // stays the canonical copy and the duplicate is a plain block.
                if let std::collections::hash_map::Entry::Vacant(slot) =
                    self.cached.entry(hashes[k])
                {
                    slot.insert(block);
                    self.hashes[block as usize] = Some(hashes[k]);
                }
            }
        }
        full.max(registered)
    }

    /// Releases a sequence's blocks (finish, abort, failure, preemption). Tail blocks are freed
    /// first so they are also evicted first, keeping shared prefixes cached longest.
    pub fn free(&mut self, table: &mut Vec<BlockId>) {
        for &block in table.iter().rev() {
            let count = &mut self.ref_counts[block as usize];
            debug_assert!(*count > 0, "double free of block {block}");
            *count -= 1;
            if *count == 0 {
                self.free.push_back(block);
            }
        }
        table.clear();
    }

    /// Checks the cache's internal invariants against the block tables of all live sequences.
    #[cfg(test)]
    pub fn check(&self, tables: &[&[BlockId]]) -> Result<(), String> {
        let mut expected = vec![0u32; self.ref_counts.len()];
        for table in tables {
            for &b in *table {
                expected[b as usize] += 1;
            }
        }
        if expected != self.ref_counts {
            return Err("reference counts differ from the block tables".into());
        }
        for (b, &count) in self.ref_counts.iter().enumerate() {
            if (count == 0) != self.free.queued[b] {
                return Err(format!(
                    "block {b}: refs {count} but queued {}",
                    self.free.queued[b]
                ));
            }
        }
        let free_len = self.ref_counts.iter().filter(|&&c| c == 0).count() as u32;
        if free_len != self.free.len {
            return Err("free queue length is wrong".into());
        }
        // Walk the queue to prove it is a proper list of that length.
        let (mut walked, mut cursor) = (0u32, self.free.head);
        while cursor != NIL {
            walked += 1;
            if walked > self.free.len {
                return Err("free queue has a cycle".into());
            }
            cursor = self.free.next[cursor as usize];
        }
        if walked != self.free.len {
            return Err("free queue is broken".into());
        }
        for (&hash, &block) in &self.cached {
            if self.hashes[block as usize] != Some(hash) {
                return Err(format!("cached hash of block {block} is stale"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocation_is_all_or_nothing() {
        let mut kv = KvCache::new(4, 16, false);
        let mut a = Vec::new();
        assert!(kv.allocate(&mut a, &[], 48)); // 3 blocks
        let mut b = Vec::new();
        assert!(!kv.allocate(&mut b, &[], 17)); // needs 2, 1 free
        assert!(b.is_empty());
        assert_eq!(kv.num_free(), 1);
        assert!(kv.allocate(&mut a, &[], 64)); // grows into the last block
        kv.free(&mut a);
        assert_eq!(kv.num_free(), 4);
        kv.check(&[]).unwrap();
    }

    #[test]
    fn freed_prefix_blocks_are_reused_until_evicted() {
        let mut kv = KvCache::new(4, 2, true);
        let hashes = [11, 22, 33];
        let mut a = Vec::new();
        assert!(kv.allocate(&mut a, &[], 6));
        assert_eq!(kv.register_full_blocks(&a, &hashes, 6, 0), 3);
        let prefix = a[..2].to_vec();
        kv.free(&mut a);
        // Free, but still findable.
        assert_eq!(kv.cached_prefix(&[11, 22, 99], 8), prefix);
        let mut b = Vec::new();
        let hits = kv.cached_prefix(&hashes[..2], 2);
        assert!(kv.allocate(&mut b, &hits, 5));
        assert_eq!(&b[..2], &prefix[..]);
        kv.check(&[&b]).unwrap();
        // Allocate everything else: the remaining cached block gets evicted.
        let mut c = Vec::new();
        assert!(kv.allocate(&mut c, &[], 2));
        assert!(kv.cached_prefix(&hashes, 3).len() <= 2);
        kv.check(&[&b, &c]).unwrap();
    }

    #[test]
    fn pressure_counts_as_used_and_blocks_allocation() {
        let mut kv = KvCache::new(10, 16, false);
        kv.set_pressure(0.5);
        assert_eq!(kv.num_used(), 5);
        assert!((kv.usage() - 0.5).abs() < 1e-9);
        let mut a = Vec::new();
        assert!(!kv.allocate(&mut a, &[], 16 * 6));
        assert!(kv.allocate(&mut a, &[], 16 * 5));
        assert_eq!(kv.num_free(), 0);
        kv.set_pressure(0.0);
        assert_eq!(kv.num_free(), 5);
    }
}
