//! Whether a request fits ([`fits`], [`could_take`]), the rules that choose among the workers
//! where it does ([`Packing`]), and what they see of each worker ([`Room`]).

use std::fmt;
use std::str::FromStr;

use taskfleet_common::resources::ResourceSet;
use taskfleet_common::workflow::Resources;
use taskfleet_common::TaskSpec;

use super::EPSILON;
use crate::placement::WorkerModel;

/// Whether `request` fits in `capacity` beside `used`, in every resource it names.
pub fn fits(request: &Resources, capacity: &ResourceSet, used: &ResourceSet) -> bool {
    used.cpu + request.cpu <= capacity.cpu + EPSILON
        && used.memory_bytes.saturating_add(request.memory) <= capacity.memory_bytes
        && used.gpu.saturating_add(request.gpu) <= capacity.gpu
        && request.custom.iter().all(|(name, &amount)| {
            let used = used.custom.get(name).copied().unwrap_or(0.0);
            used + amount <= capacity.custom.get(name).copied().unwrap_or(0.0) + EPSILON
        })
}

/// Whether `worker` could ever run `task`: it carries the labels the task selects, and, empty,
/// would have room for its request.
pub fn could_take(worker: &WorkerModel, task: &TaskSpec) -> bool {
    task.selector
        .iter()
        .all(|(label, value)| worker.labels.get(label) == Some(value))
        && task.resources.slots <= worker.slots
        && worker
            .capacity
            .as_ref()
            .is_none_or(|capacity| fits(&task.resources, capacity, &ResourceSet::default()))
}

/// What placing a request on one worker would leave, for a [`Packing`] rule to score.
#[derive(Clone, Copy, Debug)]
pub struct Room<'a> {
    pub request: &'a Resources,
    /// The worker's slots, and how many are in use.
    pub slots: u32,
    pub used_slots: u32,
    /// What it offers (`None`: only its slots count) and what is in use.
    pub capacity: Option<&'a ResourceSet>,
    pub used: &'a ResourceSet,
}

impl Room<'_> {
    /// The share of the worker left free after the request, averaged over the resources the
    /// request takes (slots always among them): 0 for a perfect fit, near 1 on an empty,
    /// large worker.
    pub fn leftover_share(&self) -> f64 {
        let mut sum = 0.0;
        let mut n = 0.0;
        let mut add = |offered: f64, used: f64, asked: f64| {
            // A resource offered without limit (a simulated worker's undeclared one) says nothing.
            if asked > 0.0 && offered > 0.0 && offered.is_finite() {
                sum += ((offered - used - asked) / offered).clamp(0.0, 1.0);
                n += 1.0;
            }
        };
        add(
            f64::from(self.slots),
            f64::from(self.used_slots),
            f64::from(self.request.slots),
        );
        if let Some(capacity) = self.capacity {
            add(capacity.cpu, self.used.cpu, self.request.cpu);
            add(
                capacity.memory_bytes as f64,
                self.used.memory_bytes as f64,
                self.request.memory as f64,
            );
            add(
                f64::from(capacity.gpu),
                f64::from(self.used.gpu),
                f64::from(self.request.gpu),
            );
            for (name, &asked) in &self.request.custom {
                let offered = capacity.custom.get(name).copied().unwrap_or(0.0);
                add(offered, self.used.custom.get(name).copied().unwrap_or(0.0), asked);
            }
        }
        if n == 0.0 {
            0.0
        } else {
            sum / n
        }
    }
}

/// Chooses among the workers where a request fits: the lowest score wins, ties go to the
/// worker first by name.
pub trait Packing: Send + Sync {
    /// The rule's name as given on the command line.
    fn name(&self) -> &'static str;
    fn score(&self, room: &Room<'_>) -> f64;
}

/// The first worker (by name) where the request fits.
pub struct FirstFit;

/// The worker the request leaves the least room on, keeping large holes for large requests.
pub struct BestFit;

/// The worker the request leaves the most room on, spreading load (and the damage of losing
/// one worker).
pub struct Spread;

impl Packing for FirstFit {
    fn name(&self) -> &'static str {
        "first-fit"
    }

    fn score(&self, _room: &Room<'_>) -> f64 {
        0.0
    }
}

impl Packing for BestFit {
    fn name(&self) -> &'static str {
        "best-fit"
    }

    fn score(&self, room: &Room<'_>) -> f64 {
        room.leftover_share()
    }
}

impl Packing for Spread {
    fn name(&self) -> &'static str {
        "spread"
    }

    fn score(&self, room: &Room<'_>) -> f64 {
        -room.leftover_share()
    }
}

/// The packing rules a scheduler can be started with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PackingKind {
    FirstFit,
    #[default]
    BestFit,
    Spread,
}

impl PackingKind {
    pub const ALL: [PackingKind; 3] = [PackingKind::FirstFit, PackingKind::BestFit, PackingKind::Spread];

    pub fn build(self) -> Box<dyn Packing> {
        match self {
            PackingKind::FirstFit => Box::new(FirstFit),
            PackingKind::BestFit => Box::new(BestFit),
            PackingKind::Spread => Box::new(Spread),
        }
    }

    pub fn as_str(self) -> &'static str {
        self.build().name()
    }
}

/// Written and read by name, as on the command line (`"best-fit"`).
impl serde::Serialize for PackingKind {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for PackingKind {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for PackingKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PackingKind {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        PackingKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == text)
            .ok_or_else(|| format!("unknown packing `{text}` (known: first-fit, best-fit, spread)"))
    }
}
