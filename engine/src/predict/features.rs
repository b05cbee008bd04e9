//! The online model over a task's declared numeric features: a least-squares regression of the
//! log runtime on `ln(1 + feature)` for each feature (a power law in each, e.g. runtime
//! growing like `input_mb^0.8`), learned per signature and feature set.
//!
//! The model keeps only sufficient statistics (`XᵀX`, `Xᵀy`, `yᵀy` and the count), so an
//! observation costs O(d²) for `d` coefficients, the state is a few dozen numbers that persist
//! as they are, and the fit is solved when a prediction is asked for (a `d × d` system, with
//! `d` at most [`MAX_FEATURES`] + 1).

use serde::{Deserialize, Serialize};
use taskfleet_common::TaskSpec;

/// Features used per task (the first ones by name); more are ignored.
pub const MAX_FEATURES: usize = 4;
/// Ridge penalty on the feature coefficients, so that a feature that never varies (or a few
/// observations) still gives a solvable system.
const RIDGE: f64 = 1e-6;

/// Sufficient statistics of one regression.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeatureModel {
    /// The features, in coefficient order (after the intercept).
    pub names: Vec<String>,
    pub n: u64,
    /// `XᵀX`, row-major, `d × d`.
    pub xtx: Vec<f64>,
    /// `Xᵀy`.
    pub xty: Vec<f64>,
    /// `yᵀy`.
    pub yy: f64,
}

/// A fitted regression: the predicted log runtime and the residual spread.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Fit {
    pub mu: f64,
    pub sigma: f64,
    pub n: u64,
    /// Coefficients, intercept included.
    pub dimension: usize,
}

/// The feature names and regressors of a task, if it declares features.
pub fn regressors(task: &TaskSpec) -> Option<(Vec<String>, Vec<f64>)> {
    if task.features.is_empty() {
        return None;
    }
    let mut names = Vec::new();
    let mut x = vec![1.0];
    for (name, &value) in task.features.iter().take(MAX_FEATURES) {
        names.push(name.clone());
        x.push(value.max(0.0).ln_1p());
    }
    Some((names, x))
}

/// The key a task's feature model is kept under: its signature and its feature names.
pub fn model_key(signature: &str, names: &[String]) -> String {
    format!("{signature}|features:{}", names.join(","))
}

impl FeatureModel {
    pub fn new(names: Vec<String>) -> FeatureModel {
        let d = names.len() + 1;
        FeatureModel {
            names,
            n: 0,
            xtx: vec![0.0; d * d],
            xty: vec![0.0; d],
            yy: 0.0,
        }
    }

    fn dimension(&self) -> usize {
        self.names.len() + 1
    }

    /// Whether the statistics have the shape their names call for (persisted data is checked).
    pub fn is_consistent(&self) -> bool {
        let d = self.dimension();
        self.xtx.len() == d * d && self.xty.len() == d
    }

    /// Adds one observation: regressors `x` (intercept first) and log runtime `y`.
    pub fn add(&mut self, x: &[f64], y: f64) {
        let d = self.dimension();
        if x.len() != d || !self.is_consistent() {
            return;
        }
        self.n += 1;
        for row in 0..d {
            for col in 0..d {
                self.xtx[row * d + col] += x[row] * x[col];
            }
            self.xty[row] += x[row] * y;
        }
        self.yy += y * y;
    }

    /// The fitted log runtime at `x`, once there are more observations than coefficients.
    pub fn fit(&self, x: &[f64]) -> Option<Fit> {
        let d = self.dimension();
        if x.len() != d || !self.is_consistent() || self.n <= d as u64 {
            return None;
        }
        let mut system = self.xtx.clone();
        for k in 1..d {
            system[k * d + k] += RIDGE * (1.0 + system[k * d + k]);
        }
        let beta = solve(system, self.xty.clone(), d)?;
        let mu: f64 = beta.iter().zip(x).map(|(b, x)| b * x).sum();
        // Residual sum of squares from the statistics: yᵀy − 2βᵀXᵀy + βᵀXᵀXβ.
        let mut quadratic = 0.0;
        for row in 0..d {
            for col in 0..d {
                quadratic += beta[row] * self.xtx[row * d + col] * beta[col];
            }
        }
        let cross: f64 = beta.iter().zip(&self.xty).map(|(b, v)| b * v).sum();
        let rss = (self.yy - 2.0 * cross + quadratic).max(0.0);
        let sigma = (rss / (self.n - d as u64) as f64).sqrt();
        (mu.is_finite() && sigma.is_finite()).then_some(Fit {
            mu,
            sigma,
            n: self.n,
            dimension: d,
        })
    }
}

/// Solves `a · x = b` for a small dense system (Gaussian elimination with partial pivoting);
/// `None` if it is singular.
fn solve(mut a: Vec<f64>, mut b: Vec<f64>, d: usize) -> Option<Vec<f64>> {
    for col in 0..d {
        let pivot = (col..d).max_by(|&i, &j| a[i * d + col].abs().total_cmp(&a[j * d + col].abs()))?;
        if a[pivot * d + col].abs() < 1e-12 {
            return None;
        }
        if pivot != col {
            for k in 0..d {
                a.swap(pivot * d + k, col * d + k);
            }
            b.swap(pivot, col);
        }
        for row in col + 1..d {
            let factor = a[row * d + col] / a[col * d + col];
            for k in col..d {
                a[row * d + k] -= factor * a[col * d + k];
            }
            b[row] -= factor * b[col];
        }
    }
    let mut x = vec![0.0; d];
    for row in (0..d).rev() {
        let mut sum = b[row];
        for k in row + 1..d {
            sum -= a[row * d + k] * x[k];
        }
        x[row] = sum / a[row * d + row];
    }
    Some(x)
}
