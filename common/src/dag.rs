//! The dependency graph of a workflow in compressed sparse rows: parents and children of every
//! task as slices, a topological order, and the longest paths used for summaries.
//!
//! A [`Dag`] can only be built from an acyclic graph; building one from a cyclic graph returns
//! the cycles found, as task indices in dependency order.

/// Most cycles reported for one graph.
const MAX_CYCLES_REPORTED: usize = 10;

/// An acyclic dependency graph over task indices `0..n_tasks`.
#[derive(Clone, Debug, Default)]
pub struct Dag {
    parent_offsets: Vec<u32>,
    parents: Vec<u32>,
    child_offsets: Vec<u32>,
    children: Vec<u32>,
    topo_order: Vec<u32>,
}

/// The heaviest chain through a graph.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CriticalPath {
    /// Task indices from the first task to the last.
    pub path: Vec<u32>,
    /// Sum of the weights along the path.
    pub length: u64,
}

impl Dag {
    /// Builds the graph from each task's parent list, or returns the cycles it contains.
    pub fn new<I, J>(parent_lists: I) -> Result<Dag, Vec<Vec<u32>>>
    where
        I: IntoIterator<Item = J>,
        J: IntoIterator<Item = u32>,
    {
        let mut parent_offsets = vec![0u32];
        let mut parents = Vec::new();
        for list in parent_lists {
            parents.extend(list);
            parent_offsets.push(parents.len() as u32);
        }
        let n_tasks = parent_offsets.len() - 1;
        let mut child_counts = vec![0u32; n_tasks + 1];
        for &parent in &parents {
            child_counts[parent as usize + 1] += 1;
        }
        let mut child_offsets = child_counts;
        for idx in 1..=n_tasks {
            child_offsets[idx] += child_offsets[idx - 1];
        }
        let mut cursor = child_offsets.clone();
        let mut children = vec![0u32; parents.len()];
        for child in 0..n_tasks {
            for &parent in &parents[parent_offsets[child] as usize..parent_offsets[child + 1] as usize] {
                children[cursor[parent as usize] as usize] = child as u32;
                cursor[parent as usize] += 1;
            }
        }
        let mut dag = Dag {
            parent_offsets,
            parents,
            child_offsets,
            children,
            topo_order: Vec::new(),
        };
        let order = dag.kahn_order();
        if order.len() != n_tasks {
            return Err(dag.find_cycles(&order));
        }
        dag.topo_order = order;
        Ok(dag)
    }

    /// Number of tasks.
    pub fn len(&self) -> usize {
        self.parent_offsets.len() - 1
    }

    /// Whether the graph has no tasks.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of dependency edges.
    pub fn n_edges(&self) -> usize {
        self.parents.len()
    }

    /// The tasks `task_idx` waits for.
    pub fn parents(&self, task_idx: u32) -> &[u32] {
        let idx = task_idx as usize;
        &self.parents[self.parent_offsets[idx] as usize..self.parent_offsets[idx + 1] as usize]
    }

    /// The tasks waiting for `task_idx`.
    pub fn children(&self, task_idx: u32) -> &[u32] {
        let idx = task_idx as usize;
        &self.children[self.child_offsets[idx] as usize..self.child_offsets[idx + 1] as usize]
    }

    /// Tasks with no parents.
    pub fn roots(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.len() as u32).filter(|&idx| self.parents(idx).is_empty())
    }

    /// Every task, parents before children.
    pub fn topo_order(&self) -> &[u32] {
        &self.topo_order
    }

    /// Number of tasks on the longest chain.
    pub fn depth(&self) -> usize {
        let mut depth = vec![0u32; self.len()];
        let mut max_depth = 0;
        for &task in &self.topo_order {
            let here = self.parents(task).iter().map(|&p| depth[p as usize]).max().unwrap_or(0) + 1;
            depth[task as usize] = here;
            max_depth = max_depth.max(here);
        }
        max_depth as usize
    }

    /// The path with the largest sum of `weights` (one per task); among equally heavy paths,
    /// the one with the most tasks.
    pub fn critical_path(&self, weights: &[u64]) -> CriticalPath {
        // (sum of weights, number of tasks) of the best path ending at each task.
        let mut best = vec![(0u64, 0u32); self.len()];
        let mut via = vec![u32::MAX; self.len()];
        for &task in &self.topo_order {
            let mut start = (0u64, 0u32);
            for &parent in self.parents(task) {
                if best[parent as usize] > start {
                    start = best[parent as usize];
                    via[task as usize] = parent;
                }
            }
            best[task as usize] = (start.0 + weights[task as usize], start.1 + 1);
        }
        let Some(last) = (0..self.len()).max_by_key(|&idx| best[idx]) else {
            return CriticalPath {
                path: Vec::new(),
                length: 0,
            };
        };
        let mut path = vec![last as u32];
        while via[*path.last().expect("path starts non-empty") as usize] != u32::MAX {
            path.push(via[*path.last().expect("path starts non-empty") as usize]);
        }
        path.reverse();
        CriticalPath {
            path,
            length: best[last].0,
        }
    }

    fn kahn_order(&self) -> Vec<u32> {
        let n_tasks = self.len();
        let mut waiting: Vec<u32> = (0..n_tasks).map(|idx| self.parents(idx as u32).len() as u32).collect();
        let mut order: Vec<u32> = (0..n_tasks as u32).filter(|&idx| waiting[idx as usize] == 0).collect();
        let mut head = 0;
        while head < order.len() {
            let task = order[head];
            head += 1;
            for &child in self.children(task) {
                waiting[child as usize] -= 1;
                if waiting[child as usize] == 0 {
                    order.push(child);
                }
            }
        }
        order
    }

    /// Finds cycles among the tasks Kahn's algorithm could not order. Every such task has a
    /// parent that is also unordered, so walking parents must come back on itself.
    fn find_cycles(&self, ordered: &[u32]) -> Vec<Vec<u32>> {
        const ORDERED: u32 = u32::MAX;
        const UNSEEN: u32 = u32::MAX - 1;
        const DONE: u32 = u32::MAX - 2;
        let mut mark = vec![UNSEEN; self.len()];
        for &task in ordered {
            mark[task as usize] = ORDERED;
        }
        let mut cycles = Vec::new();
        for start in 0..self.len() as u32 {
            if mark[start as usize] != UNSEEN || cycles.len() >= MAX_CYCLES_REPORTED {
                continue;
            }
            // `mark[task]` holds the task's position on the current walk while walking.
            let mut walk = Vec::new();
            let mut task = start;
            loop {
                match mark[task as usize] {
                    UNSEEN => {
                        mark[task as usize] = walk.len() as u32;
                        walk.push(task);
                        task = *self
                            .parents(task)
                            .iter()
                            .find(|&&p| mark[p as usize] != ORDERED)
                            .expect("an unordered task has an unordered parent");
                    }
                    DONE => break,
                    position => {
                        let mut cycle: Vec<u32> = walk[position as usize..].to_vec();
                        cycle.reverse();
                        let smallest = (0..cycle.len()).min_by_key(|&i| cycle[i]).unwrap_or(0);
                        cycle.rotate_left(smallest);
                        cycles.push(cycle);
                        break;
                    }
                }
            }
            for &walked in &walk {
                mark[walked as usize] = DONE;
            }
        }
        cycles
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dag(parents: &[&[u32]]) -> Result<Dag, Vec<Vec<u32>>> {
        Dag::new(parents.iter().map(|list| list.iter().copied()))
    }

    #[test]
    fn diamond() {
        let dag = dag(&[&[], &[0], &[0], &[1, 2]]).unwrap();
        assert_eq!(dag.children(0), &[1, 2]);
        assert_eq!(dag.parents(3), &[1, 2]);
        assert_eq!(dag.topo_order(), &[0, 1, 2, 3]);
        assert_eq!(dag.depth(), 3);
        assert_eq!(dag.roots().collect::<Vec<_>>(), vec![0]);
        let critical = dag.critical_path(&[1, 5, 2, 1]);
        assert_eq!(
            critical,
            CriticalPath {
                path: vec![0, 1, 3],
                length: 7
            }
        );
    }

    #[test]
    fn cycles_are_reported_in_dependency_order() {
        // 0 <- 2 (2 waits for 0), 1 waits for 2, 2 waits for 1: cycle 1 -> 2 -> 1; 3 waits on it.
        let cycles = dag(&[&[], &[2], &[0, 1], &[2]]).unwrap_err();
        assert_eq!(cycles, vec![vec![1, 2]]);
        let self_loop = dag(&[&[0]]).unwrap_err();
        assert_eq!(self_loop, vec![vec![0]]);
        // 0 waits for 2, 1 waits for 0, 2 waits for 1: order of execution would be 0 -> 1 -> 2 -> 0.
        let triangle = dag(&[&[2], &[0], &[1]]).unwrap_err();
        assert_eq!(triangle, vec![vec![0, 1, 2]]);
    }

    #[test]
    fn two_disjoint_cycles() {
        let cycles = dag(&[&[1], &[0], &[3], &[2]]).unwrap_err();
        assert_eq!(cycles.len(), 2);
    }

    #[test]
    fn empty_graph() {
        let dag = dag(&[]).unwrap();
        assert!(dag.is_empty());
        assert_eq!(dag.depth(), 0);
        assert_eq!(dag.critical_path(&[]).length, 0);
    }
}
