//! Bookkeeping of the caching allocator that GPU buffers come from.
//!
//! A dropped [`super::CudaBuffer`] hands its device block back to its device's [`BlockPool`]
//! instead of freeing it, and the next request of the same byte size takes it again. A training
//! iteration requests the same sizes in the same order as the one before it, so after the first
//! iteration every request is served from the pool and the driver allocates nothing.
//!
//! The pool is generic over the block handle, so its logic is tested on the CPU with plain
//! values in place of device pointers.

use std::collections::HashMap;

/// Counters of a [`BlockPool`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Bytes in free blocks that wait for reuse.
    pub pooled_bytes: usize,
    /// Number of free blocks that wait for reuse.
    pub pooled_blocks: usize,
    /// Bytes in blocks handed out and not returned yet.
    pub in_use_bytes: usize,
    /// Requests that needed a new block from the driver, since the pool was created.
    pub fresh_allocations: u64,
    /// Requests served with a free block, since the pool was created.
    pub reuses: u64,
}

/// Free lists of blocks keyed by their exact byte size.
///
/// A request is served only by a block of exactly the requested size, so a block never wastes
/// memory on a smaller request. Blocks of sizes that are no longer requested stay in the pool
/// until [`BlockPool::drain`] removes them.
#[derive(Debug)]
pub struct BlockPool<B> {
    free: HashMap<usize, Vec<B>>,
    stats: PoolStats,
}

impl<B> Default for BlockPool<B> {
    fn default() -> Self {
        BlockPool {
            free: HashMap::new(),
            stats: PoolStats::default(),
        }
    }
}

impl<B> BlockPool<B> {
    /// Creates an empty pool.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes a free block of exactly `bytes` bytes and counts it as in use, or returns `None`
    /// when the pool has none. The caller then allocates a block and reports it with
    /// [`BlockPool::record_fresh`].
    pub fn take(&mut self, bytes: usize) -> Option<B> {
        let list = self.free.get_mut(&bytes)?;
        let block = list.pop()?;
        if list.is_empty() {
            self.free.remove(&bytes);
        }
        self.stats.pooled_bytes -= bytes;
        self.stats.pooled_blocks -= 1;
        self.stats.in_use_bytes += bytes;
        self.stats.reuses += 1;
        Some(block)
    }

    /// Counts a block of `bytes` bytes that the caller allocated because [`BlockPool::take`]
    /// found none, as in use.
    pub fn record_fresh(&mut self, bytes: usize) {
        self.stats.in_use_bytes += bytes;
        self.stats.fresh_allocations += 1;
    }

    /// Returns a block of `bytes` bytes that was in use to the free list of its size.
    pub fn give_back(&mut self, bytes: usize, block: B) {
        self.free.entry(bytes).or_default().push(block);
        self.stats.pooled_bytes += bytes;
        self.stats.pooled_blocks += 1;
        // Saturating, so a block that was not counted as in use (for example one the caller
        // allocated before creating the pool) cannot wrap the counter.
        self.stats.in_use_bytes = self.stats.in_use_bytes.saturating_sub(bytes);
    }

    /// Removes every free block and returns them with their sizes, so the caller can free
    /// them. Blocks in use are not affected.
    pub fn drain(&mut self) -> Vec<(usize, B)> {
        let mut blocks = Vec::with_capacity(self.stats.pooled_blocks);
        for (bytes, list) in self.free.drain() {
            blocks.extend(list.into_iter().map(|block| (bytes, block)));
        }
        self.stats.pooled_bytes = 0;
        self.stats.pooled_blocks = 0;
        blocks
    }

    pub fn stats(&self) -> PoolStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::{BlockPool, PoolStats};

    #[test]
    fn empty_pool_has_no_block() {
        let mut pool = BlockPool::<u32>::new();
        assert_eq!(pool.take(64), None);
        assert_eq!(pool.stats(), PoolStats::default());
    }

    #[test]
    fn returned_block_is_reused_for_same_size() {
        let mut pool = BlockPool::new();
        pool.record_fresh(256);
        pool.give_back(256, 7u32);
        assert_eq!(pool.stats().pooled_bytes, 256);
        assert_eq!(pool.stats().pooled_blocks, 1);
        assert_eq!(pool.stats().in_use_bytes, 0);

        assert_eq!(pool.take(256), Some(7));
        let stats = pool.stats();
        assert_eq!(stats.pooled_bytes, 0);
        assert_eq!(stats.pooled_blocks, 0);
        assert_eq!(stats.in_use_bytes, 256);
        assert_eq!(stats.fresh_allocations, 1);
        assert_eq!(stats.reuses, 1);
    }

    #[test]
    fn other_sizes_never_match() {
        let mut pool = BlockPool::new();
        pool.give_back(512, 1u32);
        assert_eq!(pool.take(256), None);
        assert_eq!(pool.take(1024), None);
        assert_eq!(pool.take(512), Some(1));
        assert_eq!(pool.stats().reuses, 1);
    }

    #[test]
    fn same_size_blocks_return_newest_first() {
        let mut pool = BlockPool::new();
        for block in [1u32, 2, 3] {
            pool.give_back(128, block);
        }
        assert_eq!(pool.stats().pooled_bytes, 384);
        assert_eq!(pool.take(128), Some(3));
        assert_eq!(pool.take(128), Some(2));
        assert_eq!(pool.take(128), Some(1));
        assert_eq!(pool.take(128), None);
    }

    #[test]
    fn drain_returns_every_free_block_with_its_size() {
        let mut pool = BlockPool::new();
        pool.record_fresh(64);
        pool.record_fresh(64);
        pool.record_fresh(32);
        pool.record_fresh(1000);
        pool.give_back(64, 'a');
        pool.give_back(64, 'b');
        pool.give_back(32, 'c');

        let mut drained = pool.drain();
        drained.sort();
        assert_eq!(drained, vec![(32, 'c'), (64, 'a'), (64, 'b')]);
        let stats = pool.stats();
        assert_eq!(stats.pooled_bytes, 0);
        assert_eq!(stats.pooled_blocks, 0);
        assert_eq!(
            stats.in_use_bytes, 1000,
            "the block still in use stays counted"
        );
        assert_eq!(pool.take(64), None);
    }

    /// Replays the requests of a loop whose iterations allocate and free the same sizes in the
    /// same order, and checks that only the first iteration allocates.
    #[test]
    fn repeated_iterations_allocate_only_in_the_first() {
        let mut pool = BlockPool::new();
        let mut next_handle = 0u32;
        let mut request = |pool: &mut BlockPool<u32>, bytes: usize| {
            pool.take(bytes).unwrap_or_else(|| {
                pool.record_fresh(bytes);
                next_handle += 1;
                next_handle
            })
        };
        let mut fresh_after = Vec::new();
        for _ in 0..5 {
            let a = request(&mut pool, 4096);
            let b = request(&mut pool, 4096);
            let c = request(&mut pool, 12);
            pool.give_back(4096, a);
            let d = request(&mut pool, 4096);
            pool.give_back(12, c);
            pool.give_back(4096, b);
            pool.give_back(4096, d);
            fresh_after.push(pool.stats().fresh_allocations);
        }
        assert_eq!(fresh_after, vec![3, 3, 3, 3, 3]);
        // The first iteration reuses the block it freed itself, and the others reuse all four.
        assert_eq!(pool.stats().reuses, 1 + 4 * 4);
        assert_eq!(pool.stats().in_use_bytes, 0);
        assert_eq!(pool.stats().pooled_bytes, 2 * 4096 + 12);
    }
}
