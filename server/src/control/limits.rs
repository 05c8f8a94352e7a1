//! The bounds on what one request may ask for, checked before anything is allocated from the
//! request's numbers, and the configured limits on growth (uploads, log followers).
//!
//! Every bound here is documented in the README's "Limits" table; a request past one gets
//! INVALID_ARGUMENT naming its field and the limit. The growth limits answer RESOURCE_EXHAUSTED.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};

/// The most replicas of one pool (`workerCount`, `parameterServerCount`) a job may ask for.
pub const MAX_REPLICAS_PER_POOL: i64 = 1000;
/// The most GPU devices one replica may ask for (`acceleratorConfig.count`).
pub const MAX_ACCELERATORS_PER_REPLICA: i64 = 64;
/// The most trials of a tuning job (`maxTrials`, `maxFailedTrials`).
pub const MAX_TRIALS: i64 = 10_000;
/// The most trials that may run at once (`maxParallelTrials`).
pub const MAX_PARALLEL_TRIALS: i64 = 1000;
/// The most tuned parameters of a study (`hyperparameters.params`).
pub const MAX_HYPERPARAMETERS: usize = 100;
/// The most values of one CATEGORICAL or DISCRETE parameter.
pub const MAX_PARAMETER_VALUES: usize = 1000;
/// The largest magnitude of an INTEGER parameter's bounds (2^53: exact as a JSON number).
pub const MAX_INTEGER_PARAMETER: f64 = 9_007_199_254_740_992.0;
/// The longest duration the API accepts (`maxRunningTime`, `maxWaitTime`): ten years.
pub const MAX_DURATION_SECS: u64 = 10 * 365 * 24 * 3600;
/// The most entries of a job's `args`.
pub const MAX_ARGS: usize = 1000;
/// The most entries of `packageUris` and of `inputPaths`.
pub const MAX_URIS: usize = 100;
/// The most labels of a resource (as in Google Cloud).
pub const MAX_LABELS: usize = 64;
/// The longest label key or value, in characters (as in Google Cloud).
pub const MAX_LABEL_CHARS: usize = 63;
/// The longest list `filter`, in characters.
pub const MAX_FILTER_CHARS: usize = 2000;
/// The most `maxWorkerCount` of a batch prediction job (it then runs on at most
/// `training_slots` threads).
pub const MAX_PREDICTION_WORKERS: i64 = 1000;
/// The largest `batchSize` of a batch prediction job.
pub const MAX_BATCH_SIZE: i64 = 100_000;
/// The most instances of one online prediction request.
pub const MAX_INSTANCES: usize = 10_000;
/// The most elements of all inputs of one instance that a `signature.json` may declare
/// (warm-up and the console's example build one instance of zeros).
pub const MAX_SIGNATURE_ELEMENTS: i64 = 1 << 20;
/// The most dimensions of one input's `shape` in a `signature.json`.
pub const MAX_SIGNATURE_RANK: usize = 32;
/// The most inputs a `signature.json` may declare.
pub const MAX_SIGNATURE_INPUTS: usize = 256;
/// The largest `signature.json` read, in bytes.
pub const MAX_SIGNATURE_FILE_BYTES: u64 = 1 << 20;

/// `value` if it lies in `min..=max`, else INVALID_ARGUMENT naming `field` and the range.
pub fn count_in(field: &str, value: i64, min: i64, max: i64) -> Result<i64> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        let name = field.rsplit('.').next().unwrap_or(field);
        Err(Error::invalid(field, format!("{name} must be between {min} and {max}; got {value}.")))
    }
}

/// INVALID_ARGUMENT naming `field` when `items` has more than `max` entries.
pub fn at_most<T>(field: &str, items: &[T], max: usize) -> Result<()> {
    if items.len() <= max {
        Ok(())
    } else {
        let name = field.rsplit('.').next().unwrap_or(field);
        Err(Error::invalid(field, format!("{name} has {} entries; at most {max} are allowed.", items.len())))
    }
}

/// Checks a resource's labels: at most [`MAX_LABELS`], keys of 1 to [`MAX_LABEL_CHARS`]
/// characters, values of at most [`MAX_LABEL_CHARS`].
pub fn check_labels(field: &str, labels: &BTreeMap<String, String>) -> Result<()> {
    if labels.len() > MAX_LABELS {
        return Err(Error::invalid(
            field,
            format!("{} labels given; a resource has at most {MAX_LABELS}.", labels.len()),
        ));
    }
    for (key, value) in labels {
        if key.is_empty() || key.chars().count() > MAX_LABEL_CHARS {
            return Err(Error::invalid(
                field,
                format!("A label key has 1 to {MAX_LABEL_CHARS} characters; '{}' does not.", short(key)),
            ));
        }
        if value.chars().count() > MAX_LABEL_CHARS {
            return Err(Error::invalid(
                format!("{field}.{key}"),
                format!("A label value has at most {MAX_LABEL_CHARS} characters."),
            ));
        }
    }
    Ok(())
}

/// Why a text is not a duration Anneal accepts; the message (for a field's violation) shows the
/// start of the text.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Not a non-negative number of seconds followed by `s`.
    #[error("'{0}' is not a duration like \"3600s\".")]
    Malformed(String),
    /// Longer than [`MAX_DURATION_SECS`].
    #[error("'{0}' is longer than the longest duration allowed, {max}s.", max = MAX_DURATION_SECS)]
    TooLong(String),
}

/// Parses a protobuf JSON duration such as `"3600s"` or `"1.5s"`, at most
/// [`MAX_DURATION_SECS`].
pub fn parse_duration(text: &str) -> std::result::Result<Duration, DurationError> {
    let seconds = text.strip_suffix('s').and_then(|s| s.parse::<f64>().ok());
    let Some(seconds) = seconds.filter(|s| s.is_finite() && *s >= 0.0) else {
        return Err(DurationError::Malformed(short(text)));
    };
    if seconds > MAX_DURATION_SECS as f64 {
        return Err(DurationError::TooLong(short(text)));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// The first characters of a user-given text, for an error message.
pub fn short(text: &str) -> String {
    const SHOWN: usize = 80;
    if text.chars().count() <= SHOWN {
        text.to_owned()
    } else {
        format!("{}…", text.chars().take(SHOWN).collect::<String>())
    }
}

/// The configured limits on growth, from [`crate::config::Config`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The largest file one upload request may carry, in bytes.
    pub max_upload_bytes: u64,
    /// The most bytes of uploads one project may keep.
    pub upload_quota_bytes: u64,
    /// The most `logs?follow=true` streams open at once on this server.
    pub max_log_followers: usize,
    /// How long an ordinary API request may take (not log follow streams or uploads).
    pub request_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_upload_bytes: 4 << 30,
            upload_quota_bytes: 20 << 30,
            max_log_followers: 256,
            request_timeout: Duration::from_secs(60),
        }
    }
}

/// The growth limits with the state they need: the log followers' permits.
#[derive(Clone, Debug)]
pub struct Growth {
    pub limits: Limits,
    followers: Arc<tokio::sync::Semaphore>,
    /// Open follower streams per token and per project (keys `token:<id>`, `project:<id>`), so
    /// one caller or one project cannot take the whole pool.
    shares: Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
    /// One lock per project, held while an upload's file is written, so the quota check and the
    /// write of concurrent uploads cannot overtake each other.
    uploads: Arc<std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

impl Growth {
    /// Growth limits with no follower streams open.
    pub fn new(limits: Limits) -> Self {
        let followers = Arc::new(tokio::sync::Semaphore::new(limits.max_log_followers));
        Self { limits, followers, shares: Arc::default(), uploads: Arc::default() }
    }

    /// Waits for the project's turn to write an upload (see `uploads`); the turn lasts as long as
    /// the guard.
    pub async fn upload_turn(&self, project: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.uploads.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            locks.entry(project.to_owned()).or_default().clone()
        };
        lock.lock_owned().await
    }

    /// A permit for one log follower of `project` opened by token `token`, held for the
    /// stream's life. RESOURCE_EXHAUSTED when the token has a quarter of `max_log_followers`
    /// streams open, the project half of them, or the server all of them: one viewer or one
    /// project leaves room for the others.
    pub fn follower(&self, token: &str, project: &str) -> Result<Follower> {
        let max = self.limits.max_log_followers;
        let (per_token, per_project) = ((max / 4).max(1), (max / 2).max(1));
        let keys = [format!("token:{token}"), format!("project:{project}")];
        {
            let mut shares = self.shares.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let open = |key: &str| shares.get(key).copied().unwrap_or(0);
            if open(&keys[0]) >= per_token {
                return Err(Error::ResourceExhausted(format!(
                    "This token has {per_token} log streams open (a quarter of max_log_followers); close one or read without follow."
                )));
            }
            if open(&keys[1]) >= per_project {
                return Err(Error::ResourceExhausted(format!(
                    "Project {project} has {per_project} log streams open (half of max_log_followers); close one or read without follow."
                )));
            }
            let permit = self.followers.clone().try_acquire_owned().map_err(|_| {
                Error::ResourceExhausted(format!(
                    "{max} log streams are open on this server (max_log_followers); retry later or read without follow."
                ))
            })?;
            for key in &keys {
                *shares.entry(key.clone()).or_default() += 1;
            }
            Ok(Follower { _permit: permit, shares: self.shares.clone(), keys })
        }
    }
}

/// One open log follower stream: its place in the server's pool and in its token's and
/// project's shares, given back when dropped.
#[derive(Debug)]
pub struct Follower {
    _permit: tokio::sync::OwnedSemaphorePermit,
    shares: Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
    keys: [String; 2],
}

impl Drop for Follower {
    fn drop(&mut self) {
        let mut shares = self.shares.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for key in &self.keys {
            if let Some(open) = shares.get_mut(key) {
                *open = open.saturating_sub(1);
                if *open == 0 {
                    shares.remove(key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_bounded_and_never_panic() {
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        for bad in ["1e30s", "1e400s", "-1s", "NaNs", "infs", "10", "s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert!(parse_duration("1e30s").expect_err("long").to_string().contains(&MAX_DURATION_SECS.to_string()));
    }

    #[test]
    fn counts_and_labels_name_their_field() {
        let err =
            count_in("job.trainingInput.workerCount", 10_000_000_000, 0, MAX_REPLICAS_PER_POOL).expect_err("too many");
        assert!(err.to_string().contains("workerCount must be between 0 and 1000"), "{err}");
        let many: BTreeMap<String, String> = (0..65).map(|i| (format!("k{i}"), "v".into())).collect();
        assert!(matches!(check_labels("job.labels", &many), Err(Error::InvalidArgument(v)) if v.field == "job.labels"));
        let long: BTreeMap<String, String> = [("k".to_owned(), "v".repeat(64))].into();
        assert!(check_labels("model.labels", &long).is_err());
    }

    #[tokio::test]
    async fn followers_are_counted_while_their_permits_live() {
        let growth = Growth::new(Limits { max_log_followers: 1, ..Limits::default() });
        let first = growth.follower("t1", "p").expect("first");
        assert!(matches!(growth.follower("t2", "q"), Err(Error::ResourceExhausted(_))));
        drop(first);
        let _again = growth.follower("t2", "q").expect("free again");
    }

    #[tokio::test]
    async fn one_token_or_one_project_leaves_room_for_the_others() {
        let growth = Growth::new(Limits { max_log_followers: 8, ..Limits::default() });
        let mine: Vec<Follower> =
            (0..2).map(|_| growth.follower("t1", "p").expect("within the token's share")).collect();
        let refused = growth.follower("t1", "q").expect_err("a quarter per token");
        assert!(refused.to_string().contains("This token has 2 log streams open"), "{refused}");
        let _more: Vec<Follower> = (0..2).map(|_| growth.follower("t2", "p").expect("another token")).collect();
        let refused = growth.follower("t3", "p").expect_err("half per project");
        assert!(refused.to_string().contains("Project p has 4 log streams open"), "{refused}");
        let _other = growth.follower("t3", "q").expect("another project still has room");
        drop(mine);
        let _back = growth.follower("t1", "p").expect("the token's share came back");
    }
}
