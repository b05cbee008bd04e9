//! What a consumer read from one partition and has not committed yet, and so how far it may
//! commit: only up to the last message of an unbroken run of finished ones, so that a message
//! finishing early never commits past one still running (which would be lost with a crash).

use std::collections::BTreeMap;

/// The offsets read from one partition since the last commit, each finished or not.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Ledger {
    /// Offsets read and not behind the commit position, with whether each is finished.
    open: BTreeMap<i64, bool>,
    /// Where the next commit points: every offset read below it is finished. `None` until
    /// the first read.
    position: Option<i64>,
    /// The position last handed out to be committed.
    committed: Option<i64>,
    /// The highest offset read.
    last_read: Option<i64>,
}

/// What [`Ledger::read`] makes of an offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Read {
    /// A new message, to be delivered.
    New,
    /// One this ledger holds already (read again after a rebalance gave the partition back):
    /// not to be delivered twice.
    Known,
}

impl Ledger {
    /// A ledger whose partition was last committed at `committed` (the next offset to read).
    pub(crate) fn at(committed: i64) -> Ledger {
        Ledger {
            open: BTreeMap::new(),
            position: Some(committed),
            committed: Some(committed),
            last_read: None,
        }
    }

    /// Notes that `offset` was read.
    pub(crate) fn read(&mut self, offset: i64) -> Read {
        if self.position.is_some_and(|position| offset < position) || self.open.contains_key(&offset) {
            return Read::Known;
        }
        if self.position.is_none() {
            self.position = Some(offset);
        }
        self.open.insert(offset, false);
        self.last_read = Some(self.last_read.map_or(offset, |last| last.max(offset)));
        Read::New
    }

    /// Notes that the message at `offset` is finished; the position moves past every finished
    /// offset at the head. An offset never read (or already behind the position) is ignored.
    pub(crate) fn finish(&mut self, offset: i64) {
        if let Some(finished) = self.open.get_mut(&offset) {
            *finished = true;
        }
        while let Some(entry) = self.open.first_entry() {
            if !*entry.get() {
                // Skipped offsets (compaction, transaction markers) below an unfinished one
                // are not ours to wait for.
                self.position = Some(*entry.key());
                return;
            }
            let (offset, _) = entry.remove_entry();
            self.position = Some(offset + 1);
        }
    }

    /// The position to commit, if it moved since the last one handed out.
    pub(crate) fn take_commit(&mut self) -> Option<i64> {
        let position = self.position?;
        if self.committed.is_some_and(|committed| committed >= position) {
            return None;
        }
        self.committed = Some(position);
        Some(position)
    }

    /// The position a final commit points at (everything finished below it).
    #[cfg(test)]
    pub(crate) fn position(&self) -> Option<i64> {
        self.position
    }

    /// The offset after the highest one read: where reading resumes.
    pub(crate) fn next_read(&self) -> Option<i64> {
        self.last_read.map(|last| last + 1)
    }

    /// The position last handed out to be committed.
    pub(crate) fn committed(&self) -> Option<i64> {
        self.committed
    }

    /// Messages read and not finished, or finished behind one that is not.
    pub(crate) fn open(&self) -> usize {
        self.open.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn commits_only_the_finished_head() {
        let mut ledger = Ledger::at(10);
        for offset in 10..15 {
            assert_eq!(ledger.read(offset), Read::New);
        }
        assert_eq!(ledger.take_commit(), None, "nothing finished yet");
        ledger.finish(12);
        ledger.finish(11);
        assert_eq!(ledger.take_commit(), None, "10 still runs");
        ledger.finish(10);
        assert_eq!(ledger.take_commit(), Some(13));
        assert_eq!(ledger.take_commit(), None, "handed out once");
        ledger.finish(14);
        assert_eq!(ledger.take_commit(), None, "13 still runs");
        ledger.finish(13);
        assert_eq!(ledger.take_commit(), Some(15));
        assert_eq!(ledger.open(), 0);
    }

    #[test]
    fn gaps_in_the_offsets_do_not_hold_commits_back() {
        let mut ledger = Ledger::at(0);
        ledger.read(0);
        ledger.read(3);
        ledger.read(7);
        ledger.finish(0);
        assert_eq!(ledger.take_commit(), Some(3), "up to the next unfinished offset read");
        ledger.finish(7);
        ledger.finish(3);
        assert_eq!(ledger.take_commit(), Some(8));
    }

    #[test]
    fn a_partition_read_again_delivers_only_what_is_new() {
        let mut ledger = Ledger::at(5);
        ledger.read(5);
        ledger.read(6);
        ledger.finish(6);
        // The partition comes back after a rebalance and is read again from 5.
        assert_eq!(ledger.read(5), Read::Known, "still running here");
        assert_eq!(ledger.read(6), Read::Known, "finished here, not committed");
        assert_eq!(ledger.read(7), Read::New);
        assert_eq!(ledger.read(4), Read::Known, "behind the position");
    }

    #[test]
    fn a_fresh_ledger_starts_at_the_first_offset_read() {
        let mut ledger = Ledger::default();
        assert_eq!(ledger.take_commit(), None);
        ledger.read(42);
        assert_eq!(ledger.take_commit(), Some(42), "the start is a position too");
        ledger.finish(42);
        assert_eq!(ledger.take_commit(), Some(43));
        assert_eq!(ledger.committed(), Some(43));
    }

    #[test]
    fn finishing_what_was_never_read_changes_nothing() {
        let mut ledger = Ledger::at(0);
        ledger.read(0);
        ledger.finish(9);
        ledger.finish(-1);
        assert_eq!(ledger.take_commit(), None);
        assert_eq!(ledger.position(), Some(0));
    }

    proptest! {
        /// Whatever the order messages finish in, the position never passes an unfinished one,
        /// never goes back, and reaches the end once all are finished.
        #[test]
        fn never_commits_past_an_unfinished_message(
            start in 0i64..1000,
            gaps in proptest::collection::vec(1i64..4, 1..60),
            order in proptest::collection::vec(any::<prop::sample::Index>(), 0..60),
        ) {
            let mut ledger = Ledger::at(start);
            let mut offsets = Vec::new();
            let mut offset = start;
            for gap in &gaps {
                offsets.push(offset);
                ledger.read(offset);
                offset += gap;
            }
            let mut unfinished: Vec<i64> = offsets.clone();
            let mut last = start;
            for index in order {
                if unfinished.is_empty() {
                    break;
                }
                let done = unfinished.remove(index.index(unfinished.len()));
                ledger.finish(done);
                if let Some(position) = ledger.take_commit() {
                    prop_assert!(position > last, "the position went back or stood still");
                    last = position;
                }
                let lowest = unfinished.iter().min().copied();
                if let Some(lowest) = lowest {
                    prop_assert!(ledger.position().unwrap() <= lowest);
                }
            }
            for done in unfinished {
                ledger.finish(done);
            }
            prop_assert_eq!(ledger.position(), Some(offsets.last().unwrap() + 1));
            prop_assert_eq!(ledger.open(), 0);
        }
    }
}
