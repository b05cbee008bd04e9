//! The decision itself: where a task completes earliest (and second earliest), looking at
//! the workers holding its inputs, the workers it names and the first workers of each speed
//! group of its pool.

use taskfleet_common::Millis;

use super::{runtime_on, Choice, ParentAt, PlacedWorker, Placer, TaskShape, WorkerId};

/// The best two candidates of a decision, by (end, faster first, lower id).
#[derive(Default)]
struct TopTwo {
    best: Option<((Millis, f64, WorkerId), Choice)>,
    second: Option<((Millis, f64, WorkerId), Choice)>,
}

impl TopTwo {
    fn offer(&mut self, key: (Millis, f64, WorkerId), choice: Choice) {
        let before = |a: &(Millis, f64, WorkerId), b: &(Millis, f64, WorkerId)| (a.0, a.1, a.2) < (b.0, b.1, b.2);
        match &self.best {
            Some((best, _)) if !before(&key, best) => {
                if self.second.as_ref().is_none_or(|(second, _)| before(&key, second)) {
                    self.second = Some((key, choice));
                }
            }
            _ => self.second = self.best.replace((key, choice)),
        }
    }

    /// Whether a candidate ending no earlier than `end` can no longer change the result.
    fn beyond(&self, end: Millis, runner_up: bool) -> bool {
        let last = if runner_up { &self.second } else { &self.best };
        last.as_ref().is_some_and(|((last_end, _, _), _)| end > *last_end)
    }
}

impl Placer {
    /// Like [`Placer::choose`], restricted to worker `only` when it is given.
    pub(crate) fn choose_among(
        &mut self,
        now: Millis,
        task: TaskShape<'_>,
        parents: &[ParentAt],
        only: Option<WorkerId>,
    ) -> Option<Choice> {
        self.choose_two(now, task, parents, only, false, false)
            .map(|(best, _)| best)
    }

    /// Like [`Placer::choose_among`], also finding, when `runner_up` is set, the worker where
    /// the task would complete second earliest and when (the batch heuristics' sufferage);
    /// with `roomy_only`, full workers are skipped even when they are chosen otherwise.
    pub(crate) fn choose_two(
        &mut self,
        now: Millis,
        task: TaskShape<'_>,
        parents: &[ParentAt],
        only: Option<WorkerId>,
        runner_up: bool,
        roomy_only: bool,
    ) -> Option<(Choice, Option<(WorkerId, Millis)>)> {
        let need_room = !self.choose_full || roomy_only;
        let remote_ready = self.scratch.data.compute(parents);
        self.scratch.stamp += 1;
        let stamp = self.scratch.stamp;
        let mut special = std::mem::take(&mut self.scratch.special);
        special.clear();
        match only {
            Some(id) => special.push(id),
            None => {
                for &id in self.scratch.data.parent_workers() {
                    if self.scratch.special_mark[id.index()] != stamp {
                        self.scratch.special_mark[id.index()] = stamp;
                        special.push(id);
                    }
                }
                for name in task.by_worker.into_iter().flat_map(|by_worker| by_worker.keys()) {
                    for &id in self.by_name.get(name.as_str()).into_iter().flatten() {
                        if self.scratch.special_mark[id.index()] != stamp {
                            self.scratch.special_mark[id.index()] = stamp;
                            special.push(id);
                        }
                    }
                }
            }
        }
        let mut top = TopTwo::default();
        let accepts = |placed: &PlacedWorker| task.fits.is_none_or(|fits| fits(&placed.model));
        let consider = |top: &mut TopTwo, id: WorkerId, placed: &PlacedWorker, ready: Millis| {
            let start = now.max(ready).max(placed.free_at(task.slots));
            let end = start.plus_ms(runtime_on(task.estimate_ms, task.by_worker, &placed.model));
            top.offer((end, -placed.model.speed, id), Choice { worker: id, start, end });
        };
        for &id in &special {
            let placed = &self.workers[id.index()];
            if placed.alive
                && placed.model.slots >= task.slots
                && (!need_room || placed.has_room(self.room_per_slot))
                && placed.model.pools.iter().any(|p| &**p == task.pool)
                && accepts(placed)
            {
                let ready = self.scratch.data.local(id).unwrap_or(remote_ready);
                consider(&mut top, id, placed, ready);
            }
        }
        if only.is_none() {
            if let Some(groups) = self.pools.get(task.pool) {
                for group in &groups.groups {
                    let runtime = (task.estimate_ms as f64 / group.speed).round() as u64;
                    let mut taken = 0;
                    for &(earliest, id) in &group.by_free {
                        let bound = now.max(remote_ready).max(earliest).plus_ms(runtime);
                        if top.beyond(bound, runner_up) {
                            break;
                        }
                        if self.scratch.special_mark[id.index()] == stamp {
                            continue;
                        }
                        let placed = &self.workers[id.index()];
                        if placed.model.slots < task.slots
                            || !accepts(placed)
                            || (need_room && !placed.has_room(self.room_per_slot))
                        {
                            continue;
                        }
                        consider(&mut top, id, placed, remote_ready);
                        taken += 1;
                        // The earliest free workers of the group are its best.
                        if task.slots == 1 && taken == 1 + usize::from(runner_up) {
                            break;
                        }
                    }
                }
            }
        }
        self.scratch.special = special;
        let (_, best) = top.best?;
        Some((best, top.second.map(|((end, _, id), _)| (id, end))))
    }
}
