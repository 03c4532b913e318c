//! The paged KV block manager: a free list of fixed-size blocks, reference
//! counts, a watermark and one block table per sequence.
//!
//! The manager does bookkeeping only; the backend owns the storage (it is told
//! the [`KvGeometry`] once through [`crate::Backend::init_kv`]). Blocks are
//! handed out from a LIFO free list, so allocation is deterministic.

use std::collections::BTreeMap;

use fuselab_core::RequestId;

use crate::{EngineError, KvGeometry, Result};

/// Bookkeeping of a paged KV cache.
#[derive(Clone, Debug)]
pub struct BlockManager {
    block_size: u32,
    num_blocks: u32,
    watermark_blocks: u32,
    free: Vec<u32>,
    ref_counts: Vec<u32>,
    tables: BTreeMap<RequestId, Vec<u32>>,
}

impl BlockManager {
    /// A manager for `geometry`, keeping `watermark` (a fraction of all blocks,
    /// vLLM's 0.01) free when new sequences are admitted.
    pub fn new(geometry: KvGeometry, watermark: f64) -> Self {
        let num_blocks = geometry.num_blocks;
        // Truncation is intended: vLLM uses int(watermark * num_blocks).
        let watermark_blocks = (watermark.clamp(0.0, 1.0) * f64::from(num_blocks)) as u32;
        Self {
            block_size: geometry.block_size.max(1),
            num_blocks,
            watermark_blocks,
            free: (0..num_blocks).rev().collect(),
            ref_counts: vec![0; num_blocks as usize],
            tables: BTreeMap::new(),
        }
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

    /// Blocks on the free list.
    pub fn free_blocks(&self) -> u32 {
        self.free.len() as u32
    }

    /// Blocks in use.
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

    /// Grows `seq`'s table to cover `tokens` tokens.
    ///
    /// # Errors
    /// [`EngineError::KvInvariant`] when the free list runs dry; callers check
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
        let table = self.tables.entry(seq).or_default();
        for _ in 0..need {
            let b = self.free.pop().unwrap_or_default();
            self.ref_counts[b as usize] += 1;
            table.push(b);
        }
        Ok(())
    }

    /// Makes `child` share every block of `parent` (reference counts go up);
    /// the basis for prefix sharing and forks.
    ///
    /// # Errors
    /// [`EngineError::KvInvariant`] when `child` already holds blocks.
    pub fn share(&mut self, parent: RequestId, child: RequestId) -> Result<()> {
        if self.holds(child) {
            return Err(EngineError::KvInvariant(format!(
                "sequence {child} already holds blocks and cannot share {parent}'s"
            )));
        }
        let blocks = self.table(parent).to_vec();
        for &b in &blocks {
            self.ref_counts[b as usize] += 1;
        }
        self.tables.insert(child, blocks);
        Ok(())
    }

    /// Releases every block of `seq`; returns how many blocks went back to the free list.
    pub fn free_seq(&mut self, seq: RequestId) -> u32 {
        let Some(table) = self.tables.remove(&seq) else {
            return 0;
        };
        let mut released = 0;
        for b in table {
            let rc = &mut self.ref_counts[b as usize];
            *rc = rc.saturating_sub(1);
            if *rc == 0 {
                self.free.push(b);
                released += 1;
            }
        }
        released
    }

    /// Sequences currently holding blocks.
    pub fn owners(&self) -> impl Iterator<Item = RequestId> + '_ {
        self.tables.keys().copied()
    }

    /// Checks the invariants: every block is either on the free list exactly
    /// once with reference count 0, or owned, with a reference count equal to
    /// the number of tables that hold it; no table holds a block twice.
    ///
    /// # Errors
    /// [`EngineError::KvInvariant`] naming the first violation.
    pub fn check(&self) -> Result<()> {
        let n = self.num_blocks as usize;
        let mut on_free = vec![false; n];
        for &b in &self.free {
            let i = b as usize;
            if i >= n {
                return Err(EngineError::KvInvariant(format!(
                    "free block {b} out of range"
                )));
            }
            if on_free[i] {
                return Err(EngineError::KvInvariant(format!(
                    "block {b} is on the free list twice"
                )));
            }
            on_free[i] = true;
        }
        let mut owners = vec![0u32; n];
        for (seq, table) in &self.tables {
            let mut seen = std::collections::BTreeSet::new();
            for &b in table {
                if !seen.insert(b) {
                    return Err(EngineError::KvInvariant(format!(
                        "sequence {seq} holds block {b} twice"
                    )));
                }
                if on_free[b as usize] {
                    return Err(EngineError::KvInvariant(format!(
                        "block {b} is owned by sequence {seq} and also free"
                    )));
                }
                owners[b as usize] += 1;
            }
        }
        for i in 0..n {
            if !on_free[i] && owners[i] == 0 {
                return Err(EngineError::KvInvariant(format!(
                    "block {i} is leaked (neither free nor owned)"
                )));
            }
            if owners[i] != self.ref_counts[i] {
                return Err(EngineError::KvInvariant(format!(
                    "block {i} has reference count {} but {} owners",
                    self.ref_counts[i], owners[i]
                )));
            }
        }
        Ok(())
    }

    /// [`Self::check`] plus: no sequence holds blocks and every block is free
    /// (the state at the end of a run).
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
    fn shared_blocks_are_freed_by_the_last_owner() {
        let mut m = mgr(4);
        m.ensure(1, 8).unwrap();
        m.share(1, 2).unwrap();
        m.check().unwrap();
        assert_eq!(m.free_seq(1), 0);
        assert_eq!(m.used_blocks(), 2);
        assert_eq!(m.free_seq(2), 2);
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
