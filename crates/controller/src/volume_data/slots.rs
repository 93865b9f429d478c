//! Which claims of a backup may start their mover now, within the policy's
//! `volumes.concurrency` (`moversPerNode`, `moversPerBackup`). Pure
//! bookkeeping: [`super::back_up`] asks [`Slots::fits`], records starts,
//! landings and ends, and does the I/O.
//!
//! ```text
//! claim ─▶ Place::Node(n)    fileSystem (the workload's node), snapshotMove
//!                            of a volume its node affinity pins to n
//!       ─▶ Place::Scheduler  snapshotMove of a volume any node can mount:
//!                            counted against the node it lands on, once
//!                            the scheduler has bound its mover
//!       ─▶ Place::NoMover    no mover pod (moversPerBackup only)
//! ```

use std::collections::BTreeMap;

use lifeboat_core::model::VolumeConcurrency;

/// Where a claim's mover runs, as known before it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Place {
    /// On this node.
    Node(String),
    /// Where the scheduler puts it.
    Scheduler,
    /// The method runs no mover pod.
    NoMover,
}

/// The movers of one backup running now.
#[derive(Debug)]
pub(super) struct Slots {
    per_node: usize,
    per_backup: Option<usize>,
    /// Nodes a [`Place::Scheduler`] mover may land on.
    open_nodes: usize,
    /// Job ─▶ its place and, for a scheduler-placed mover, where it landed.
    running: BTreeMap<usize, (Place, Option<String>)>,
}

impl Slots {
    pub(super) fn new(limits: &VolumeConcurrency, open_nodes: usize) -> Slots {
        let count = |n: u32| usize::try_from(n.max(1)).unwrap_or(usize::MAX);
        Slots {
            per_node: count(limits.movers_per_node),
            per_backup: limits.movers_per_backup.map(count),
            open_nodes,
            running: BTreeMap::new(),
        }
    }

    /// The node a running job's mover occupies, when known.
    fn node_of(place: &Place, landed: &Option<String>) -> Option<String> {
        match place {
            Place::Node(n) => Some(n.clone()),
            Place::Scheduler => landed.clone(),
            Place::NoMover => None,
        }
    }

    /// Movers running on each node whose movers' nodes are known.
    fn loads(&self) -> BTreeMap<String, usize> {
        let mut loads = BTreeMap::new();
        for (place, landed) in self.running.values() {
            if let Some(n) = Slots::node_of(place, landed) {
                *loads.entry(n).or_default() += 1;
            }
        }
        loads
    }

    /// Jobs whose mover the scheduler has not placed yet (or not that we
    /// have seen).
    pub(super) fn unplaced(&self) -> Vec<usize> {
        self.running
            .iter()
            .filter(|(_, (p, landed))| *p == Place::Scheduler && landed.is_none())
            .map(|(j, _)| *j)
            .collect()
    }

    /// Whether nothing runs.
    pub(super) fn is_idle(&self) -> bool {
        self.running.is_empty()
    }

    /// Whether a claim placed at `place` may start now. A scheduler-placed
    /// mover starts only once the previous one has landed (so it is
    /// counted where it runs before the next one is placed) and while an
    /// open node is below `moversPerNode`.
    pub(super) fn fits(&self, place: &Place) -> bool {
        if self.per_backup.is_some_and(|max| self.running.len() >= max) {
            return false;
        }
        let loads = self.loads();
        match place {
            Place::Node(n) => loads.get(n).copied().unwrap_or(0) < self.per_node,
            Place::Scheduler => {
                let full = loads.values().filter(|l| **l >= self.per_node).count();
                self.unplaced().is_empty() && self.open_nodes > full
            }
            Place::NoMover => true,
        }
    }

    pub(super) fn start(&mut self, job: usize, place: Place) {
        self.running.insert(job, (place, None));
    }

    /// The scheduler bound `job`'s mover to `node`.
    pub(super) fn landed(&mut self, job: usize, node: &str) {
        if let Some((Place::Scheduler, landed)) = self.running.get_mut(&job) {
            *landed = Some(node.to_string());
        }
    }

    pub(super) fn finish(&mut self, job: usize) {
        self.running.remove(&job);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_node: u32, per_backup: Option<u32>) -> VolumeConcurrency {
        VolumeConcurrency {
            movers_per_node: per_node,
            movers_per_backup: per_backup,
        }
    }

    fn node(n: &str) -> Place {
        Place::Node(n.into())
    }

    #[test]
    fn movers_per_node_bounds_each_node_and_movers_per_backup_all() {
        let mut s = Slots::new(&limits(1, None), 3);
        s.start(0, node("a"));
        assert!(!s.fits(&node("a")));
        assert!(s.fits(&node("b")));
        s.start(1, node("b"));
        s.start(2, node("c"));
        assert!(!s.fits(&Place::Scheduler), "every open node is full");
        assert!(s.fits(&Place::NoMover));
        s.finish(0);
        assert!(s.fits(&node("a")));

        let mut s = Slots::new(&limits(2, Some(3)), 3);
        s.start(0, node("a"));
        s.start(1, node("a"));
        assert!(!s.fits(&node("a")));
        s.start(2, node("b"));
        assert!(!s.fits(&node("c")), "moversPerBackup: 3");
        assert!(!s.fits(&Place::NoMover));
    }

    #[test]
    fn a_scheduler_placed_mover_counts_where_it_lands_and_lands_before_the_next_starts() {
        let mut s = Slots::new(&limits(1, None), 2);
        assert!(s.fits(&Place::Scheduler));
        s.start(0, Place::Scheduler);
        assert_eq!(s.unplaced(), [0]);
        assert!(!s.fits(&Place::Scheduler), "the first has not landed yet");
        assert!(s.fits(&node("a")), "not counted anywhere before it lands");
        s.landed(0, "a");
        assert!(s.unplaced().is_empty());
        assert!(!s.fits(&node("a")));
        assert!(s.fits(&Place::Scheduler), "node b is free");
        s.start(1, Place::Scheduler);
        s.landed(1, "b");
        assert!(!s.fits(&Place::Scheduler), "both open nodes are full");
        s.finish(0);
        assert!(s.fits(&Place::Scheduler));
        assert!(!s.is_idle());
    }

    #[test]
    fn limits_below_one_count_as_one() {
        let mut s = Slots::new(&limits(0, Some(0)), 1);
        assert!(s.fits(&node("a")));
        s.start(0, node("a"));
        assert!(!s.fits(&node("b")));
    }
}
