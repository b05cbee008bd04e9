//! Capacity reserved for a priority class or a tenant, lent to others while it is idle.
//!
//! `high:gpu=25%` keeps a quarter of the fleet's GPUs for tasks of class `high`;
//! `tenant=acme:memory=64Gi@batch` keeps 64 GiB of pool `batch`'s memory for workflows of
//! tenant `acme`. Others may use reserved capacity while the owner has no task waiting for room
//! (it is *lent*, and such attempts are marked so: they are the first candidates to make way);
//! once an owner's task waits, others get only what the reservation leaves, so that capacity
//! freed by the borrowers goes to the owner first.

use std::fmt;
use std::str::FromStr;

use taskfleet_common::units::parse_size;
use taskfleet_common::workflow::Resources;
use taskfleet_common::PriorityClass;

use super::{Ask, EPSILON};
use crate::placement::WorkerModel;

/// Capacity kept for an owner. See the module documentation.
#[derive(Clone, Debug, PartialEq)]
pub struct Reservation {
    pub owner: Owner,
    /// `cpu`, `memory`, `gpu` or a custom resource.
    pub resource: String,
    pub amount: Amount,
    /// The pool whose workers' capacity is reserved (and whose tasks it concerns); `None`:
    /// every pool.
    pub pool: Option<String>,
}

/// Who a reservation is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Owner {
    Class(PriorityClass),
    Tenant(String),
}

/// How much is reserved.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Amount {
    /// A share (0 to 1) of what the pool's workers offer.
    Share(f64),
    /// So many units (CPUs, bytes, GPUs), at most all there is.
    Units(f64),
}

impl FromStr for Reservation {
    type Err = String;

    /// `OWNER:RESOURCE=AMOUNT[@POOL]`, where OWNER is a priority class or `tenant=NAME`, and
    /// AMOUNT a number, a size (`64Gi`) or a share (`25%`).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let usage = || {
            format!("`{text}`: a reservation reads OWNER:RESOURCE=AMOUNT[@POOL], e.g. high:gpu=25% or tenant=acme:memory=64Gi@batch")
        };
        let (owner, rest) = text.split_once(':').ok_or_else(usage)?;
        let owner = match owner.strip_prefix("tenant=") {
            Some(tenant) if !tenant.is_empty() => Owner::Tenant(tenant.to_string()),
            Some(_) => return Err(usage()),
            None => Owner::Class(PriorityClass::parse(owner).ok_or_else(|| {
                format!("`{text}`: `{owner}` is neither a priority class (high, normal, low) nor tenant=NAME")
            })?),
        };
        let (rest, pool) = match rest.split_once('@') {
            Some((rest, pool)) if !pool.is_empty() => (rest, Some(pool.to_string())),
            Some(_) => return Err(usage()),
            None => (rest, None),
        };
        let (resource, amount) = rest.split_once('=').ok_or_else(usage)?;
        if resource.is_empty() || resource == "slots" {
            return Err(format!(
                "`{text}`: name the resource reserved (cpu, memory, gpu or a custom one); slots are not reserved, give the owner a pool of its own instead"
            ));
        }
        let amount = if let Some(share) = amount.strip_suffix('%') {
            match share.parse::<f64>() {
                Ok(share) if share > 0.0 && share <= 100.0 => Amount::Share(share / 100.0),
                _ => return Err(format!("`{text}`: the share must be a number above 0 and at most 100%")),
            }
        } else if resource == "memory" {
            Amount::Units(parse_size(amount).map_err(|error| format!("`{text}`: {error}"))? as f64)
        } else {
            match amount.parse::<f64>() {
                Ok(units) if units > 0.0 && units.is_finite() => Amount::Units(units),
                _ => {
                    return Err(format!(
                        "`{text}`: the amount must be a positive number or a share like 25%"
                    ))
                }
            }
        };
        Ok(Reservation {
            owner,
            resource: resource.to_string(),
            amount,
            pool,
        })
    }
}

impl fmt::Display for Reservation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.owner {
            Owner::Class(class) => write!(f, "{}", class.as_str())?,
            Owner::Tenant(tenant) => write!(f, "tenant={tenant}")?,
        }
        write!(f, ":{}=", self.resource)?;
        match self.amount {
            Amount::Share(share) => write!(f, "{}%", share * 100.0)?,
            Amount::Units(units) => write!(f, "{units}")?,
        }
        if let Some(pool) = &self.pool {
            write!(f, "@{pool}")?;
        }
        Ok(())
    }
}

/// Written and read as on the command line (`"high:gpu=25%"`).
impl serde::Serialize for Reservation {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Reservation {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// What a reservation says of a task that asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Its own, or unreserved capacity.
    Free,
    /// Reserved capacity, lent while the owner has nothing waiting.
    Lent,
    /// Reserved capacity the owner is waiting for.
    Refused,
}

/// A reservation and what is in use under it.
#[derive(Clone, Debug)]
pub(super) struct Reserved {
    spec: Reservation,
    /// What the workers in its scope offer of the resource.
    total: f64,
    owner_used: f64,
    other_used: f64,
    /// The owner's tasks waiting for room.
    pub(super) waiting: usize,
}

impl Reserved {
    pub(super) fn new(spec: Reservation) -> Reserved {
        Reserved {
            spec,
            total: 0.0,
            owner_used: 0.0,
            other_used: 0.0,
            waiting: 0,
        }
    }

    /// Counts what the alive `workers` in its scope offer.
    pub(super) fn set_total<'a>(&mut self, workers: impl Iterator<Item = &'a WorkerModel>) {
        self.total = workers
            .filter(|worker| {
                self.spec
                    .pool
                    .as_ref()
                    .is_none_or(|pool| worker.pools.iter().any(|p| &**p == pool))
            })
            .filter_map(|worker| worker.capacity.as_ref())
            .map(|capacity| match self.spec.resource.as_str() {
                "cpu" => capacity.cpu,
                "memory" => capacity.memory_bytes as f64,
                "gpu" => f64::from(capacity.gpu),
                name => capacity.custom.get(name).copied().unwrap_or(0.0),
            })
            .sum();
    }

    /// How much of the resource `resources` take.
    fn amount_of(&self, resources: &Resources) -> f64 {
        match self.spec.resource.as_str() {
            "cpu" => resources.cpu,
            "memory" => resources.memory as f64,
            "gpu" => f64::from(resources.gpu),
            name => resources.custom.get(name).copied().unwrap_or(0.0),
        }
    }

    /// Whether the task is of the reservation's pool and takes some of its resource.
    pub(super) fn applies(&self, ask: &Ask<'_>) -> bool {
        self.spec.pool.as_deref().is_none_or(|pool| pool == ask.pool) && self.amount_of(ask.resources) > 0.0
    }

    pub(super) fn owns(&self, ask: &Ask<'_>) -> bool {
        match &self.spec.owner {
            Owner::Class(class) => ask.class == *class,
            Owner::Tenant(tenant) => ask.tenant == Some(tenant.as_str()),
        }
    }

    fn reserved(&self) -> f64 {
        match self.spec.amount {
            Amount::Share(share) => share * self.total,
            Amount::Units(units) => units.min(self.total),
        }
    }

    pub(super) fn allows(&self, ask: &Ask<'_>) -> Verdict {
        if !self.applies(ask) || self.owns(ask) {
            return Verdict::Free;
        }
        let unreserved = self.total - self.reserved().max(self.owner_used);
        if self.other_used + self.amount_of(ask.resources) <= unreserved + EPSILON {
            Verdict::Free
        } else if self.waiting == 0 {
            Verdict::Lent
        } else {
            Verdict::Refused
        }
    }

    /// Counts what a placed task takes; returns whether it counted as the owner's, or `None`
    /// when the reservation does not concern it.
    pub(super) fn take(&mut self, ask: &Ask<'_>) -> Option<bool> {
        if !self.applies(ask) {
            return None;
        }
        let owner = self.owns(ask);
        let amount = self.amount_of(ask.resources);
        if owner {
            self.owner_used += amount;
        } else {
            self.other_used += amount;
        }
        Some(owner)
    }

    pub(super) fn give_back(&mut self, resources: &Resources, owner: bool) {
        let amount = self.amount_of(resources);
        let used = if owner {
            &mut self.owner_used
        } else {
            &mut self.other_used
        };
        *used = (*used - amount).max(0.0);
    }
}
