//! Amounts of resources: what a task asks for, what a worker offers and what it has in use.
//! Besides CPUs, memory and GPUs, a set holds named custom resources (`licenses: 2`).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::units::format_bytes;

/// An amount of each resource.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ResourceSet {
    /// CPU cores (fractions allowed).
    #[serde(default)]
    pub cpu: f64,
    /// Memory in bytes.
    #[serde(default)]
    pub memory_bytes: u64,
    /// Whole GPUs.
    #[serde(default)]
    pub gpu: u32,
    /// Named resources a pool defines (licenses, a scratch disk, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub custom: BTreeMap<String, f64>,
}

/// A resource a request needs more of than a capacity offers.
#[derive(Clone, Debug, PartialEq)]
pub struct Shortfall {
    /// `cpu`, `memory`, `gpu` or a custom resource's name.
    pub resource: String,
    pub requested: f64,
    pub offered: f64,
}

impl Shortfall {
    fn amount(&self, value: f64) -> String {
        match self.resource.as_str() {
            "memory" => format_bytes(value as u64),
            "cpu" => format!("{value} CPUs"),
            "gpu" => format!("{value} GPUs"),
            _ => format!("{value}"),
        }
    }
}

impl fmt::Display for Shortfall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let short = self.requested - self.offered;
        write!(
            f,
            "{}: asks for {}, {} more than the {} offered",
            self.resource,
            self.amount(self.requested),
            self.amount(short),
            self.amount(self.offered)
        )
    }
}

impl ResourceSet {
    /// The first resource of which `self` (a request) needs more than `capacity` offers.
    pub fn shortfall(&self, capacity: &ResourceSet) -> Option<Shortfall> {
        let short = |resource: &str, requested: f64, offered: f64| {
            (requested > offered + 1e-9).then(|| Shortfall {
                resource: resource.to_string(),
                requested,
                offered,
            })
        };
        short("cpu", self.cpu, capacity.cpu)
            .or_else(|| short("memory", self.memory_bytes as f64, capacity.memory_bytes as f64))
            .or_else(|| short("gpu", f64::from(self.gpu), f64::from(capacity.gpu)))
            .or_else(|| {
                self.custom.iter().find_map(|(name, &requested)| {
                    short(name, requested, capacity.custom.get(name).copied().unwrap_or(0.0))
                })
            })
    }

    /// Adds `other` to this amount.
    pub fn add(&mut self, other: &ResourceSet) {
        self.cpu += other.cpu;
        self.memory_bytes = self.memory_bytes.saturating_add(other.memory_bytes);
        self.gpu = self.gpu.saturating_add(other.gpu);
        for (name, amount) in &other.custom {
            *self.custom.entry(name.clone()).or_default() += amount;
        }
    }

    /// Takes `other` (added before) off this amount, never below zero.
    pub fn sub(&mut self, other: &ResourceSet) {
        self.cpu = (self.cpu - other.cpu).max(0.0);
        self.memory_bytes = self.memory_bytes.saturating_sub(other.memory_bytes);
        self.gpu = self.gpu.saturating_sub(other.gpu);
        for (name, amount) in &other.custom {
            if let Some(left) = self.custom.get_mut(name) {
                *left = (*left - amount).max(0.0);
                if *left <= 1e-9 {
                    self.custom.remove(name);
                }
            }
        }
    }

    /// The amounts for people: `4 CPUs, 16 GiB, 1 GPU, licenses 2` (no memory when none).
    pub fn describe(&self) -> String {
        let mut parts = vec![format!("{} CPUs", self.cpu)];
        if self.memory_bytes > 0 {
            parts.push(format_bytes(self.memory_bytes));
        }
        if self.gpu > 0 {
            parts.push(format!("{} GPUs", self.gpu));
        }
        parts.extend(self.custom.iter().map(|(name, amount)| format!("{name} {amount}")));
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(cpu: f64, memory_bytes: u64, gpu: u32, custom: &[(&str, f64)]) -> ResourceSet {
        ResourceSet {
            cpu,
            memory_bytes,
            gpu,
            custom: custom
                .iter()
                .map(|(name, amount)| (name.to_string(), *amount))
                .collect(),
        }
    }

    #[test]
    fn a_request_fits_or_names_what_is_short_and_by_how_much() {
        let capacity = set(8.0, 16 << 30, 1, &[("licenses", 2.0)]);
        assert_eq!(set(8.0, 16 << 30, 1, &[("licenses", 2.0)]).shortfall(&capacity), None);
        let short = set(2.0, 32 << 30, 0, &[]).shortfall(&capacity).unwrap();
        assert_eq!(short.resource, "memory");
        assert_eq!(
            short.to_string(),
            "memory: asks for 32 GiB, 16 GiB more than the 16 GiB offered"
        );
        let short = set(1.0, 0, 0, &[("scratch", 1.0)]).shortfall(&capacity).unwrap();
        assert_eq!(short.to_string(), "scratch: asks for 1, 1 more than the 0 offered");
        assert_eq!(set(0.0, 0, 2, &[]).shortfall(&capacity).unwrap().resource, "gpu");
    }

    #[test]
    fn amounts_add_up_and_come_back_to_zero() {
        let mut in_use = ResourceSet::default();
        let request = set(1.5, 1 << 20, 1, &[("licenses", 1.0)]);
        in_use.add(&request);
        in_use.add(&request);
        assert_eq!(in_use, set(3.0, 2 << 20, 2, &[("licenses", 2.0)]));
        in_use.sub(&request);
        in_use.sub(&request);
        in_use.sub(&request);
        assert_eq!(in_use, ResourceSet::default());
    }
}
