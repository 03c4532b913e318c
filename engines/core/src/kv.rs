//! The paged KV block manager: fixed-size blocks, reference counts, a
//! watermark, one block table per sequence and an automatic prefix cache.
//!
//! The manager does bookkeeping only; the backend owns the storage (it is told
//! the [`KvGeometry`] once through [`crate::Backend::init_kv`]).
//!
//! ## Prefix cache (vLLM automatic prefix caching)
//! A block whose every token has been computed is *full* and immutable. When
//! caching is on, each full block gets a hash of its token ids chained with the
//! hash of the block before it, so a hash names a whole prefix. Later requests
//! whose prompt starts with the same full blocks reuse them ([`BlockManager::lookup`],
//! [`BlockManager::adopt`]) instead of recomputing their KV. Only full blocks
//! are ever shared, so no sequence writes into a block another one reads.
//!
//! A block whose reference count falls to 0 goes back to the never-used free
//! list when it holds no hash, and otherwise stays cached but *evictable*.
//! Allocation takes a free-list block first (LIFO, deterministic) and only then
//! evicts the least recently released cached block. A sequence releases its
//! blocks tail first, so the tail of a prompt is evicted before its prefix
//! (vLLM's `free_block_queue` order). Evictable blocks count as free capacity.

use std::collections::{BTreeMap, HashMap};

use fuselab_core::RequestId;

use crate::{EngineError, KvGeometry, Result};

/// Hash of a full block chained with every block before it.
pub(crate) type BlockHash = u128;

/// What a cached block holds: its hash, its parent's hash and its token ids
/// (compared on a hit, so a hash collision is a miss, never wrong KV).
#[derive(Clone, Debug)]
struct CachedBlock {
    hash: BlockHash,
    parent: BlockHash,
    tokens: Box<[u32]>,
}

/// The cached prefix of a token sequence, as found by [`BlockManager::lookup`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PrefixHit {
    blocks: Vec<u32>,
    hashes: Vec<BlockHash>,
    evictable: u32,
    block_size: u32,
}

impl PrefixHit {
    /// Cached blocks, in prefix order.
    pub fn blocks(&self) -> &[u32] {
        &self.blocks
    }

    /// Tokens covered by the cached blocks.
    pub fn tokens(&self) -> u32 {
        self.blocks.len() as u32 * self.block_size
    }

    /// How many of the cached blocks are evictable (reference count 0): taking
    /// them uses up free capacity.
    pub fn evictable(&self) -> u32 {
        self.evictable
    }
}

/// Bookkeeping of a paged KV cache.
#[derive(Clone, Debug)]
pub struct BlockManager {
    block_size: u32,
    num_blocks: u32,
    watermark_blocks: u32,
    caching: bool,
    free: Vec<u32>,
    ref_counts: Vec<u32>,
    tables: BTreeMap<RequestId, Vec<u32>>,
    /// Hash chain of each sequence's full blocks registered so far.
    chains: BTreeMap<RequestId, Vec<BlockHash>>,
    /// Per block: what it caches, when it is in the prefix cache.
    meta: Vec<Option<CachedBlock>>,
    by_hash: HashMap<BlockHash, u32>,
    /// Cached blocks with reference count 0, keyed by release stamp (LRU first).
    evictable: BTreeMap<u64, u32>,
    stamp: Vec<u64>,
    clock: u64,
    /// The first bookkeeping violation seen outside [`Self::check`] (a double free).
    violation: Option<String>,
}

impl BlockManager {
    /// A manager for `geometry`, keeping `watermark` (a fraction of all blocks,
    /// vLLM's 0.01) free when new sequences are admitted, with the prefix cache off.
    pub fn new(geometry: KvGeometry, watermark: f64) -> Self {
        let num_blocks = geometry.num_blocks;
        // Truncation is intended: vLLM uses int(watermark * num_blocks).
        let watermark_blocks = (watermark.clamp(0.0, 1.0) * f64::from(num_blocks)) as u32;
        let n = num_blocks as usize;
        Self {
            block_size: geometry.block_size.max(1),
            num_blocks,
            watermark_blocks,
            caching: false,
            free: (0..num_blocks).rev().collect(),
            ref_counts: vec![0; n],
            tables: BTreeMap::new(),
            chains: BTreeMap::new(),
            meta: vec![None; n],
            by_hash: HashMap::new(),
            evictable: BTreeMap::new(),
            stamp: vec![0; n],
            clock: 0,
            violation: None,
        }
    }

    /// The same manager with the prefix cache on or off.
    #[must_use]
    pub fn with_prefix_cache(mut self, on: bool) -> Self {
        self.caching = on;
        self
    }

    /// Whether the prefix cache is on.
    pub fn prefix_cache(&self) -> bool {
        self.caching
    }

    /// The geometry for a memory budget: `budget_bytes / (kv_bytes_per_token × block_size)` blocks.
    ///
    /// # Errors
    /// [`EngineError::KvTooSmall`] when not even one block fits.
    ///
    /// # Example
    /// ```
    /// let g = fuselab_engine::BlockManager::geometry_for_budget(1 << 20, 1024, 16).unwrap();
    /// assert_eq!((g.block_size, g.num_blocks), (16, 64));
    /// ```
    pub fn geometry_for_budget(
        budget_bytes: u64,
        kv_bytes_per_token: u64,
        block_size: u32,
    ) -> Result<KvGeometry> {
        let block_bytes = kv_bytes_per_token.max(1) * u64::from(block_size.max(1));
        let blocks = budget_bytes / block_bytes;
        if blocks == 0 {
            return Err(EngineError::KvTooSmall {
                budget_bytes,
                block_bytes,
            });
        }
        Ok(KvGeometry {
            block_size: block_size.max(1),
            num_blocks: u32::try_from(blocks).unwrap_or(u32::MAX),
        })
    }

    /// The cache's geometry.
    pub fn geometry(&self) -> KvGeometry {
        KvGeometry {
            block_size: self.block_size,
            num_blocks: self.num_blocks,
        }
    }

    /// Tokens per block.
    pub fn block_size(&self) -> u32 {
        self.block_size
    }

    /// Blocks in the cache.
    pub fn num_blocks(&self) -> u32 {
        self.num_blocks
    }

    /// Blocks kept free when admitting new sequences.
    pub fn watermark_blocks(&self) -> u32 {
        self.watermark_blocks
    }

    /// Blocks available to allocation: never-used or unhashed free blocks plus
    /// evictable cached ones.
    pub fn free_blocks(&self) -> u32 {
        (self.free.len() + self.evictable.len()) as u32
    }

    /// Cached blocks nobody references (evicted on demand, LRU first).
    pub fn evictable_blocks(&self) -> u32 {
        self.evictable.len() as u32
    }

    /// Blocks in the prefix cache, referenced or not.
    pub fn cached_blocks(&self) -> u32 {
        self.by_hash.len() as u32
    }

    /// Blocks referenced by at least one sequence.
    pub fn used_blocks(&self) -> u32 {
        self.num_blocks - self.free_blocks()
    }

    /// Blocks needed to hold `tokens` tokens.
    pub fn blocks_for(&self, tokens: u32) -> u32 {
        tokens.div_ceil(self.block_size)
    }

    /// The block table of `seq` (empty when it holds no KV).
    pub fn table(&self, seq: RequestId) -> &[u32] {
        self.tables.get(&seq).map_or(&[], Vec::as_slice)
    }

    /// Whether `seq` holds any blocks.
    pub fn holds(&self, seq: RequestId) -> bool {
        self.tables.get(&seq).is_some_and(|t| !t.is_empty())
    }

    /// Additional blocks `seq` needs so that it covers `tokens` tokens.
    pub fn extra_blocks(&self, seq: RequestId, tokens: u32) -> u32 {
        let have = self.tables.get(&seq).map_or(0, Vec::len) as u32;
        self.blocks_for(tokens).saturating_sub(have)
    }

    /// Whether `blocks` more blocks can be taken; with `watermark`, at least
    /// [`Self::watermark_blocks`] must stay free afterwards (vLLM's admission rule).
    pub fn can_allocate(&self, blocks: u32, watermark: bool) -> bool {
        let reserve = if watermark { self.watermark_blocks } else { 0 };
        u64::from(self.free_blocks()) >= u64::from(blocks) + u64::from(reserve)
    }

    /// Takes a block: a free-list block first, else the least recently
    /// released cached one (which leaves the prefix cache).
    fn take_block(&mut self) -> Option<u32> {
        if let Some(b) = self.free.pop() {
            return Some(b);
        }
        let (_, b) = self.evictable.pop_first()?;
        if let Some(m) = self.meta[b as usize].take()
            && self.by_hash.get(&m.hash) == Some(&b)
        {
            self.by_hash.remove(&m.hash);
        }
        Some(b)
    }

    /// Grows `seq`'s table to cover `tokens` tokens.
    ///
    /// # Errors
    /// [`EngineError::KvInvariant`] when no block is available; callers check
    /// [`Self::can_allocate`] first, so this is a scheduler bug.
    pub fn ensure(&mut self, seq: RequestId, tokens: u32) -> Result<()> {
        let need = self.extra_blocks(seq, tokens);
        if need == 0 {
            return Ok(());
        }
        if self.free_blocks() < need {
            return Err(EngineError::KvInvariant(format!(
                "sequence {seq} needs {need} more blocks but only {} are free",
                self.free_blocks()
            )));
        }
        for _ in 0..need {
            let Some(b) = self.take_block() else {
                return Err(EngineError::KvInvariant(format!(
                    "sequence {seq}: the free count and the free lists disagree"
                )));
            };
            self.ref_counts[b as usize] += 1;
            self.tables.entry(seq).or_default().push(b);
        }
        Ok(())
    }

    /// The longest cached prefix of `tokens` in whole blocks (empty when the
    /// cache is off). Callers pass at most all but the last token of what they
    /// will compute, so that at least one token is computed and sampled.
    pub fn lookup(&self, tokens: &[u32]) -> PrefixHit {
        self.lookup_with(tokens, &mut Vec::new())
    }

    /// [`Self::lookup`] reusing `chain`, the hashes of the first blocks of
    /// `tokens` from an earlier call (token ids only ever grow at the end, so
    /// they stay valid), and extending it as far as the lookup gets.
    pub(crate) fn lookup_with(&self, tokens: &[u32], chain: &mut Vec<BlockHash>) -> PrefixHit {
        let bs = self.block_size as usize;
        let mut hit = PrefixHit {
            block_size: self.block_size,
            ..PrefixHit::default()
        };
        if !self.caching {
            return hit;
        }
        let mut parent: BlockHash = 0;
        for (i, chunk) in tokens.chunks_exact(bs).enumerate() {
            if chain.len() == i {
                chain.push(block_hash(parent, chunk));
            }
            let h = chain[i];
            let Some(&b) = self.by_hash.get(&h) else {
                break;
            };
            match &self.meta[b as usize] {
                Some(m) if m.parent == parent && *m.tokens == *chunk => {}
                _ => break,
            }
            if self.ref_counts[b as usize] == 0 {
                hit.evictable += 1;
            }
            hit.blocks.push(b);
            hit.hashes.push(h);
            parent = h;
        }
        hit
    }

    /// Makes `hit` (from [`Self::lookup`], with no allocation in between) the
    /// start of `seq`'s table: reference counts go up and evictable blocks
    /// leave the LRU.
    ///
    /// # Errors
    /// [`EngineError::KvInvariant`] when `seq` already holds blocks or a block
    /// of `hit` is no longer cached.
    pub fn adopt(&mut self, seq: RequestId, hit: &PrefixHit) -> Result<()> {
        if hit.blocks.is_empty() {
            return Ok(());
        }
        if self.holds(seq) {
            return Err(EngineError::KvInvariant(format!(
                "sequence {seq} already holds blocks and cannot adopt a cached prefix"
            )));
        }
        for (&b, h) in hit.blocks.iter().zip(&hit.hashes) {
            if self.meta[b as usize].as_ref().map(|m| m.hash) != Some(*h) {
                return Err(EngineError::KvInvariant(format!(
                    "sequence {seq}: cached block {b} was evicted between lookup and adopt"
                )));
            }
        }
        for &b in &hit.blocks {
            let i = b as usize;
            if self.ref_counts[i] == 0 {
                self.evictable.remove(&self.stamp[i]);
            }
            self.ref_counts[i] += 1;
        }
        self.tables.insert(seq, hit.blocks.clone());
        self.chains.insert(seq, hit.hashes.clone());
        Ok(())
    }

    /// Registers the blocks of `seq` that `computed` tokens fill completely
    /// (`tokens` holds at least `computed` token ids of the sequence) in the
    /// prefix cache. A block whose prefix is already cached in another block
    /// stays uncached (that copy is freed normally). No-op with the cache off.
    pub fn register(&mut self, seq: RequestId, tokens: &[u32], computed: u32) {
        if !self.caching {
            return;
        }
        let bs = self.block_size as usize;
        let full = (computed as usize).min(tokens.len()) / bs;
        let table = self.tables.get(&seq).map_or(&[][..], Vec::as_slice);
        let chain = self.chains.entry(seq).or_default();
        while chain.len() < full.min(table.len()) {
            let i = chain.len();
            let parent = chain.last().copied().unwrap_or(0);
            let chunk = &tokens[i * bs..(i + 1) * bs];
            let h = block_hash(parent, chunk);
            chain.push(h);
            let b = table[i];
            if self.meta[b as usize].is_none() && !self.by_hash.contains_key(&h) {
                self.meta[b as usize] = Some(CachedBlock {
                    hash: h,
                    parent,
                    tokens: chunk.into(),
                });
                self.by_hash.insert(h, b);
            }
        }
    }

    /// Checks that positions `start .. end` of `seq` fall in blocks it owns
    /// alone and that no cached block would be written.
    ///
    /// # Errors
    /// [`EngineError::KvInvariant`] naming the block.
    pub fn check_writable(&self, seq: RequestId, start: u32, end: u32) -> Result<()> {
        if end <= start {
            return Ok(());
        }
        let table = self.table(seq);
        let (first, last) = (start / self.block_size, (end - 1) / self.block_size);
        for i in first..=last {
            let Some(&b) = table.get(i as usize) else {
                return Err(EngineError::KvInvariant(format!(
                    "sequence {seq} writes position {} past its {} blocks",
                    (i * self.block_size).max(start),
                    table.len()
                )));
            };
            if self.ref_counts[b as usize] != 1 || self.meta[b as usize].is_some() {
                return Err(EngineError::KvInvariant(format!(
                    "sequence {seq} would write into shared or cached block {b} (reference count {})",
                    self.ref_counts[b as usize]
                )));
            }
        }
        Ok(())
    }

    /// Releases every block of `seq`, tail first; returns how many blocks
    /// nobody references any more. A release of a block whose reference count
    /// is already 0 (a double free) is recorded and reported by [`Self::check`].
    pub fn free_seq(&mut self, seq: RequestId) -> u32 {
        self.chains.remove(&seq);
        let Some(table) = self.tables.remove(&seq) else {
            return 0;
        };
        self.release(seq, table)
    }

    /// Drops one reference to each of `blocks` (tail first); blocks nobody
    /// references go back to the free list, or to the LRU when cached.
    fn release(&mut self, seq: RequestId, blocks: Vec<u32>) -> u32 {
        let mut released = 0;
        for b in blocks.into_iter().rev() {
            let i = b as usize;
            if self.ref_counts[i] == 0 {
                self.violation.get_or_insert_with(|| {
                    format!("double free: sequence {seq} released block {b}, which had reference count 0")
                });
                continue;
            }
            self.ref_counts[i] -= 1;
            if self.ref_counts[i] == 0 {
                if self.meta[i].is_some() {
                    self.clock += 1;
                    self.stamp[i] = self.clock;
                    self.evictable.insert(self.clock, b);
                } else {
                    self.free.push(b);
                }
                released += 1;
            }
        }
        released
    }

    /// Shrinks `seq`'s table to the blocks covering its first `tokens`
    /// positions, releasing the tail (the rollback of rejected speculative
    /// tokens); returns how many blocks nobody references any more. Tail
    /// blocks hold positions past every computed token, so none of them is
    /// in the prefix cache.
    pub fn truncate(&mut self, seq: RequestId, tokens: u32) -> u32 {
        let keep = self.blocks_for(tokens) as usize;
        let Some(table) = self.tables.get_mut(&seq) else {
            return 0;
        };
        if table.len() <= keep {
            return 0;
        }
        let tail = table.split_off(keep);
        if let Some(chain) = self.chains.get_mut(&seq) {
            chain.truncate(keep);
        }
        self.release(seq, tail)
    }

    /// Sequences currently holding blocks.
    pub fn owners(&self) -> impl Iterator<Item = RequestId> + '_ {
        self.tables.keys().copied()
    }

    /// Checks the invariants: no double free was seen; every block is either
    /// free (on the free list once, unhashed, or evictable once, cached) with
    /// reference count 0, or owned, with a reference count equal to the number
    /// of tables that hold it; no table holds a block twice; the hash index
    /// and the cached blocks agree; the cache is empty when caching is off.
    ///
    /// # Errors
    /// [`EngineError::KvInvariant`] naming the first violation.
    pub fn check(&self) -> Result<()> {
        let bad = |m: String| Err(EngineError::KvInvariant(m));
        if let Some(v) = &self.violation {
            return bad(v.clone());
        }
        let n = self.num_blocks as usize;
        let mut on_free = vec![false; n];
        for &b in &self.free {
            let i = b as usize;
            if i >= n {
                return bad(format!("free block {b} out of range"));
            }
            if on_free[i] {
                return bad(format!("block {b} is on the free list twice"));
            }
            if self.meta[i].is_some() {
                return bad(format!("block {b} is on the free list but still cached"));
            }
            on_free[i] = true;
        }
        for (&stamp, &b) in &self.evictable {
            let i = b as usize;
            if i >= n {
                return bad(format!("evictable block {b} out of range"));
            }
            if on_free[i] {
                return bad(format!("block {b} is both free and evictable"));
            }
            if self.meta[i].is_none() || self.stamp[i] != stamp {
                return bad(format!("evictable block {b} is not cached under its stamp"));
            }
            on_free[i] = true;
        }
        let mut owners = vec![0u32; n];
        for (seq, table) in &self.tables {
            let mut seen = std::collections::BTreeSet::new();
            for &b in table {
                if !seen.insert(b) {
                    return bad(format!("sequence {seq} holds block {b} twice"));
                }
                if on_free[b as usize] {
                    return bad(format!(
                        "block {b} is owned by sequence {seq} and also free"
                    ));
                }
                owners[b as usize] += 1;
            }
        }
        for i in 0..n {
            if !on_free[i] && owners[i] == 0 {
                return bad(format!("block {i} is leaked (neither free nor owned)"));
            }
            if owners[i] != self.ref_counts[i] {
                return bad(format!(
                    "block {i} has reference count {} but {} owners",
                    self.ref_counts[i], owners[i]
                ));
            }
            if let Some(m) = &self.meta[i]
                && self.by_hash.get(&m.hash) != Some(&(i as u32))
            {
                return bad(format!("cached block {i} is missing from the hash index"));
            }
        }
        for (h, &b) in &self.by_hash {
            if self.meta[b as usize].as_ref().map(|m| m.hash) != Some(*h) {
                return bad(format!(
                    "the hash index names block {b}, which does not cache it"
                ));
            }
        }
        if !self.caching && !self.by_hash.is_empty() {
            return bad("the prefix cache is off but holds blocks".into());
        }
        Ok(())
    }

    /// [`Self::check`] plus: no sequence holds blocks and every block is free
    /// or evictable (the state at the end of a run).
    ///
    /// # Errors
    /// [`EngineError::KvInvariant`] naming a leaked block or owner.
    pub fn check_drained(&self) -> Result<()> {
        self.check()?;
        if let Some((seq, t)) = self.tables.iter().find(|(_, t)| !t.is_empty()) {
            return Err(EngineError::KvInvariant(format!(
                "sequence {seq} still holds {} blocks at the end of the run",
                t.len()
            )));
        }
        if self.free_blocks() != self.num_blocks {
            return Err(EngineError::KvInvariant(format!(
                "{} of {} blocks are not free at the end of the run",
                self.used_blocks(),
                self.num_blocks
            )));
        }
        Ok(())
    }
}

/// The chained hash of one full block: 128 bits from two splitmix64 lanes
/// over the parent hash and the token ids (stable across platforms).
fn block_hash(parent: BlockHash, tokens: &[u32]) -> BlockHash {
    let (mut a, mut b) = (
        parent as u64 ^ 0x243f_6a88_85a3_08d3,
        (parent >> 64) as u64 ^ 0x1319_8a2e_0370_7344,
    );
    for &t in tokens {
        a = splitmix(a ^ u64::from(t));
        b = splitmix(b.rotate_left(29) ^ u64::from(t) ^ 0xa409_3822_299f_31d0);
    }
    a = splitmix(a ^ tokens.len() as u64);
    (u128::from(b) << 64) | u128::from(a)
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mgr(blocks: u32) -> BlockManager {
        BlockManager::new(
            KvGeometry {
                block_size: 4,
                num_blocks: blocks,
            },
            0.1,
        )
    }

    fn cached(blocks: u32) -> BlockManager {
        mgr(blocks).with_prefix_cache(true)
    }

    /// Allocates and computes `tokens` for `seq`, registering its full blocks.
    fn fill(m: &mut BlockManager, seq: RequestId, tokens: &[u32]) {
        let hit = m.lookup(&tokens[..tokens.len() - 1]);
        m.adopt(seq, &hit).unwrap();
        m.ensure(seq, tokens.len() as u32).unwrap();
        m.register(seq, tokens, tokens.len() as u32);
        m.check().unwrap();
    }

    #[test]
    fn allocates_frees_and_checks() {
        let mut m = mgr(10);
        assert_eq!(m.watermark_blocks(), 1);
        m.ensure(1, 9).unwrap();
        assert_eq!(m.table(1), &[0, 1, 2]);
        m.ensure(1, 12).unwrap();
        assert_eq!(m.table(1).len(), 3);
        m.ensure(2, 1).unwrap();
        assert_eq!(m.used_blocks(), 4);
        assert!(m.can_allocate(5, true));
        assert!(!m.can_allocate(6, true));
        assert!(m.can_allocate(6, false));
        m.check().unwrap();
        assert!(m.check_drained().is_err());
        assert_eq!(m.free_seq(1), 3);
        assert_eq!(m.free_seq(2), 1);
        m.check_drained().unwrap();
        assert!(m.ensure(3, 41).is_err());
    }

    #[test]
    fn the_hash_chain_matches_whole_prefixes_only() {
        let mut m = cached(16);
        let a: Vec<u32> = (1..=12).collect();
        fill(&mut m, 1, &a);
        assert_eq!(m.cached_blocks(), 3);
        // The same 12 tokens and more: three blocks.
        let mut b = a.clone();
        b.extend([50, 51]);
        assert_eq!(m.lookup(&b).blocks(), m.table(1));
        assert_eq!(m.lookup(&b).tokens(), 12);
        // A partial last block is never matched.
        assert_eq!(m.lookup(&a[..10]).blocks(), &m.table(1)[..2]);
        // Same third block, different first block: the chain breaks at once.
        let mut c = a.clone();
        c[0] = 99;
        assert!(m.lookup(&c).blocks().is_empty());
        // A different third block: two blocks.
        let mut d = a.clone();
        d[9] = 99;
        assert_eq!(m.lookup(&d).tokens(), 8);
        // Identical block contents at another depth do not match either.
        let shifted: Vec<u32> = (5..=12).collect();
        assert!(m.lookup(&shifted).blocks().is_empty());
    }

    #[test]
    fn refcounts_follow_sharers_and_cached_blocks_count_as_free() {
        let mut m = cached(8);
        let a: Vec<u32> = (1..=10).collect();
        fill(&mut m, 1, &a);
        let mut b: Vec<u32> = (1..=8).collect();
        b.extend([70, 71, 72]);
        fill(&mut m, 2, &b);
        assert_eq!(m.table(2)[..2], m.table(1)[..2]);
        assert_eq!(m.used_blocks(), 3 + 1);
        assert_eq!(m.ref_counts[m.table(1)[0] as usize], 2);
        // The sharer's own blocks are not writable by it where shared.
        assert!(m.check_writable(2, 7, 8).is_err());
        assert!(m.check_writable(2, 8, 11).is_ok());
        assert_eq!(m.free_seq(1), 1);
        m.check().unwrap();
        assert_eq!(m.free_seq(2), 3);
        // Everything is free again, and the two shared full blocks stay cached.
        m.check_drained().unwrap();
        assert_eq!((m.evictable_blocks(), m.cached_blocks()), (2, 2));
        assert_eq!(m.free_blocks(), 8);
        // A later hit takes blocks out of the evictable set.
        let hit = m.lookup(&a[..9]);
        assert_eq!((hit.tokens(), hit.evictable()), (8, 2));
        m.adopt(3, &hit).unwrap();
        assert_eq!(m.evictable_blocks(), 0);
        m.check().unwrap();
        m.free_seq(3);
        m.check_drained().unwrap();
    }

    #[test]
    fn eviction_takes_free_blocks_first_then_the_least_recently_released() {
        let mut m = cached(6);
        let a = [1, 2, 3, 4, 5, 6, 7, 8];
        let b = [11, 12, 13, 14, 15, 16, 17, 18];
        fill(&mut m, 1, &a);
        fill(&mut m, 2, &b);
        let (ta, tb) = (m.table(1).to_vec(), m.table(2).to_vec());
        m.free_seq(1);
        m.free_seq(2);
        assert_eq!(m.evictable_blocks(), 4);
        // Two never-used blocks go first; the cache is untouched.
        m.ensure(3, 8).unwrap();
        assert_eq!(m.cached_blocks(), 4);
        // Then a's tail block (released first), then a's first block.
        m.ensure(3, 12).unwrap();
        assert_eq!(m.table(3)[2], ta[1]);
        assert_eq!(m.lookup(&a).tokens(), 4);
        m.ensure(3, 16).unwrap();
        assert_eq!(m.table(3)[3], ta[0]);
        assert!(m.lookup(&a).blocks().is_empty());
        assert_eq!(m.lookup(&b).blocks(), &tb[..]);
        m.check().unwrap();
        m.free_seq(3);
        m.check_drained().unwrap();
    }

    #[test]
    fn truncate_releases_the_tail_only() {
        let mut m = cached(16);
        let tokens: Vec<u32> = (0..20).collect();
        m.ensure(1, 20).unwrap();
        m.register(1, &tokens, 8);
        assert_eq!((m.table(1).len(), m.cached_blocks()), (5, 2));
        assert_eq!(m.truncate(1, 9), 2);
        assert_eq!((m.table(1).len(), m.free_blocks()), (3, 13));
        assert_eq!(m.truncate(1, 12), 0);
        m.check().unwrap();
        m.ensure(1, 17).unwrap();
        assert_eq!(m.table(1).len(), 5);
        m.free_seq(1);
        m.check_drained().unwrap();
    }

    #[test]
    fn a_double_free_is_caught_by_check() {
        let mut m = cached(4);
        fill(&mut m, 1, &[1, 2, 3, 4, 5]);
        // Corrupt the count as a bookkeeping bug would: one release too many.
        let b = m.table(1)[0] as usize;
        m.ref_counts[b] = 0;
        m.free_seq(1);
        let e = m.check().unwrap_err().to_string();
        assert!(e.contains("double free"), "{e}");
    }

    #[test]
    fn without_the_cache_nothing_is_hashed() {
        let mut m = mgr(4);
        fill(&mut m, 1, &[1, 2, 3, 4, 5]);
        assert_eq!(m.cached_blocks(), 0);
        assert!(m.lookup(&[1, 2, 3, 4, 5]).blocks().is_empty());
        assert_eq!(m.free_seq(1), 2);
        assert_eq!(m.evictable_blocks(), 0);
        m.check_drained().unwrap();
    }

    #[test]
    fn budget_geometry() {
        let g = BlockManager::geometry_for_budget(10_000, 100, 16).unwrap();
        assert_eq!(g.num_blocks, 6);
        let e = BlockManager::geometry_for_budget(100, 100, 16).unwrap_err();
        assert!(e.to_string().contains("1600 bytes"), "{e}");
    }
}
