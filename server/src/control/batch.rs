//! Batch prediction jobs (`predictionInput`): validate and queue them; resolve their model and
//! input files when they run. The executor runs them; `serving::batch` does the work.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::jobs::int64_text;
use super::Control;
use crate::error::{Error, Result};
use crate::names::{JobName, ModelName, ProjectId, VersionName};
use crate::serving::batch::InputFormat;
use crate::storage::LocalStorage;
use crate::store::{JobKind, JobRecord, NewJob, Store, VersionState};

/// The PredictionInput fields Anneal acts on; every other field (region, runtimeVersion,
/// accelerator, ...) is kept and echoed as given.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PredictionInput {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_format: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_data_format: Option<String>,
    #[serde(default)]
    pub input_paths: Vec<String>,
    #[serde(default)]
    pub output_path: String,
    #[serde(default, with = "int64_text", skip_serializing_if = "Option::is_none")]
    pub max_worker_count: Option<i64>,
    #[serde(default, with = "int64_text", skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature_name: Option<String>,
    #[serde(flatten)]
    pub recorded: serde_json::Map<String, Value>,
}

/// Which model a batch job runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelSource {
    /// A model's default version at the time the job runs.
    Model(ModelName),
    Version(VersionName),
    /// A model directory that is not deployed.
    Dir(PathBuf),
}

/// One entry of `inputPaths`: a folder and a file name that may hold `*` wildcards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputPattern {
    pub dir: PathBuf,
    pub file: String,
}

/// What the executor needs to run a validated batch prediction job.
#[derive(Clone, Debug, PartialEq)]
pub struct PredictionSpec {
    pub model: ModelSource,
    pub format: InputFormat,
    pub inputs: Vec<InputPattern>,
    pub output: PathBuf,
    pub max_workers: usize,
    pub batch_size: usize,
}

/// `maxWorkerCount` when not given, as in ML Engine.
const DEFAULT_MAX_WORKERS: i64 = 10;
/// `batchSize` when not given, as in ML Engine.
const DEFAULT_BATCH_SIZE: i64 = 64;

impl Control {
    /// Validates a batch prediction job (its model or version must exist) and queues it. It runs
    /// on `min(maxWorkerCount, training_slots)` worker threads, holding that many slots.
    pub async fn create_prediction_job(
        &self,
        name: &JobName,
        labels: BTreeMap<String, String>,
        input: PredictionInput,
    ) -> Result<JobRecord> {
        super::limits::check_labels("job.labels", &labels)?;
        let spec = prediction_spec(&self.storage, &name.project, &input, self.executor.isolated())?;
        match &spec.model {
            ModelSource::Model(model) => {
                let record = self.get_model(model).await?;
                if record.default_version.is_none() {
                    return Err(Error::FailedPrecondition(format!(
                        "Model {model} has no default version; create a version first or name one in versionName."
                    )));
                }
            }
            ModelSource::Version(version) => {
                self.get_version(version).await?;
            }
            ModelSource::Dir(_) => {}
        }
        let workers = spec.max_workers.min(self.executor.slots()).max(1);
        let new = NewJob {
            kind: JobKind::Prediction,
            labels,
            input: serde_json::to_value(&input).map_err(Error::internal)?,
            priority: 0,
            replicas: workers as i64,
            gpus: 0,
        };
        let job = self.store.insert_job(name, &new).await?;
        self.executor.wake();
        Ok(job)
    }
}

/// Checks a PredictionInput and resolves what the executor needs from it (URIs confined to what
/// `project` may name in the storage roots; models and versions of `project` only). `project` is
/// the job's, also for a bare model or version id. `isolated`: the server runs as root, so the
/// output folder must be one no replica can redirect ([`crate::executor::check_output_folder`]).
pub fn prediction_spec(
    storage: &LocalStorage,
    project: &ProjectId,
    input: &PredictionInput,
    isolated: bool,
) -> Result<PredictionSpec> {
    let field = |f: &str| format!("job.predictionInput.{f}");
    let model = match (&input.model_name, &input.version_name, &input.uri) {
        (Some(model), None, None) => ModelSource::Model(model_name(&field("modelName"), project, model)?),
        (None, Some(version), None) => ModelSource::Version(version_name(&field("versionName"), project, version)?),
        (None, None, Some(uri)) => {
            let dir = storage.resolve_uri(project, &field("uri"), uri)?;
            // The files loaded from it, which may be symlinks, must be ones the project may name.
            for file in [crate::serving::MODEL_FILE, crate::serving::SIGNATURE_FILE] {
                storage.resolve_if_exists(project, &field("uri"), &dir.join(file).display().to_string())?;
            }
            ModelSource::Dir(dir)
        }
        _ => {
            return Err(Error::invalid(
                field("modelName"),
                "Exactly one of modelName, versionName and uri is required.",
            ))
        }
    };
    let format = match input.data_format.as_deref() {
        Some("JSON" | "TEXT") => InputFormat::Json,
        Some("CSV") => InputFormat::Csv,
        None | Some("DATA_FORMAT_UNSPECIFIED") => {
            return Err(Error::invalid(field("dataFormat"), "dataFormat is required: JSON, TEXT or CSV."))
        }
        Some(other @ ("TF_RECORD" | "TF_RECORD_GZIP")) => {
            return Err(Error::invalid(
                field("dataFormat"),
                format!("{other} input is for TensorFlow models; use JSON (or TEXT) or CSV."),
            ))
        }
        Some(other) => {
            return Err(Error::invalid(
                field("dataFormat"),
                format!("Unknown data format '{other}'; use JSON, TEXT or CSV."),
            ))
        }
    };
    if !matches!(input.output_data_format.as_deref(), None | Some("JSON" | "DATA_FORMAT_UNSPECIFIED")) {
        return Err(Error::invalid(field("outputDataFormat"), "Predictions are written as JSON lines: use JSON."));
    }
    if input.input_paths.is_empty() {
        return Err(Error::invalid(field("inputPaths"), "At least one input path is required."));
    }
    super::limits::at_most(&field("inputPaths"), &input.input_paths, super::limits::MAX_URIS)?;
    let inputs = input
        .input_paths
        .iter()
        .enumerate()
        .map(|(i, uri)| input_pattern(storage, project, &format!("{}[{i}]", field("inputPaths")), uri))
        .collect::<Result<Vec<_>>>()?;
    if input.output_path.trim().is_empty() {
        return Err(Error::invalid(field("outputPath"), "outputPath is required: the folder for the predictions."));
    }
    let output = storage.resolve_output_uri(project, &field("outputPath"), &input.output_path)?;
    if isolated {
        // Root writes the predictions: the folder, as the user named it, must be one no replica
        // can change (not inside a job dir), or a planted symlink would redirect root's writes.
        let given = crate::storage::local_path(&field("outputPath"), &input.output_path)?;
        crate::executor::check_output_folder(given).map_err(|e| Error::invalid(field("outputPath"), e))?;
    }
    use super::limits::{count_in, MAX_BATCH_SIZE, MAX_PREDICTION_WORKERS};
    let max_workers = input.max_worker_count.unwrap_or(DEFAULT_MAX_WORKERS);
    count_in(&field("maxWorkerCount"), max_workers, 1, MAX_PREDICTION_WORKERS)?;
    let batch_size = input.batch_size.unwrap_or(DEFAULT_BATCH_SIZE);
    count_in(&field("batchSize"), batch_size, 1, MAX_BATCH_SIZE)?;
    if !matches!(input.signature_name.as_deref(), None | Some("" | "serving_default")) {
        return Err(Error::invalid(field("signatureName"), "A TorchScript model has one signature, serving_default."));
    }
    Ok(PredictionSpec {
        model,
        format,
        inputs,
        output,
        max_workers: max_workers as usize,
        batch_size: batch_size as usize,
    })
}

/// `projects/P/models/M`, or a bare model id in the job's project. A model of another project
/// gets the answer a missing model gets, so a job learns nothing of other projects' names.
fn model_name(field: &str, project: &ProjectId, text: &str) -> Result<ModelName> {
    let parts: Vec<&str> = text.split('/').collect();
    let name = match parts.as_slice() {
        ["projects", p, "models", m] => ModelName::new(field, p, m)?,
        [m] => ModelName::new(field, project.as_str(), m)?,
        _ => return Err(Error::invalid(field, format!("'{text}' is not a model name like projects/P/models/M."))),
    };
    if &name.project != project {
        return Err(crate::store::model_not_found(&name));
    }
    Ok(name)
}

/// `projects/P/models/M/versions/V`, or `M/versions/V` in the job's project; another project's
/// version gets the answer a missing version gets.
fn version_name(field: &str, project: &ProjectId, text: &str) -> Result<VersionName> {
    let parts: Vec<&str> = text.split('/').collect();
    let name = match parts.as_slice() {
        ["projects", p, "models", m, "versions", v] => VersionName::new(field, p, m, v)?,
        [m, "versions", v] => VersionName::new(field, project.as_str(), m, v)?,
        _ => {
            return Err(Error::invalid(
                field,
                format!("'{text}' is not a version name like projects/P/models/M/versions/V."),
            ))
        }
    };
    if &name.model.project != project {
        return Err(crate::store::version_not_found(&name));
    }
    Ok(name)
}

/// An input path: its folder must exist inside the storage roots; `*` wildcards are allowed in
/// the file name only.
fn input_pattern(storage: &LocalStorage, project: &ProjectId, field: &str, uri: &str) -> Result<InputPattern> {
    let (parent, file) = match uri.rsplit_once('/') {
        Some((parent, file)) if !file.is_empty() => (parent, file),
        _ => {
            return Err(Error::invalid(field, format!("'{uri}' does not name a file (or a pattern like dir/*.json).")))
        }
    };
    if parent.contains('*') {
        return Err(Error::invalid(field, "Wildcards are allowed in the file name only."));
    }
    let parent = if parent == "file://" || parent.is_empty() { "/" } else { parent };
    if !file.contains('*') {
        // A file the project may not name is refused now; whether it exists is seen when the job runs.
        storage.resolve_if_exists(project, field, uri)?;
    }
    let dir = storage.resolve_uri(project, field, parent)?;
    Ok(InputPattern { dir, file: file.to_owned() })
}

/// The input files of a job of `project`, in order: each pattern's matches sorted by name, each
/// resolved (symlinks followed) to a file the project may name; a named file it may not name is
/// refused as outside the roots, a match of a wildcard is skipped. Blocks.
pub fn expand_inputs(
    storage: &LocalStorage,
    project: &ProjectId,
    patterns: &[InputPattern],
) -> std::result::Result<Vec<PathBuf>, String> {
    let mut files = Vec::new();
    for pattern in patterns {
        if !pattern.file.contains('*') {
            let path = pattern.dir.join(&pattern.file);
            let shown = path.display().to_string();
            match storage.resolve_if_exists(project, "job.predictionInput.inputPaths", &shown) {
                Ok(Some(file)) if file.is_file() => files.push(file),
                Ok(_) => return Err(format!("The input file {shown} does not exist.")),
                Err(e) => return Err(e.to_string()),
            }
            continue;
        }
        let entries =
            std::fs::read_dir(&pattern.dir).map_err(|e| format!("cannot list {}: {e}", pattern.dir.display()))?;
        let mut matched: Vec<(PathBuf, PathBuf)> = entries
            .flatten()
            .filter(|e| glob_match(&pattern.file, &e.file_name().to_string_lossy()))
            .filter_map(|e| Some((e.path(), e.path().canonicalize().ok()?)))
            .filter(|(_, file)| file.is_file() && storage.permits(project, file))
            .collect();
        matched.sort();
        files.extend(matched.into_iter().map(|(_, file)| file));
    }
    if files.is_empty() {
        return Err("No input files match inputPaths.".into());
    }
    Ok(files)
}

/// Whether `name` matches `pattern`, where `*` matches any run of characters.
fn glob_match(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if parts.len() == 1 {
        return pattern == name;
    }
    if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

/// The model directory a job's model source names right now: a READY version's files, or the
/// undeployed directory.
pub async fn resolve_model_dir(store: &Store, source: &ModelSource) -> std::result::Result<PathBuf, String> {
    let version = match source {
        ModelSource::Dir(dir) => return Ok(dir.clone()),
        ModelSource::Version(version) => version.clone(),
        ModelSource::Model(model) => {
            let record = store.get_model(model).await.map_err(|e| e.to_string())?;
            let record = record.ok_or_else(|| format!("Model {model} does not exist any more."))?;
            let default = record.default_version.ok_or_else(|| format!("Model {model} has no default version."))?;
            VersionName { model: model.clone(), version: default }
        }
    };
    let record = store.get_version(&version).await.map_err(|e| e.to_string())?;
    let record = record.ok_or_else(|| format!("Version {version} does not exist any more."))?;
    if record.state != VersionState::Ready {
        return Err(format!("Version {version} is {}, not READY.", record.state.as_str()));
    }
    record.artifact_dir.map(PathBuf::from).ok_or_else(|| format!("Version {version} has no model files."))
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn wildcards_match_runs_of_characters() {
        assert!(glob_match("*.json", "a.json"));
        assert!(glob_match("part-*", "part-00001"));
        assert!(glob_match("in-*-of-*.txt", "in-1-of-2.txt"));
        assert!(glob_match("exact.json", "exact.json"));
        assert!(!glob_match("*.json", "a.csv"));
        assert!(!glob_match("a*a", "a"));
        assert!(!glob_match("exact.json", "exact.jsonl"));
    }
}
