//! The warm pool: computers restored ahead and parked, paused, for
//! launches to take. A parked computer already has an identity and has run
//! a shell once; a launch from the pool resumes it and only personalizes
//! it. Each parked computer holds its snapshot's lease and has a record in
//! state `parked` (so a process that dies leaves orphans that a sweep
//! finds, not leaks).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use orgo_snapshot::Built;
use orgo_template::Digest;

use crate::agent::AgentClient;
use crate::vmm::Vm;

/// A restored computer before its identity: parked in the pool, or about to
/// be personalized by a launch.
#[derive(Debug)]
pub(crate) struct Warm {
    pub(crate) id: String,
    pub(crate) built: Built,
    pub(crate) key: PoolKey,
    pub(crate) vm: Box<dyn Vm>,
    pub(crate) agent: Arc<AgentClient>,
    pub(crate) pid: Option<u32>,
    /// Its host network (`None` under the user-mode network).
    pub(crate) net: Option<crate::net::Attached>,
    /// Its network records what it reaches.
    pub(crate) learning: bool,
}

/// Which parked computers a launch can take: the same snapshot and shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct PoolKey {
    pub(crate) snapshot: Digest,
    pub(crate) cpus: u32,
    pub(crate) memory_mib: u64,
}

/// The parked computers, and the fills under way.
#[derive(Debug, Default)]
pub(crate) struct Pool {
    state: Mutex<PoolState>,
}

#[derive(Debug, Default)]
struct PoolState {
    parked: HashMap<PoolKey, Vec<Warm>>,
    filling: HashMap<PoolKey, usize>,
    /// Bumped by [`Pool::drain`]: a fill that started before a drain does
    /// not park what it made.
    generation: u64,
}

/// A fill's claim on one more computer for a key: counted as being made
/// until [settled](Pool::settle), or dropped (a fill cancelled half-way).
#[derive(Debug)]
pub(crate) struct Claim<'a> {
    pool: &'a Pool,
    key: PoolKey,
    generation: u64,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if let Some(n) = self.pool.state().filling.get_mut(&self.key) {
            *n = n.saturating_sub(1);
        }
    }
}

impl Pool {
    fn state(&self) -> std::sync::MutexGuard<'_, PoolState> {
        self.state
            .lock()
            .expect("the pool's lock is never poisoned")
    }

    /// A parked computer for `key`, if any (still paused).
    pub(crate) fn take(&self, key: PoolKey) -> Option<Warm> {
        self.state().parked.get_mut(&key)?.pop()
    }

    /// A claim to park one more computer for `key`, unless `count` are
    /// parked or being made already.
    pub(crate) fn claim(&self, key: PoolKey, count: usize) -> Option<Claim<'_>> {
        let mut state = self.state();
        let have = state.parked.get(&key).map_or(0, Vec::len)
            + state.filling.get(&key).copied().unwrap_or(0);
        if have >= count {
            return None;
        }
        *state.filling.entry(key).or_default() += 1;
        Some(Claim {
            pool: self,
            key,
            generation: state.generation,
        })
    }

    /// Ends `claim`: parks `warm`, or hands it back if the pool was drained
    /// meanwhile (the caller stops it).
    pub(crate) fn settle(&self, claim: Claim<'_>, warm: Option<Warm>) -> Option<Warm> {
        let (key, generation) = (claim.key, claim.generation);
        // Its drop ends the count of what is being made.
        drop(claim);
        let mut state = self.state();
        let warm = warm?;
        if state.generation != generation {
            return Some(warm);
        }
        state.parked.entry(key).or_default().push(warm);
        None
    }

    /// Every parked computer, taken out; fills under way park nothing.
    pub(crate) fn drain(&self) -> Vec<Warm> {
        let mut state = self.state();
        state.generation += 1;
        state.parked.drain().flat_map(|(_, v)| v).collect()
    }

    /// Every parked computer, taken out, from a `Drop` (no lock wait: the
    /// pool is not shared any more).
    pub(crate) fn drain_owned(&mut self) -> Vec<Warm> {
        self.state
            .get_mut()
            .map(|state| state.parked.drain().flat_map(|(_, v)| v).collect())
            .unwrap_or_default()
    }

    /// The parked computers' ids.
    pub(crate) fn ids(&self) -> Vec<String> {
        self.state()
            .parked
            .values()
            .flatten()
            .map(|w| w.id.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_dropped_half_way_no_longer_counts() {
        let pool = Pool::default();
        let key = PoolKey {
            snapshot: Digest::of(b"snapshot"),
            cpus: 1,
            memory_mib: 512,
        };
        let first = pool.claim(key, 1).expect("room for one");
        assert!(pool.claim(key, 1).is_none(), "one is being made");
        drop(first);
        let again = pool
            .claim(key, 1)
            .expect("the cancelled fill freed its place");
        assert!(pool.settle(again, None).is_none());
        assert!(
            pool.claim(key, 1).is_some(),
            "a failed fill frees its place"
        );
    }
}
