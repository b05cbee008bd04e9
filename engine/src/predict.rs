//! Runtime prediction learned from finished attempts.
//!
//! Tasks are grouped by a signature (pool, and what they run: the program and script, or the
//! handler). Per signature the predictor keeps the running mean and variance of the logarithm
//! of observed runtimes (Welford's method), that is a log-normal model: it gives a mean,
//! quantiles, a confidence that grows with the number of observations, and samples for Monte
//! Carlo. Tasks that declare numeric features (`features`, or numbers in `args`) also feed a
//! regression of the log runtime on those features ([`features`]), so that a task on ten times
//! the input is predicted to take longer; it is used once it has more observations than
//! coefficients. With few observations the prediction leans on the task's declared
//! `estimate`; with none it falls back to the estimate, then to a configurable prior. Pure and
//! deterministic: randomness is passed in.

pub mod features;

use std::collections::HashMap;
use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};
use taskfleet_common::{Action, TaskSpec};

pub use features::FeatureModel;
use features::{model_key, regressors};

/// z-score of the 90th percentile of a normal distribution.
const Z_P90: f64 = 1.281_551_565_5;
/// Spread assumed before two observations exist (log scale).
const DEFAULT_SIGMA: f64 = 0.5;
/// Smallest spread the model admits (log scale), so that a few equal runs do not make it sure
/// of an exact runtime.
const MIN_SIGMA: f64 = 0.05;
/// Observations at which the learned model and the declared estimate weigh the same.
const HALF_CONFIDENCE_AT: f64 = 3.0;

/// The learned log-mean of `n` runs of spread `sigma`, with the declared estimate as the
/// prior: each weighs by its precision (the declared one as off by [`DEFAULT_SIGMA`], the
/// learned one as its standard error `sigma / √n`), so a few runs move the belief a little
/// and many consistent runs replace the declaration.
fn blend(learned: f64, n: f64, sigma: f64, declared: f64) -> f64 {
    let learned_precision = n / (sigma * sigma);
    let declared_precision = 1.0 / (DEFAULT_SIGMA * DEFAULT_SIGMA);
    (learned * learned_precision + declared * declared_precision) / (learned_precision + declared_precision)
}

/// The group a task's runtime is learned for: its pool and its `kind` when it has one, else
/// its pool and what it runs.
pub fn signature(task: &TaskSpec) -> String {
    if let Some(kind) = &task.kind {
        return format!("{}|kind|{kind}", task.pool);
    }
    match &task.action {
        Action::Run { argv, .. } => {
            let program = argv.first().map(|arg| basename(arg)).unwrap_or_default();
            let script = argv
                .get(1)
                .filter(|arg| !arg.starts_with('-'))
                .map(|arg| basename(arg))
                .unwrap_or_default();
            format!("{}|run|{program}|{script}", task.pool)
        }
        Action::Handler { name, .. } => format!("{}|handler|{name}", task.pool),
    }
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Where a prediction comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// Learned from observations (blended with the declared estimate while they are few).
    Learned,
    /// The task's declared `estimate`.
    Declared,
    /// The configured prior: nothing else is known.
    Prior,
}

impl Source {
    /// The source's name in reports: `learned`, `declared` or `prior`.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Learned => "learned",
            Source::Declared => "declared",
            Source::Prior => "prior",
        }
    }
}

/// A predicted runtime.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Prediction {
    pub mean: Duration,
    pub p50: Duration,
    pub p90: Duration,
    /// 0 (a guess) to 1 (many consistent observations).
    pub confidence: f64,
    pub source: Source,
    /// Log-normal parameters, for sampling.
    mu: f64,
    sigma: f64,
}

impl Prediction {
    fn from_log(mu: f64, sigma: f64, confidence: f64, source: Source) -> Prediction {
        let seconds = |log: f64| Duration::from_secs_f64(log.exp().min(1e9));
        Prediction {
            mean: seconds(mu + sigma * sigma / 2.0),
            p50: seconds(mu),
            p90: seconds(mu + Z_P90 * sigma),
            confidence,
            source,
            mu,
            sigma,
        }
    }

    /// The 10th percentile: with [`Prediction::p90`], the range the runtime is predicted to
    /// fall in four times out of five.
    pub fn p10(&self) -> Duration {
        Duration::from_secs_f64((self.mu - Z_P90 * self.sigma).exp().min(1e9))
    }

    /// A runtime drawn from the predicted distribution.
    pub fn sample(&self, rng: &mut impl Rng) -> Duration {
        // Box-Muller: one standard normal draw from two uniform ones.
        let u1: f64 = rng.gen_range(f64::EPSILON..1.0);
        let u2: f64 = rng.gen();
        let normal = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        Duration::from_secs_f64((self.mu + self.sigma * normal).exp().min(1e9))
    }
}

/// Running statistics of log runtimes for one signature.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LogStats {
    pub n: u64,
    pub mean: f64,
    /// Sum of squared deviations from the mean.
    pub m2: f64,
}

impl LogStats {
    fn add(&mut self, value: f64) {
        self.n += 1;
        let delta = value - self.mean;
        self.mean += delta / self.n as f64;
        self.m2 += delta * (value - self.mean);
    }

    fn sigma(&self) -> f64 {
        if self.n < 2 {
            DEFAULT_SIGMA
        } else {
            (self.m2 / (self.n - 1) as f64).sqrt().max(MIN_SIGMA)
        }
    }
}

/// Learns runtimes per signature and predicts them.
#[derive(Clone, Debug, PartialEq)]
pub struct Predictor {
    models: HashMap<String, LogStats>,
    feature_models: HashMap<String, FeatureModel>,
    prior: Duration,
}

/// What one finished attempt taught the predictor, to persist.
#[derive(Clone, Debug, PartialEq)]
pub struct Learned {
    pub signature: String,
    pub stats: LogStats,
    /// The task's feature regression, if it declares features.
    pub features: Option<(String, FeatureModel)>,
}

impl Predictor {
    /// A predictor that knows nothing yet; tasks without an estimate are predicted at `prior`.
    pub fn new(prior: Duration) -> Predictor {
        Predictor {
            models: HashMap::new(),
            feature_models: HashMap::new(),
            prior,
        }
    }

    /// Learns from one finished attempt of `task`: its signature's statistics and, if it
    /// declares features, its feature regression.
    pub fn observe_task(&mut self, task: &TaskSpec, runtime: Duration) -> Learned {
        let signature = signature(task);
        let stats = self.observe(&signature, runtime);
        let features = regressors(task).map(|(names, x)| {
            let key = model_key(&signature, &names);
            let model = self
                .feature_models
                .entry(key.clone())
                .or_insert_with(|| FeatureModel::new(names));
            model.add(&x, log_seconds(runtime));
            (key, model.clone())
        });
        Learned {
            signature,
            stats,
            features,
        }
    }

    /// Learns from one finished attempt; returns the signature's statistics now.
    pub fn observe(&mut self, signature: &str, runtime: Duration) -> LogStats {
        let stats = self.models.entry(signature.to_string()).or_default();
        stats.add(log_seconds(runtime));
        *stats
    }

    /// The predicted runtime of `task`.
    pub fn predict(&self, task: &TaskSpec) -> Prediction {
        let declared = task.estimate.map(log_seconds);
        let signature = signature(task);
        let fit = regressors(task).and_then(|(names, x)| {
            let model = self.feature_models.get(&model_key(&signature, &names))?;
            model.fit(&x)
        });
        if let Some(fit) = fit {
            // Confidence grows with the observations per coefficient.
            let per_coefficient = fit.n as f64 / fit.dimension as f64;
            let confidence = per_coefficient / (per_coefficient + HALF_CONFIDENCE_AT);
            let sigma = fit.sigma.max(MIN_SIGMA);
            let mu = match declared {
                Some(declared) => blend(fit.mu, per_coefficient, sigma, declared),
                None => fit.mu,
            };
            return Prediction::from_log(mu, sigma, confidence, Source::Learned);
        }
        match (self.models.get(&signature), declared) {
            (Some(stats), declared) if stats.n > 0 => {
                let confidence = stats.n as f64 / (stats.n as f64 + HALF_CONFIDENCE_AT);
                let mu = match declared {
                    Some(declared) => blend(stats.mean, stats.n as f64, stats.sigma(), declared),
                    None => stats.mean,
                };
                Prediction::from_log(mu, stats.sigma(), confidence, Source::Learned)
            }
            (_, Some(declared)) => Prediction::from_log(declared, DEFAULT_SIGMA, 0.0, Source::Declared),
            (_, None) => Prediction::from_log(
                self.prior.as_secs_f64().max(1e-3).ln(),
                DEFAULT_SIGMA,
                0.0,
                Source::Prior,
            ),
        }
    }

    /// The learned statistics, for persisting.
    pub fn snapshot(&self) -> Vec<(String, LogStats)> {
        let mut models: Vec<(String, LogStats)> = self
            .models
            .iter()
            .map(|(signature, stats)| (signature.clone(), *stats))
            .collect();
        models.sort_by(|a, b| a.0.cmp(&b.0));
        models
    }

    /// A predictor resumed from persisted statistics.
    pub fn restore(prior: Duration, models: impl IntoIterator<Item = (String, LogStats)>) -> Predictor {
        Predictor {
            models: models.into_iter().collect(),
            feature_models: HashMap::new(),
            prior,
        }
    }

    /// Adds persisted feature regressions (those whose shape is inconsistent are dropped).
    pub fn with_feature_models(mut self, models: impl IntoIterator<Item = (String, FeatureModel)>) -> Predictor {
        self.feature_models
            .extend(models.into_iter().filter(|(_, model)| model.is_consistent()));
        self
    }

    /// The learned feature regressions, for persisting.
    pub fn feature_snapshot(&self) -> Vec<(String, FeatureModel)> {
        let mut models: Vec<(String, FeatureModel)> = self
            .feature_models
            .iter()
            .map(|(key, model)| (key.clone(), model.clone()))
            .collect();
        models.sort_by(|a, b| a.0.cmp(&b.0));
        models
    }
}

/// The logarithm of a runtime in seconds (at least a millisecond).
fn log_seconds(runtime: Duration) -> f64 {
    runtime.as_secs_f64().max(1e-3).ln()
}

#[cfg(test)]
mod tests;
