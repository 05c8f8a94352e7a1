//! Checking a `HyperparameterSpec` into a [`Study`] (the plan's tuning part), once, when the job is
//! created: every error is INVALID_ARGUMENT naming its field. The suggesters and stopping rules
//! are in [`crate::jobs::study`].

use serde_json::Value;

use super::limits::{self, at_most, count_in, MAX_PARALLEL_TRIALS, MAX_TRIALS};
use crate::error::{Error, Result};
use crate::jobs::study::{Algorithm, Domain, Goal, Param, Scale, Study, DEFAULT_METRIC_TAG};
use crate::jobs::wire::{HyperparameterSpec, ParameterSpec};

fn count(value: &Option<Value>, field: &str, default: i64) -> Result<i64> {
    match value {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v
            .as_i64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            .ok_or_else(|| Error::invalid(field, format!("{v} is not a whole number."))),
    }
}

impl Study {
    /// Checks a spec; every error is INVALID_ARGUMENT naming its field.
    pub fn from_spec(spec: &HyperparameterSpec) -> Result<Self> {
        let goal = goal(spec)?;
        let algorithm = algorithm(spec)?;
        if spec.params.is_empty() {
            return Err(Error::invalid(field("params"), "At least one parameter is required."));
        }
        at_most(&field("params"), &spec.params, limits::MAX_HYPERPARAMETERS)?;
        let mut params: Vec<Param> = Vec::with_capacity(spec.params.len());
        for (i, p) in spec.params.iter().enumerate() {
            if params.iter().any(|q| q.name == p.parameter_name) {
                return Err(Error::invalid(
                    field(&format!("params[{i}].parameterName")),
                    format!("Parameter '{}' is listed twice.", p.parameter_name),
                ));
            }
            params.push(param(i, p, algorithm)?);
        }
        let (max_trials, max_parallel_trials, max_failed_trials) = trial_counts(spec)?;
        let study = Self {
            goal,
            metric_tag: spec
                .hyperparameter_metric_tag
                .clone()
                .filter(|t| !t.is_empty())
                .unwrap_or_else(|| DEFAULT_METRIC_TAG.into()),
            params,
            max_trials,
            max_parallel_trials,
            max_failed_trials,
            early_stopping: spec.enable_trial_early_stopping.unwrap_or(false),
            algorithm,
            resume_previous_job_id: spec.resume_previous_job_id.clone().filter(|j| !j.is_empty()),
        };
        if study.algorithm == Algorithm::Grid && study.grid_size() == 0 {
            return Err(Error::invalid(field("params"), "The grid is too large to enumerate."));
        }
        Ok(study)
    }
}

/// The path of a field of the spec in a job.
fn field(f: &str) -> String {
    format!("job.trainingInput.hyperparameters.{f}")
}

fn goal(spec: &HyperparameterSpec) -> Result<Goal> {
    match spec.goal.as_deref() {
        None | Some("MAXIMIZE" | "GOAL_TYPE_UNSPECIFIED") => Ok(Goal::Maximize),
        Some("MINIMIZE") => Ok(Goal::Minimize),
        Some(other) => Err(Error::invalid(field("goal"), format!("Unknown goal '{other}'; use MAXIMIZE or MINIMIZE."))),
    }
}

fn algorithm(spec: &HyperparameterSpec) -> Result<Algorithm> {
    match spec.algorithm.as_deref() {
        None | Some("ALGORITHM_UNSPECIFIED" | "BAYESIAN_OPTIMIZATION") => Ok(Algorithm::Tpe),
        Some("GRID_SEARCH") => Ok(Algorithm::Grid),
        Some("RANDOM_SEARCH") => Ok(Algorithm::Random),
        Some(other) => Err(Error::invalid(
            field("algorithm"),
            format!("Unknown algorithm '{other}'; use GRID_SEARCH, RANDOM_SEARCH or ALGORITHM_UNSPECIFIED (Bayesian)."),
        )),
    }
}

/// Parameter `i` of the spec, checked.
fn param(i: usize, p: &ParameterSpec, algorithm: Algorithm) -> Result<Param> {
    let f = |name: &str| field(&format!("params[{i}].{name}"));
    if p.parameter_name.trim().is_empty() {
        return Err(Error::invalid(f("parameterName"), "parameterName is required."));
    }
    let scale = match p.scale_type.as_deref() {
        None | Some("NONE" | "UNIT_LINEAR_SCALE") => Scale::Linear,
        Some("UNIT_LOG_SCALE") => Scale::Log,
        Some("UNIT_REVERSE_LOG_SCALE") => Scale::ReverseLog,
        Some(other) => return Err(Error::invalid(f("scaleType"), format!("Unknown scale type '{other}'."))),
    };
    let domain = match p.kind.as_str() {
        "DOUBLE" => {
            let (min, max) = range(p, scale, &f)?;
            Domain::Double { min, max, scale }
        }
        "INTEGER" => {
            let (min, max) = range(p, scale, &f)?;
            if min.fract() != 0.0 || max.fract() != 0.0 {
                return Err(Error::invalid(f("minValue"), "INTEGER bounds must be whole numbers."));
            }
            let limit = limits::MAX_INTEGER_PARAMETER;
            if min.abs() > limit || max.abs() > limit {
                return Err(Error::invalid(
                    f("maxValue"),
                    format!("INTEGER bounds must lie between -{limit} and {limit}."),
                ));
            }
            Domain::Integer { min: min as i64, max: max as i64, scale }
        }
        "CATEGORICAL" => {
            if p.categorical_values.is_empty() {
                return Err(Error::invalid(f("categoricalValues"), "CATEGORICAL needs categoricalValues."));
            }
            at_most(&f("categoricalValues"), &p.categorical_values, limits::MAX_PARAMETER_VALUES)?;
            Domain::Categorical(p.categorical_values.clone())
        }
        "DISCRETE" => {
            let values = &p.discrete_values;
            if values.is_empty() || values.len() > 1000 {
                return Err(Error::invalid(f("discreteValues"), "DISCRETE needs 1 to 1000 discreteValues."));
            }
            if values.windows(2).any(|w| w[0] >= w[1]) {
                return Err(Error::invalid(f("discreteValues"), "discreteValues must be strictly increasing."));
            }
            if scale != Scale::Linear && values[0] <= 0.0 {
                return Err(Error::invalid(f("discreteValues"), "Log scales need positive values."));
            }
            Domain::Discrete(values.clone())
        }
        other => {
            return Err(Error::invalid(
                f("type"),
                format!("Unknown parameter type '{other}'; use DOUBLE, INTEGER, CATEGORICAL or DISCRETE."),
            ))
        }
    };
    if algorithm == Algorithm::Grid && matches!(domain, Domain::Double { .. }) {
        return Err(Error::invalid(
            f("type"),
            "GRID_SEARCH cannot enumerate a continuous DOUBLE; use DISCRETE values (or INTEGER).",
        ));
    }
    Ok(Param { name: p.parameter_name.clone(), domain })
}

/// A numeric parameter's `(minValue, maxValue)`.
fn range(p: &ParameterSpec, scale: Scale, f: &dyn Fn(&str) -> String) -> Result<(f64, f64)> {
    let (Some(min), Some(max)) = (p.min_value, p.max_value) else {
        return Err(Error::invalid(f("minValue"), format!("{} needs minValue and maxValue.", p.kind)));
    };
    if !(min < max) {
        return Err(Error::invalid(f("maxValue"), format!("maxValue ({max}) must be greater than minValue ({min}).")));
    }
    if scale != Scale::Linear && min <= 0.0 {
        return Err(Error::invalid(f("minValue"), "Log scales need a positive range (minValue > 0)."));
    }
    Ok((min, max))
}

/// `(maxTrials, maxParallelTrials, maxFailedTrials)`, checked against each other and the limits.
fn trial_counts(spec: &HyperparameterSpec) -> Result<(usize, usize, usize)> {
    let max_trials = count(&spec.max_trials, &field("maxTrials"), 1)?;
    let max_parallel = count(&spec.max_parallel_trials, &field("maxParallelTrials"), 1)?;
    let max_failed = count(&spec.max_failed_trials, &field("maxFailedTrials"), 0)?;
    if max_trials < 1 {
        return Err(Error::invalid(field("maxTrials"), "maxTrials must be at least 1."));
    }
    if max_parallel < 1 {
        return Err(Error::invalid(field("maxParallelTrials"), "maxParallelTrials must be at least 1."));
    }
    count_in(&field("maxTrials"), max_trials, 1, MAX_TRIALS)?;
    count_in(&field("maxParallelTrials"), max_parallel, 1, MAX_PARALLEL_TRIALS)?;
    if max_failed > MAX_TRIALS {
        return Err(Error::invalid(field("maxFailedTrials"), format!("maxFailedTrials must be at most {MAX_TRIALS}.")));
    }
    if max_parallel > max_trials {
        return Err(Error::invalid(
            field("maxParallelTrials"),
            format!("maxParallelTrials ({max_parallel}) cannot exceed maxTrials ({max_trials})."),
        ));
    }
    if max_failed < 0 {
        return Err(Error::invalid(field("maxFailedTrials"), "maxFailedTrials cannot be negative."));
    }
    Ok((max_trials as usize, max_parallel as usize, max_failed as usize))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::study::{should_stop, suggest, Observation, Rng};

    fn spec(params: Value, extra: Value) -> HyperparameterSpec {
        let mut v = serde_json::json!({"params": params, "maxTrials": 10});
        v.as_object_mut().expect("object").extend(extra.as_object().expect("object").clone());
        serde_json::from_value(v).expect("spec")
    }

    #[test]
    fn grid_enumerates_exactly_the_grid() {
        let study = Study::from_spec(&spec(
            serde_json::json!([{"parameterName": "a", "type": "INTEGER", "minValue": 1, "maxValue": 3},
                               {"parameterName": "b", "type": "CATEGORICAL", "categoricalValues": ["x", "y"]}]),
            serde_json::json!({"algorithm": "GRID_SEARCH"}),
        ))
        .expect("valid");
        assert_eq!(study.grid_size(), 6);
        let points: Vec<String> =
            (0..6).map(|i| format!("{}{}", study.grid_point(i)["a"], study.grid_point(i)["b"])).collect();
        assert_eq!(points, ["1x", "1y", "2x", "2y", "3x", "3y"]);
    }

    #[test]
    fn random_values_respect_bounds_and_scales() {
        let study = Study::from_spec(&spec(
            serde_json::json!([{"parameterName": "lr", "type": "DOUBLE", "minValue": 1e-4, "maxValue": 1.0, "scaleType": "UNIT_LOG_SCALE"},
                               {"parameterName": "n", "type": "INTEGER", "minValue": 2, "maxValue": 5}]),
            serde_json::json!({"algorithm": "RANDOM_SEARCH"}),
        ))
        .expect("valid");
        let mut rng = Rng::new(7);
        let mut lrs = Vec::new();
        for i in 0..2000 {
            let a = suggest(&study, i, &[], &mut rng);
            let lr: f64 = a["lr"].parse().expect("number");
            let n: i64 = a["n"].parse().expect("integer");
            assert!((1e-4..=1.0).contains(&lr) && (2..=5).contains(&n), "{a:?}");
            lrs.push(lr);
        }
        lrs.sort_by(f64::total_cmp);
        // Log scale: the median is near the geometric mean 1e-2, not the arithmetic 0.5.
        let median = lrs[lrs.len() / 2];
        assert!((3e-3..3e-2).contains(&median), "median {median}");
        let below = lrs.iter().filter(|v| **v < 1e-3).count() as f64 / lrs.len() as f64;
        assert!((0.2..0.3).contains(&below), "a quarter of the log range: {below}");
    }

    #[test]
    fn tpe_moves_towards_the_good_region() {
        let study = Study::from_spec(&spec(
            serde_json::json!([{"parameterName": "x", "type": "DOUBLE", "minValue": 0, "maxValue": 1}]),
            serde_json::json!({}),
        ))
        .expect("valid");
        let observed: Vec<Observation> = (0..20)
            .map(|i| {
                let x = i as f64 / 19.0;
                Observation { values: [("x".to_owned(), x.to_string())].into(), objective: -(x - 0.8).powi(2) }
            })
            .collect();
        let mut rng = Rng::new(1);
        let picks: Vec<f64> =
            (0..50).map(|_| suggest(&study, 20, &observed, &mut rng)["x"].parse().expect("x")).collect();
        let near = picks.iter().filter(|x| (**x - 0.8).abs() < 0.15).count();
        assert!(near >= 35, "{near} of 50 picks near the optimum: {picks:?}");
    }

    #[test]
    fn bad_specs_name_their_field() {
        let cases = [
            (serde_json::json!([]), serde_json::json!({}), "params"),
            (
                serde_json::json!([{"parameterName": "a", "type": "DOUBLE", "minValue": 2, "maxValue": 1}]),
                serde_json::json!({}),
                "params[0].maxValue",
            ),
            (
                serde_json::json!([{"parameterName": "a", "type": "DOUBLE", "minValue": 0, "maxValue": 1, "scaleType": "UNIT_LOG_SCALE"}]),
                serde_json::json!({}),
                "params[0].minValue",
            ),
            (
                serde_json::json!([{"parameterName": "a", "type": "DOUBLE", "minValue": 0, "maxValue": 1}]),
                serde_json::json!({"algorithm": "GRID_SEARCH"}),
                "params[0].type",
            ),
            (
                serde_json::json!([{"parameterName": "a", "type": "INTEGER", "minValue": 0, "maxValue": 1}, {"parameterName": "a", "type": "INTEGER", "minValue": 0, "maxValue": 1}]),
                serde_json::json!({}),
                "params[1].parameterName",
            ),
            (
                serde_json::json!([{"parameterName": "a", "type": "INTEGER", "minValue": 0, "maxValue": 1}]),
                serde_json::json!({"maxParallelTrials": 11}),
                "maxParallelTrials",
            ),
            (
                serde_json::json!([{"parameterName": "a", "type": "DISCRETE", "discreteValues": [1, 1]}]),
                serde_json::json!({}),
                "params[0].discreteValues",
            ),
            (serde_json::json!([{"parameterName": "a", "type": "WORDS"}]), serde_json::json!({}), "params[0].type"),
            (
                serde_json::json!([{"parameterName": "a", "type": "INTEGER", "minValue": 0, "maxValue": 1}]),
                serde_json::json!({"goal": "UP"}),
                "goal",
            ),
        ];
        for (params, extra, field) in cases {
            let error = Study::from_spec(&spec(params.clone(), extra)).expect_err("invalid");
            assert!(error.to_string().contains(&format!("hyperparameters.{field}")), "{params}: {error}");
        }
    }

    #[test]
    fn the_median_rule_stops_a_clearly_worse_curve() {
        let study = Study::from_spec(&spec(
            serde_json::json!([{"parameterName": "a", "type": "INTEGER", "minValue": 0, "maxValue": 1}]),
            serde_json::json!({}),
        ))
        .expect("valid");
        let good: Vec<Vec<(i64, f64)>> =
            (0..3).map(|k| (1..=10).map(|s| (s, 0.8 + 0.01 * k as f64)).collect()).collect();
        assert!(should_stop(&study, &[(1, 0.1), (2, 0.12)], &good));
        assert!(!should_stop(&study, &[(1, 0.85), (2, 0.9)], &good));
        assert!(!should_stop(&study, &[(1, 0.1), (2, 0.12)], &good[..2]), "too few completed trials");
    }
}

#[cfg(test)]
mod search_quality {
    use super::*;
    use crate::jobs::study::{suggest, Observation, Rng};

    /// Trials until the noise-free objective is within 5 % of its optimum (max 80 → 81).
    fn trials_needed(algorithm: &str, seed: u64) -> usize {
        let spec: HyperparameterSpec = serde_json::from_value(serde_json::json!({
            "maxTrials": 80, "algorithm": algorithm,
            "params": [{"parameterName": "x", "type": "DOUBLE", "minValue": 0, "maxValue": 1},
                       {"parameterName": "y", "type": "DOUBLE", "minValue": 0, "maxValue": 1}]}))
        .expect("spec");
        let study = Study::from_spec(&spec).expect("study");
        let mut rng = Rng::new(seed);
        let mut noise = Rng::new(seed ^ 0xABCD);
        let mut observed = Vec::new();
        for i in 0..80 {
            let values = suggest(&study, i, &observed, &mut rng);
            let (x, y): (f64, f64) = (values["x"].parse().expect("x"), values["y"].parse().expect("y"));
            let truth = 1.0 - 4.0 * ((x - 0.3).powi(2) + (y - 0.7).powi(2));
            if truth >= 0.95 {
                return i + 1;
            }
            observed.push(Observation { values, objective: truth + 0.005 * noise.normal() });
        }
        81
    }

    #[test]
    fn tpe_needs_fewer_trials_than_random_search() {
        let median = |algorithm: &str| {
            let mut runs: Vec<usize> = (1..=15).map(|seed| trials_needed(algorithm, seed)).collect();
            runs.sort();
            runs[runs.len() / 2]
        };
        let (tpe, random) = (median("ALGORITHM_UNSPECIFIED"), median("RANDOM_SEARCH"));
        assert!(tpe < random, "TPE median {tpe} vs random {random}");
    }
}
