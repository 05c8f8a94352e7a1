//! Hyperparameter tuning studies as a job's plan carries them, and the suggesters that pick each
//! trial's values: grid search, random search, and the default, a Tree-structured Parzen
//! Estimator (TPE; Bergstra, Bardenet, Bengio, Kégl, "Algorithms for Hyper-Parameter
//! Optimization", NeurIPS 2011) that models good and bad completed trials separately and picks the
//! candidate with the best density ratio. Also the median stopping rule for early stopping
//! (Golovin et al., "Google Vizier", KDD 2017). Pure: no I/O, seeded randomness. Control checks a
//! `HyperparameterSpec` into a [`Study`] (`control::tuning`); the executor runs it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Which way the objective should go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Goal {
    Maximize,
    Minimize,
}

/// How values of a numeric range are spread.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Scale {
    Linear,
    Log,
    ReverseLog,
}

/// The values a parameter may take.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Domain {
    Double { min: f64, max: f64, scale: Scale },
    Integer { min: i64, max: i64, scale: Scale },
    Categorical(Vec<String>),
    Discrete(Vec<f64>),
}

/// One tuned parameter.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Param {
    pub name: String,
    pub domain: Domain,
}

/// How trials are chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Algorithm {
    Grid,
    Random,
    /// The default: Tree-structured Parzen Estimators.
    Tpe,
}

/// A checked study.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Study {
    pub goal: Goal,
    pub metric_tag: String,
    pub params: Vec<Param>,
    pub max_trials: usize,
    pub max_parallel_trials: usize,
    /// 0: the job fails only when every trial failed.
    pub max_failed_trials: usize,
    pub early_stopping: bool,
    pub algorithm: Algorithm,
    pub resume_previous_job_id: Option<String>,
}

/// A trial's values, by parameter name, as they reach the trainer (`--name=value`).
pub type Assignment = BTreeMap<String, String>;

/// The metric tag ML Engine reads when a spec names none.
pub const DEFAULT_METRIC_TAG: &str = "training/hptuning/metric";

impl Study {
    /// Whether `a` is a better objective than `b`.
    pub fn better(&self, a: f64, b: f64) -> bool {
        match self.goal {
            Goal::Maximize => a > b,
            Goal::Minimize => a < b,
        }
    }

    /// The number of grid points (0 when it does not fit in memory).
    pub fn grid_size(&self) -> usize {
        let mut size: usize = 1;
        for p in &self.params {
            let n = match &p.domain {
                Domain::Integer { min, max, .. } => (max - min + 1) as usize,
                Domain::Categorical(v) => v.len(),
                Domain::Discrete(v) => v.len(),
                Domain::Double { .. } => return 0,
            };
            size = match size.checked_mul(n) {
                Some(s) if s <= 1_000_000 => s,
                _ => return 0,
            };
        }
        size
    }

    /// Grid point `index` (the last parameter varies fastest).
    pub fn grid_point(&self, mut index: usize) -> Assignment {
        let mut values = vec![String::new(); self.params.len()];
        for (slot, p) in self.params.iter().enumerate().rev() {
            let (n, value): (usize, Box<dyn Fn(usize) -> String>) = match &p.domain {
                Domain::Integer { min, max, .. } => {
                    ((max - min + 1) as usize, Box::new(move |i| (min + i as i64).to_string()))
                }
                Domain::Categorical(v) => (v.len(), Box::new(move |i| v[i].clone())),
                Domain::Discrete(v) => (v.len(), Box::new(move |i| number(v[i]))),
                Domain::Double { .. } => (1, Box::new(|_| String::new())),
            };
            values[slot] = value(index % n);
            index /= n;
        }
        self.params.iter().map(|p| p.name.clone()).zip(values).collect()
    }
}

/// A number as the trainer receives it (`0.1`, `3`, `1e-05`).
fn number(value: f64) -> String {
    format!("{value}")
}

/// A small seeded generator (SplitMix64): studies are reproducible from their job's name.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u = self.unit().max(f64::MIN_POSITIVE);
        let v = self.unit();
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.unit() * n as f64) as usize % n.max(1)
    }
}

/// A numeric domain's position in [0, 1] under its scale, and back.
fn to_unit(domain: &Domain, value: &str) -> Option<f64> {
    let x: f64 = value.parse().ok()?;
    Some(match domain {
        Domain::Double { min, max, scale } => scaled(x, *min, *max, *scale),
        Domain::Integer { min, max, scale } => scaled(x, *min as f64, *max as f64, *scale),
        Domain::Discrete(values) => {
            let i = values.iter().position(|v| (*v - x).abs() < 1e-12)?;
            if values.len() == 1 {
                0.5
            } else {
                i as f64 / (values.len() - 1) as f64
            }
        }
        Domain::Categorical(_) => return None,
    })
}

fn scaled(x: f64, min: f64, max: f64, scale: Scale) -> f64 {
    let u = match scale {
        Scale::Linear => (x - min) / (max - min),
        Scale::Log => (x.ln() - min.ln()) / (max.ln() - min.ln()),
        Scale::ReverseLog => 1.0 - ((max + min - x).ln() - min.ln()) / (max.ln() - min.ln()),
    };
    u.clamp(0.0, 1.0)
}

fn from_unit(domain: &Domain, u: f64) -> String {
    let u = u.clamp(0.0, 1.0);
    let unscale = |min: f64, max: f64, scale: Scale| match scale {
        Scale::Linear => min + u * (max - min),
        Scale::Log => (min.ln() + u * (max.ln() - min.ln())).exp(),
        Scale::ReverseLog => max + min - (min.ln() + (1.0 - u) * (max.ln() - min.ln())).exp(),
    };
    match domain {
        Domain::Double { min, max, scale } => number(unscale(*min, *max, *scale).clamp(*min, *max)),
        Domain::Integer { min, max, scale } => {
            ((unscale(*min as f64 - 0.5, *max as f64 + 0.5, *scale).round() as i64).clamp(*min, *max)).to_string()
        }
        Domain::Discrete(values) => {
            number(values[((u * (values.len() - 1) as f64).round() as usize).min(values.len() - 1)])
        }
        Domain::Categorical(values) => values[((u * values.len() as f64) as usize).min(values.len() - 1)].clone(),
    }
}

/// One random value of a domain, spread by its scale.
fn random_value(domain: &Domain, rng: &mut Rng) -> String {
    match domain {
        Domain::Categorical(values) => values[rng.below(values.len())].clone(),
        Domain::Discrete(values) => number(values[rng.below(values.len())]),
        other => from_unit(other, rng.unit()),
    }
}

/// A completed trial as the suggesters see it.
#[derive(Clone, Debug)]
pub struct Observation {
    pub values: Assignment,
    pub objective: f64,
}

/// Trials TPE draws at random before it models the results.
const TPE_STARTUP: usize = 5;
/// The share of completed trials TPE counts as good.
const TPE_GAMMA: f64 = 0.25;
/// Candidates TPE draws from the good model per suggestion.
const TPE_CANDIDATES: usize = 24;

/// Picks the values of trial number `index` (0-based) given the completed trials.
pub fn suggest(study: &Study, index: usize, observed: &[Observation], rng: &mut Rng) -> Assignment {
    match study.algorithm {
        Algorithm::Grid => study.grid_point(index % study.grid_size().max(1)),
        Algorithm::Random => study.params.iter().map(|p| (p.name.clone(), random_value(&p.domain, rng))).collect(),
        Algorithm::Tpe if observed.len() < TPE_STARTUP => {
            study.params.iter().map(|p| (p.name.clone(), random_value(&p.domain, rng))).collect()
        }
        Algorithm::Tpe => tpe(study, observed, rng),
    }
}

fn tpe(study: &Study, observed: &[Observation], rng: &mut Rng) -> Assignment {
    let mut sorted: Vec<&Observation> = observed.iter().collect();
    sorted.sort_by(|a, b| {
        let order = a.objective.total_cmp(&b.objective);
        if study.goal == Goal::Maximize {
            order.reverse()
        } else {
            order
        }
    });
    let good_count = ((sorted.len() as f64 * TPE_GAMMA).ceil() as usize).clamp(1, sorted.len() - 1);
    let (good, bad) = sorted.split_at(good_count);
    study
        .params
        .iter()
        .map(|p| {
            let value = match &p.domain {
                Domain::Categorical(values) => tpe_categorical(values, &p.name, good, bad, rng),
                domain => {
                    let points = |set: &[&Observation]| -> Vec<f64> {
                        set.iter().filter_map(|o| o.values.get(&p.name).and_then(|v| to_unit(domain, v))).collect()
                    };
                    let (l, g) = (Parzen::new(&points(good)), Parzen::new(&points(bad)));
                    let mut best = (f64::NEG_INFINITY, 0.5);
                    for _ in 0..TPE_CANDIDATES {
                        let u = l.sample(rng);
                        let score = l.density(u).ln() - g.density(u).ln();
                        if score > best.0 {
                            best = (score, u);
                        }
                    }
                    from_unit(domain, best.1)
                }
            };
            (p.name.clone(), value)
        })
        .collect()
}

/// An adaptive Parzen estimator over [0, 1] (as in Bergstra et al.): one Gaussian per
/// observation whose width is the larger gap to its neighbours (the bounds count as neighbours),
/// clipped to [1/min(100, n+1), 1], plus a broad prior (mean 0.5, width 1) with the weight of one
/// observation. Components are truncated to [0, 1].
struct Parzen {
    components: Vec<(f64, f64)>,
}

impl Parzen {
    fn new(points: &[f64]) -> Self {
        let mut sorted: Vec<f64> = points.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let min_width = 1.0 / (n as f64 + 1.0).min(100.0);
        let mut components: Vec<(f64, f64)> = sorted
            .iter()
            .enumerate()
            .map(|(i, mu)| {
                let left = if i == 0 { *mu } else { mu - sorted[i - 1] };
                let right = if i + 1 == n { 1.0 - mu } else { sorted[i + 1] - mu };
                (*mu, left.max(right).clamp(min_width, 1.0))
            })
            .collect();
        components.push((0.5, 1.0));
        Self { components }
    }

    /// Density at `u`: the mean of the truncated components.
    fn density(&self, u: f64) -> f64 {
        let total: f64 = self
            .components
            .iter()
            .map(|(mu, sd)| {
                let mass = (phi((1.0 - mu) / sd) - phi((0.0 - mu) / sd)).max(1e-12);
                (-(u - mu).powi(2) / (2.0 * sd * sd)).exp() / (sd * (2.0 * std::f64::consts::PI).sqrt()) / mass
            })
            .sum();
        total / self.components.len() as f64 + 1e-12
    }

    /// A draw from a random component, resampled until it lands in [0, 1].
    fn sample(&self, rng: &mut Rng) -> f64 {
        let (mu, sd) = self.components[rng.below(self.components.len())];
        for _ in 0..32 {
            let u = mu + sd * rng.normal();
            if (0.0..=1.0).contains(&u) {
                return u;
            }
        }
        mu.clamp(0.0, 1.0)
    }
}

/// The standard normal distribution function (Abramowitz and Stegun 7.1.26, error < 1.5e-7).
fn phi(x: f64) -> f64 {
    let z = x.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * z);
    let poly =
        t * (0.254_829_592 + t * (-0.284_496_736 + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erf = 1.0 - poly * (-z * z).exp();
    if x >= 0.0 {
        0.5 * (1.0 + erf)
    } else {
        0.5 * (1.0 - erf)
    }
}

fn tpe_categorical(
    values: &[String],
    name: &str,
    good: &[&Observation],
    bad: &[&Observation],
    rng: &mut Rng,
) -> String {
    let weights = |set: &[&Observation]| -> Vec<f64> {
        values.iter().map(|v| 1.0 + set.iter().filter(|o| o.values.get(name) == Some(v)).count() as f64).collect()
    };
    let (l, g) = (weights(good), weights(bad));
    let (l_total, g_total) = (l.iter().sum::<f64>(), g.iter().sum::<f64>());
    let mut best = (f64::NEG_INFINITY, 0);
    for _ in 0..TPE_CANDIDATES {
        // Draw from l.
        let mut pick = rng.unit() * l_total;
        let mut i = 0;
        while i + 1 < l.len() && pick >= l[i] {
            pick -= l[i];
            i += 1;
        }
        let score = (l[i] / l_total).ln() - (g[i] / g_total).ln();
        if score > best.0 {
            best = (score, i);
        }
    }
    values[best.1].clone()
}

/// The median stopping rule: a running trial whose best objective by its latest step is worse
/// than the median of the completed trials' best objectives by that step should stop. Needs at
/// least three completed trials and two reports of the running one. `curves` are (step, value)
/// reports in step order.
pub fn should_stop(study: &Study, running: &[(i64, f64)], completed: &[Vec<(i64, f64)>]) -> bool {
    if completed.len() < 3 || running.len() < 2 {
        return false;
    }
    let step = running.last().map_or(0, |r| r.0);
    let best_by = |curve: &[(i64, f64)]| -> Option<f64> {
        curve.iter().filter(|(s, _)| *s <= step).map(|(_, v)| *v).reduce(|a, b| if study.better(a, b) { a } else { b })
    };
    let Some(mine) = best_by(running) else { return false };
    let mut others: Vec<f64> = completed.iter().filter_map(|c| best_by(c)).collect();
    if others.len() < 3 {
        return false;
    }
    others.sort_by(f64::total_cmp);
    let median = if others.len() % 2 == 1 {
        others[others.len() / 2]
    } else {
        (others[others.len() / 2 - 1] + others[others.len() / 2]) / 2.0
    };
    study.better(median, mine)
}
