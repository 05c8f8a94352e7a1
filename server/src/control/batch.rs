//! Batch prediction jobs (`predictionInput`): check them into a plan and queue them; resolve
//! their model's files when they start. The executor runs them; `serving::batch` does the work.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::Control;
use crate::error::{Error, Result};
use crate::jobs::plan::{InputPattern, ModelSource};
use crate::jobs::wire::PredictionInput;
use crate::jobs::{JobPlan, Needs, PredictionPlan, Work};
use crate::names::{JobName, ModelName, ProjectId, VersionName};
use crate::serving::batch::InputFormat;
use crate::storage::{Location, Storage};
use crate::store::{JobInput, JobRecord, NewJob, Store, VersionState};

/// `maxWorkerCount` when not given, as in ML Engine.
const DEFAULT_MAX_WORKERS: i64 = 10;
/// `batchSize` when not given, as in ML Engine.
const DEFAULT_BATCH_SIZE: i64 = 64;

impl Control {
    /// Checks a batch prediction job into its plan (its model or version must exist) and queues
    /// it. It runs on `min(maxWorkerCount, training_slots)` worker threads, holding that many slots.
    pub async fn create_prediction_job(
        &self,
        name: &JobName,
        labels: BTreeMap<String, String>,
        input: PredictionInput,
    ) -> Result<JobRecord> {
        super::limits::check_labels("job.labels", &labels)?;
        let plan = self.plan_prediction(name, &input).await?;
        let new = NewJob { labels, input: JobInput::Prediction(input), plan, priority: 0 };
        let job = self.store.insert_job(name, &new).await?;
        self.wake_scheduler();
        Ok(job)
    }

    /// The plan of a batch job of `name`'s project, with the room it holds on this executor.
    pub(super) async fn plan_prediction(&self, name: &JobName, input: &PredictionInput) -> Result<JobPlan> {
        let capacity = self.executor.capacity();
        // Another project's place is refused before the plan's checks can say anything of it.
        let output = "job.predictionInput.outputPath";
        if let Ok(place) = self.storage.locate_output(&name.project, output, &input.output_path) {
            self.claim_output(&name.project, output, &input.output_path, &place).await?;
        }
        let mut plan = prediction_plan(&self.storage, &name.project, input, capacity.isolated)?;
        for (i, (pattern, uri)) in plan.inputs.iter().zip(&input.input_paths).enumerate() {
            let field = format!("job.predictionInput.inputPaths[{i}]");
            // Named as the storage checks name it: an object pattern, or a local one with a
            // wildcard, by its folder.
            let folder = uri.rsplit_once('/').map_or(uri.as_str(), |(parent, _)| parent);
            let shown =
                if matches!(pattern.dir, Location::Object(_)) || pattern.file.contains('*') { folder } else { uri };
            self.refuse_foreign(&name.project, &field, shown, &pattern.dir).await?;
        }
        if let (ModelSource::Dir { dir }, Some(uri)) = (&plan.model, &input.uri) {
            self.refuse_foreign(&name.project, "job.predictionInput.uri", uri, dir).await?;
        }

        match &plan.model {
            ModelSource::Model { model } => {
                let model = ModelName::new("job.predictionInput.modelName", name.project.as_str(), model)?;
                let record = self.get_model(&model).await?;
                if record.default_version.is_none() {
                    return Err(Error::FailedPrecondition(format!(
                        "Model {model} has no default version; create a version first or name one in versionName."
                    )));
                }
            }
            ModelSource::Version { model, version } => {
                let field = "job.predictionInput.versionName";
                let version = VersionName::new(field, name.project.as_str(), model, version)?;
                if self.get_version(&version).await?.serving.prediction_class.is_some() {
                    return Err(Error::invalid(field, ModelUnavailable::CustomRoutine(version).to_string()));
                }
            }
            ModelSource::Dir { dir } => self.storage.check_readable("job.predictionInput.uri", dir).await?,
        }
        plan.workers = plan.workers.min(capacity.slots).max(1);
        Ok(JobPlan::new(Needs { slots: plan.workers, gpus: 0 }, None, Work::Prediction(plan)))
    }
}

/// Checks a PredictionInput and resolves it into the plan the executor runs (URIs confined to what
/// `project` may name in the storage roots; models and versions of `project` only). `project` is
/// the job's, also for a bare model or version id. `isolated`: the server runs as root, so the
/// output folder must be one no replica can redirect ([`crate::executor::check_output_folder`]).
pub fn prediction_plan(
    storage: &Storage,
    project: &ProjectId,
    input: &PredictionInput,
    isolated: bool,
) -> Result<PredictionPlan> {
    let field = |f: &str| format!("job.predictionInput.{f}");
    let model = match (&input.model_name, &input.version_name, &input.uri) {
        (Some(model), None, None) => {
            ModelSource::Model { model: model_name(&field("modelName"), project, model)?.model }
        }
        (None, Some(version), None) => {
            let name = version_name(&field("versionName"), project, version)?;
            ModelSource::Version { model: name.model.model, version: name.version }
        }
        (None, None, Some(uri)) => {
            let dir = storage.locate(project, &field("uri"), uri)?;
            if let Location::Local(dir) = &dir {
                // The files loaded from it, which may be symlinks, must be ones the project may name.
                for file in [crate::serving::MODEL_FILE, crate::serving::SIGNATURE_FILE] {
                    storage.resolve_if_exists(project, &field("uri"), &dir.join(file).display().to_string())?;
                }
            }
            ModelSource::Dir { dir }
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
        Some("TF_RECORD") => InputFormat::TfRecord,
        Some("TF_RECORD_GZIP") => InputFormat::TfRecordGzip,
        None | Some("DATA_FORMAT_UNSPECIFIED") => {
            return Err(Error::invalid(
                field("dataFormat"),
                "dataFormat is required: JSON, TEXT, CSV, TF_RECORD or TF_RECORD_GZIP.",
            ))
        }
        Some(other) => {
            return Err(Error::invalid(
                field("dataFormat"),
                format!("Unknown data format '{other}'; use JSON, TEXT, CSV, TF_RECORD or TF_RECORD_GZIP."),
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
    for (uri, pattern) in input.input_paths.iter().zip(&inputs) {
        // A named file that exists now must be of the format (the first TFRecord header's CRC),
        // so a job over files of another format fails here rather than when it runs.
        let Location::Local(dir) = &pattern.dir else { continue };
        let path = dir.join(&pattern.file);
        if !pattern.file.contains('*') && path.is_file() && !format.admits(&path).unwrap_or(true) {
            let format = input.data_format.as_deref().unwrap_or_default();
            return Err(Error::invalid(
                field("dataFormat"),
                format!("{uri} is not a {format} file: it does not start with a TFRecord header."),
            ));
        }
    }
    if input.output_path.trim().is_empty() {
        return Err(Error::invalid(field("outputPath"), "outputPath is required: the folder for the predictions."));
    }
    let output = storage.locate_output(project, &field("outputPath"), &input.output_path)?;
    if isolated && output.as_local().is_some() {
        // Root writes the predictions: the folder, as the user named it, must be one no replica
        // can change (not inside a job dir), or a planted symlink would redirect root's writes.
        let given = crate::storage::local_path(&field("outputPath"), &input.output_path)?;
        crate::executor::check_output_folder(given).map_err(|e| Error::invalid(field("outputPath"), e.to_string()))?;
    }
    use super::limits::{count_in, MAX_BATCH_SIZE, MAX_PREDICTION_WORKERS};
    let max_workers = input.max_worker_count.unwrap_or(DEFAULT_MAX_WORKERS);
    count_in(&field("maxWorkerCount"), max_workers, 1, MAX_PREDICTION_WORKERS)?;
    let batch_size = input.batch_size.unwrap_or(DEFAULT_BATCH_SIZE);
    count_in(&field("batchSize"), batch_size, 1, MAX_BATCH_SIZE)?;
    let signature_name = input.signature_name.clone().filter(|name| !name.is_empty());
    if let (Some(name), ModelSource::Dir { dir: Location::Local(dir) }) = (&signature_name, &model) {
        // A TorchScript model has one signature; other models' are checked when the job runs.
        if name != "serving_default" && dir.join(crate::serving::MODEL_FILE).is_file() {
            return Err(Error::invalid(
                field("signatureName"),
                "A TorchScript model has one signature, serving_default.",
            ));
        }
    }
    Ok(PredictionPlan {
        model,
        format,
        inputs,
        output,
        output_path: input.output_path.clone(),
        workers: max_workers as usize,
        batch_size: batch_size as usize,
        signature_name,
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
fn input_pattern(storage: &Storage, project: &ProjectId, field: &str, uri: &str) -> Result<InputPattern> {
    let (parent, file) = match uri.rsplit_once('/') {
        Some((parent, file)) if !file.is_empty() => (parent, file),
        _ => {
            return Err(Error::invalid(field, format!("'{uri}' does not name a file (or a pattern like dir/*.json).")))
        }
    };
    if parent.contains('*') {
        return Err(Error::invalid(field, "Wildcards are allowed in the file name only."));
    }
    if crate::storage::ObjectUri::is_object(uri) {
        // Whether objects match is seen when the job runs, as for local files.
        let dir = storage.locate(project, field, parent)?;
        return Ok(InputPattern { dir, file: file.to_owned() });
    }
    let parent = if parent == "file://" || parent.is_empty() { "/" } else { parent };
    if !file.contains('*') {
        // A file the project may not name is refused now; whether it exists is seen when the job runs.
        storage.resolve_if_exists(project, field, uri)?;
    }
    let dir = storage.resolve_uri(project, field, parent)?;
    Ok(InputPattern { dir: Location::Local(dir), file: file.to_owned() })
}

/// The model directory a job's model source names right now: a READY version's files, or the
/// undeployed directory.
/// Why a batch job's model cannot run now; the job fails with this message.
#[derive(Debug, thiserror::Error)]
pub enum ModelUnavailable {
    #[error("Model {0} does not exist any more.")]
    ModelGone(ModelName),
    #[error("Model {0} has no default version.")]
    NoDefault(ModelName),
    #[error("Version {0} does not exist any more.")]
    VersionGone(VersionName),
    #[error("Version {0} is {1}, not READY.")]
    NotReady(VersionName, &'static str),
    #[error("Version {0} has no model files.")]
    NoFiles(VersionName),
    /// As on ML Engine, custom prediction routines serve online predictions only.
    #[error("Version {0} is a custom prediction routine (predictionClass), which serves online predictions only; batch prediction runs TensorFlow, scikit-learn, XGBoost and PyTorch models.")]
    CustomRoutine(VersionName),
    #[error(transparent)]
    Store(#[from] Error),
}

/// The model directory a job of `project` names right now: a READY version's files, or the
/// undeployed directory.
pub async fn resolve_model_dir(
    store: &Store,
    project: &ProjectId,
    source: &ModelSource,
) -> std::result::Result<Location, ModelUnavailable> {
    let field = "job.predictionInput.modelName";
    let version = match source {
        ModelSource::Dir { dir } => return Ok(dir.clone()),
        ModelSource::Version { model, version } => VersionName::new(field, project.as_str(), model, version)?,
        ModelSource::Model { model } => {
            let model = ModelName::new(field, project.as_str(), model)?;
            let record = store.get_model(&model).await?.ok_or_else(|| ModelUnavailable::ModelGone(model.clone()))?;
            let default = record.default_version.ok_or_else(|| ModelUnavailable::NoDefault(model.clone()))?;
            VersionName { model, version: default }
        }
    };
    let record = store.get_version(&version).await?.ok_or_else(|| ModelUnavailable::VersionGone(version.clone()))?;
    if record.state != VersionState::Ready {
        return Err(ModelUnavailable::NotReady(version, record.state.as_str()));
    }
    if record.serving.prediction_class.is_some() {
        return Err(ModelUnavailable::CustomRoutine(version));
    }
    // A version published in a bucket runs from there (the executor fetches it).
    let dir = record.artifact_dir.ok_or(ModelUnavailable::NoFiles(version))?;
    Ok(match crate::storage::ObjectUri::parse("artifact", &dir) {
        Ok(uri) if crate::storage::ObjectUri::is_object(&dir) => Location::Object(uri),
        _ => Location::Local(PathBuf::from(dir)),
    })
}
