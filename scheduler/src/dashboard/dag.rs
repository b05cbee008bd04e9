//! A workflow's DAG as SVG: each task in the layer after its deepest dependency, ordered
//! within its layer by where its dependencies sit (fewer crossing edges), an edge from each
//! dependency to its task. A node's state is an attribute the stylesheet colours and the page
//! changes live from the event stream. Beyond [`MAX_DRAWN`] tasks, each layer is one box with
//! its tasks counted by state, which stays readable at any size.

use maud::{html, Markup};
use taskfleet_common::dag::Dag;
use taskfleet_common::state::TaskState;

/// Most tasks drawn one by one.
pub(super) const MAX_DRAWN: usize = 2000;

const NODE_W: u32 = 150;
const NODE_H: u32 = 26;
const GAP_X: u32 = 60;
const GAP_Y: u32 = 10;
const MARGIN: u32 = 10;
/// Longest label drawn in full.
const LABEL_CHARS: usize = 19;

/// Where each task is drawn.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Layout {
    /// Layer of each task (0 for those without dependencies).
    pub(super) layer: Vec<u32>,
    /// Row of each task within its layer.
    pub(super) row: Vec<u32>,
    /// Tasks of each layer, top to bottom.
    pub(super) layers: Vec<Vec<u32>>,
}

impl Layout {
    /// Lays out a workflow given each task's dependencies (a validated, acyclic workflow).
    pub(super) fn new(parents: &[Vec<u32>]) -> Layout {
        let n = parents.len();
        let order: Vec<u32> = match Dag::new(parents.iter().map(|deps| deps.iter().copied())) {
            Ok(dag) => dag.topo_order().to_vec(),
            // Not acyclic (never for a stored workflow): draw it in file order.
            Err(_) => (0..n as u32).collect(),
        };
        let mut layer = vec![0u32; n];
        for &task in &order {
            let deepest = (parents[task as usize].iter())
                .filter(|&&parent| (parent as usize) < n)
                .map(|&parent| layer[parent as usize] + 1)
                .max();
            layer[task as usize] = deepest.unwrap_or(0);
        }
        let n_layers = layer.iter().max().map_or(0, |deepest| *deepest as usize + 1);
        let mut layers: Vec<Vec<u32>> = vec![Vec::new(); n_layers];
        for task in 0..n as u32 {
            layers[layer[task as usize] as usize].push(task);
        }
        let mut row = vec![0u32; n];
        for tasks in &mut layers {
            // Under the mean row of its dependencies (one pass from the left).
            let key = |task: u32| -> f64 {
                let deps = &parents[task as usize];
                if deps.is_empty() {
                    return f64::from(task);
                }
                deps.iter().map(|&parent| f64::from(row[parent as usize])).sum::<f64>() / deps.len() as f64
            };
            let mut keyed: Vec<(f64, u32)> = tasks.iter().map(|&task| (key(task), task)).collect();
            keyed.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            *tasks = keyed.into_iter().map(|(_, task)| task).collect();
            for (at, &task) in tasks.iter().enumerate() {
                row[task as usize] = at as u32;
            }
        }
        Layout { layer, row, layers }
    }

    fn x(&self, task: u32) -> u32 {
        MARGIN + self.layer[task as usize] * (NODE_W + GAP_X)
    }

    fn y(&self, task: u32) -> u32 {
        MARGIN + self.row[task as usize] * (NODE_H + GAP_Y)
    }

    fn size(&self) -> (u32, u32) {
        let widest = self.layers.iter().map(Vec::len).max().unwrap_or(0) as u32;
        let n_layers = self.layers.len() as u32;
        let width = 2 * MARGIN + n_layers * NODE_W + n_layers.saturating_sub(1) * GAP_X;
        let height = 2 * MARGIN + widest * (NODE_H + GAP_Y);
        (width.max(NODE_W), height.max(NODE_H))
    }
}

/// What the DAG shows of one task.
pub(super) struct Node<'a> {
    pub(super) id: &'a str,
    pub(super) state: TaskState,
    pub(super) parents: &'a [u32],
}

/// The DAG, task by task; `link` gives each task's page.
pub(super) fn drawn(nodes: &[Node<'_>], layout: &Layout, link: impl Fn(&str) -> String) -> Markup {
    let (width, height) = layout.size();
    html! {
        svg.dag xmlns="http://www.w3.org/2000/svg" width=(width) height=(height) viewBox={"0 0 " (width) " " (height)} role="img" aria-label="The workflow's tasks and their dependencies" {
            g.edges {
                @for (task, node) in nodes.iter().enumerate() {
                    @for &parent in node.parents {
                        @if (parent as usize) < nodes.len() {
                            path d=(edge(layout, parent, task as u32)) {}
                        }
                    }
                }
            }
            @for (task, node) in nodes.iter().enumerate() {
                g.node data-task-idx=(task) data-state=(node.state.as_str()) {
                    a href=(link(node.id)) {
                        rect x=(layout.x(task as u32)) y=(layout.y(task as u32)) width=(NODE_W) height=(NODE_H) rx="4" {}
                        text x=(layout.x(task as u32) + 8) y=(layout.y(task as u32) + 17) { (label(node.id)) }
                    }
                    title { (node.id) " — " span.state-name { (node.state.as_str()) } }
                }
            }
        }
    }
}

/// The DAG as one box per layer, with its tasks counted by state.
pub(super) fn collapsed(states: &[TaskState], layout: &Layout) -> Markup {
    html! {
        div.layers {
            @for (at, tasks) in layout.layers.iter().enumerate() {
                @let counts = count(tasks.iter().map(|&task| states[task as usize]));
                div.layer data-layer=(at) {
                    div.layer-title { "Layer " (at) " · " (tasks.len()) " tasks" }
                    div.bar {
                        @for (state, n) in &counts {
                            span data-state=(state.as_str()) style={"flex-grow:" (n)} title={(n) " " (state.as_str())} {}
                        }
                    }
                    div.layer-counts {
                        @for (state, n) in &counts {
                            span.count data-state=(state.as_str()) { (n) " " (state.as_str()) }
                        }
                    }
                }
            }
        }
    }
}

/// Tasks per state, in life order, only the states present.
pub(super) fn count(states: impl Iterator<Item = TaskState>) -> Vec<(TaskState, usize)> {
    let mut counts = [0usize; TaskState::ALL.len()];
    for state in states {
        if let Some(at) = TaskState::ALL.iter().position(|known| *known == state) {
            counts[at] += 1;
        }
    }
    (TaskState::ALL.iter().zip(counts))
        .filter(|(_, n)| *n > 0)
        .map(|(state, n)| (*state, n))
        .collect()
}

/// A curve from the right edge of `parent` to the left edge of `child`.
fn edge(layout: &Layout, parent: u32, child: u32) -> String {
    let (x1, y1) = (layout.x(parent) + NODE_W, layout.y(parent) + NODE_H / 2);
    let (x2, y2) = (layout.x(child), layout.y(child) + NODE_H / 2);
    let mid = (x1 + x2) / 2;
    format!("M{x1} {y1}C{mid} {y1} {mid} {y2} {x2} {y2}")
}

fn label(id: &str) -> String {
    if id.chars().count() <= LABEL_CHARS {
        return id.to_string();
    }
    let mut short: String = id.chars().take(LABEL_CHARS - 1).collect();
    short.push('…');
    short
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_sit_one_layer_after_their_deepest_dependency() {
        // a → b → d, a → c, c → d, e alone.
        let parents = vec![vec![], vec![0], vec![0], vec![1, 2], vec![]];
        let layout = Layout::new(&parents);
        assert_eq!(layout.layer, [0, 1, 1, 2, 0]);
        assert_eq!(layout.layers, [vec![0, 4], vec![1, 2], vec![3]]);
        assert_eq!(layout.row, [0, 0, 1, 0, 1]);
    }

    #[test]
    fn a_layer_is_ordered_by_where_its_dependencies_sit() {
        // Roots x (0) and y (1); p (2) waits for y, q (3) for x: q is drawn above p.
        let parents = vec![vec![], vec![], vec![1], vec![0]];
        let layout = Layout::new(&parents);
        assert_eq!(layout.layers[1], [3, 2]);
    }

    #[test]
    fn every_task_and_edge_is_drawn_with_its_state() {
        let parents = vec![vec![], vec![0]];
        let nodes = [
            Node {
                id: "extract",
                state: TaskState::Succeeded,
                parents: &parents[0],
            },
            Node {
                id: "a-very-long-task-name-indeed",
                state: TaskState::Running,
                parents: &parents[1],
            },
        ];
        let svg = drawn(&nodes, &Layout::new(&parents), |id| format!("/t/{id}")).into_string();
        assert!(svg.contains(r#"data-task-idx="0" data-state="succeeded""#), "{svg}");
        assert!(svg.contains(r#"data-task-idx="1" data-state="running""#), "{svg}");
        assert!(svg.contains(r#"href="/t/extract""#), "{svg}");
        assert!(svg.contains("a-very-long-task-n…"), "{svg}");
        assert_eq!(svg.matches("<path ").count(), 1, "{svg}");
    }

    #[test]
    fn a_collapsed_dag_counts_each_layer_by_state() {
        let parents = vec![vec![], vec![], vec![0, 1]];
        let states = [TaskState::Succeeded, TaskState::Failed, TaskState::UpstreamFailed];
        let html = collapsed(&states, &Layout::new(&parents)).into_string();
        assert!(html.contains("Layer 0 · 2 tasks"), "{html}");
        assert!(html.contains("1 succeeded") && html.contains("1 failed"), "{html}");
        assert!(
            html.contains("Layer 1 · 1 tasks") && html.contains("1 upstream_failed"),
            "{html}"
        );
    }
}
