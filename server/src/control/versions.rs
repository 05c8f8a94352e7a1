//! Version use cases: create (copy the artifacts, load the model), get, list, delete, set
//! default; and reconciling versions left mid-change by a previous run.
//!
//! Create and delete are long-running: the request stores the version's new state and its
//! operation in one transaction and returns the operation; an owned background task does the work
//! and finishes both. A failed operation carries the error's API status
//! ([`super::operations::failure`]): a model that cannot be served says why, an internal failure
//! says nothing of itself.

use std::path::{Path, PathBuf};

use super::filter::{labels, Filter};
use super::operations::failure;
use super::paging::{filtered_page, PageRequest};
use super::Control;
use crate::error::{Error, Result};
use crate::names::{ModelName, VersionName};
use crate::serving::frameworks::{SCIKIT_LEARN, TENSORFLOW, XGBOOST};
use crate::serving::{VersionSettings, MODEL_FILE};
use crate::store::{
    version_not_found, NewVersion, OperationKind, OperationOutcome, OperationRecord, VersionRecord, VersionState,
};

/// The message of a version creation cancelled through its operation.
const CANCELLED: &str = "Cancelled by request: operations.cancel was called before the version was ready.";

/// Anneal's own framework: a TorchScript `model.pt`, served in process.
pub const PYTORCH: &str = crate::serving::frameworks::PYTORCH;

/// The most `packageUris` a version may name.
const MAX_PACKAGES: usize = 100;

/// What a patch changes; `None` leaves a field as it is.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Update {
    pub description: Option<String>,
    pub labels: Option<std::collections::BTreeMap<String, String>>,
    /// `defaultVersion.name` (models only).
    pub default_version: Option<String>,
    /// The revision the client's etag names; the change applies only at that revision.
    pub expected_revision: Option<i64>,
}

/// A page of versions.
pub struct VersionPage {
    pub versions: Vec<VersionRecord>,
    pub next_page_token: Option<String>,
}

impl Control {
    /// Validates the request, stores the CREATING version with its operation, and starts the work.
    pub async fn create_version(&self, name: &VersionName, mut new: NewVersion) -> Result<OperationRecord> {
        super::limits::check_labels("version.labels", &new.labels)?;
        if new.deployment_uri.is_empty() {
            return Err(Error::invalid(
                "version.deploymentUri",
                "A deploymentUri is required: the directory holding the model's files.",
            ));
        }
        let (source, download) = self.model_source(&name.model.project, &new.deployment_uri).await?;
        self.check_prediction_routine(&name.model.project, &mut new)?;
        for (i, (path, uri)) in new.serving.package_paths.iter().zip(&new.serving.package_uris).enumerate() {
            let package = crate::storage::Location::Local(path.into());
            self.refuse_foreign(&name.model.project, &format!("version.packageUris[{i}]"), uri, &package).await?;
        }
        new.framework = if new.serving.prediction_class.is_some() {
            routine_framework(&source, &new.framework)?
        } else {
            detect_framework(&source, &new.framework)?
        };
        new.serving.framework = new.framework.clone();
        new.serving.intra_op_threads = threads_for_machine_type(&new.machine_type)?;
        if let Some(workers) = new.serving.workers {
            if !(1..=MAX_WORKERS).contains(&workers) {
                return Err(Error::invalid(
                    "version.manualScaling.nodes",
                    format!("nodes is the number of worker threads serving the version: 1 to {MAX_WORKERS}."),
                ));
            }
        }
        let pending = OperationRecord::start(
            &name.model.project,
            OperationKind::CreateVersion,
            &format!("{}_{}", name.model.model, name.version),
            name.model.to_string(),
            None,
        );
        let version = self.store.insert_version(name, &new, &pending, self.node().id.as_str()).await?;
        let operation = OperationRecord { version: Some(version.clone()), labels: version.labels.clone(), ..pending };
        let control = self.clone();
        let (name, op) = (name.clone(), operation.clone());
        self.tasks.spawn("create-version", move |token| async move {
            tokio::select! {
                () = control.finish_create(&name, &source, &op) => {}
                () = token.cancelled() => tracing::info!(version.name = %name, "server stopping; version creation resumes as FAILED on restart"),
            }
            // The copy in storage is what the version serves; the download goes.
            drop(download);
        });
        Ok(operation)
    }

    /// Checks a custom prediction routine's `predictionClass` and resolves its `packageUris`.
    fn check_prediction_routine(&self, project: &crate::names::ProjectId, new: &mut NewVersion) -> Result<()> {
        let serving = &mut new.serving;
        super::limits::at_most("version.packageUris", &serving.package_uris, MAX_PACKAGES)?;
        let Some(class) = &serving.prediction_class else {
            if !serving.package_uris.is_empty() {
                return Err(Error::invalid(
                    "version.packageUris",
                    "packageUris are the packages of a custom prediction routine; set predictionClass too.",
                ));
            }
            return Ok(());
        };
        let valid = class.split('.').count() >= 2
            && class.split('.').all(|part| {
                part.chars().next().is_some_and(|c| c.is_alphabetic() || c == '_')
                    && part.chars().all(|c| c.is_alphanumeric() || c == '_')
            });
        if !valid || class.len() > 256 {
            return Err(Error::invalid(
                "version.predictionClass",
                format!("'{class}' is not of the form module.Class (a Python module path and a class name)."),
            ));
        }
        let mut paths = Vec::with_capacity(serving.package_uris.len());
        for (i, uri) in serving.package_uris.iter().enumerate() {
            let field = format!("version.packageUris[{i}]");
            let path = self.storage.resolve_uri(project, &field, uri)?;
            paths.push(path.to_string_lossy().into_owned());
        }
        serving.package_paths = paths;
        Ok(())
    }

    async fn finish_create(&self, name: &VersionName, source: &Path, op: &OperationRecord) {
        let settings = op.version.as_ref().map(settings).unwrap_or_default();
        let mut result = self.deploy(name, source, settings).await;
        if self.store.cancel_requested(&op.project, &op.id).await.unwrap_or(false) {
            if let Ok(dir) = &result {
                self.host.unload(&name.to_string());
                self.storage.remove_dir(dir);
            }
            result = Err(Error::FailedPrecondition(CANCELLED.to_owned()));
        }
        let outcome = match &result {
            Ok(dir) => match self
                .store
                .transition_version(
                    name,
                    VersionState::Creating,
                    VersionState::Ready,
                    None,
                    Some(&self.storage.stored_name(dir)),
                )
                .await
            {
                Ok(_) => self.version_outcome(name, op).await,
                Err(e) => failure(op, &e),
            },
            Err(error) => {
                // The version's errorMessage says what the operation says.
                let message = error.status().message;
                let _ = self
                    .store
                    .transition_version(name, VersionState::Creating, VersionState::Failed, Some(&message), None)
                    .await;
                failure(op, error)
            }
        };
        match &result {
            Ok(_) => tracing::info!(version.name = %name, "version READY"),
            Err(error) => tracing::warn!(version.name = %name, %error, "version FAILED"),
        }
        if let Err(e) = self.store.finish_operation(&op.project, &op.id, &outcome).await {
            tracing::error!(operation = %op.id, error = %e, "cannot record the end of an operation");
        }
    }

    /// Copies the model into storage and loads it. Returns the stored copy's directory.
    async fn deploy(&self, name: &VersionName, source: &Path, settings: VersionSettings) -> Result<PathBuf> {
        let storage = self.storage.clone();
        let relative = PathBuf::from("models").join(name.model.project.as_str()).join(&name.model.model).join(format!(
            "{}-{}",
            name.version,
            chrono::Utc::now().timestamp_micros()
        ));
        let (source, project) = (source.to_path_buf(), name.model.project.clone());
        let dir = tokio::task::spawn_blocking(move || storage.copy_into(&project, &source, &relative))
            .await
            .map_err(|e| Error::internal(format!("copying stopped unexpectedly: {e}")))??;
        if let Err(error) = self.host.load(&name.to_string(), &dir, settings).await.map(drop) {
            self.storage.remove_dir(&dir);
            return Err(error.into());
        }
        // With an artifacts URI, the copy goes to the bucket too, where every node finds it.
        if let Err(error) = self.storage.publish(&dir).await {
            self.host.unload(&name.to_string());
            self.storage.remove_dir(&dir);
            return Err(error.into());
        }
        Ok(dir)
    }

    async fn version_outcome(&self, name: &VersionName, op: &OperationRecord) -> OperationOutcome {
        match self.store.get_version(name).await {
            Ok(Some(version)) => OperationOutcome::Version { version: Box::new(version) },
            Ok(None) => {
                failure(op, &Error::not_found("name", format!("Version {name} was deleted while it was created.")))
            }
            Err(e) => failure(op, &e),
        }
    }

    /// The version, or NOT_FOUND.
    pub async fn get_version(&self, name: &VersionName) -> Result<VersionRecord> {
        self.store.get_version(name).await?.ok_or_else(|| version_not_found(name))
    }

    /// A page of the model's versions, ordered by name.
    pub async fn list_versions(&self, model: &ModelName, page: PageRequest, filter: &Filter) -> Result<VersionPage> {
        self.get_model(model).await?;
        let fetch = |after: Option<String>, limit| async move {
            self.store.list_versions(model, after.as_deref(), limit).await
        };
        let keep = |v: &VersionRecord| filter.matches(&version_fields(v));
        let (versions, next_page_token) = filtered_page(&page, keep, |v| &v.version, fetch).await?;
        Ok(VersionPage { versions, next_page_token })
    }

    /// Makes the version its model's default (synchronous). Only READY versions can be default.
    pub async fn set_default_version(&self, name: &VersionName) -> Result<VersionRecord> {
        let version = self.get_version(name).await?;
        if version.state != VersionState::Ready {
            return Err(Error::FailedPrecondition(format!(
                "Version {name} is {}; only a READY version can be the default.",
                version.state.as_str()
            )));
        }
        self.store.set_default_version(&name.model, &name.version).await?;
        self.defaults.changed(&name.model, &name.version);
        self.get_version(name).await
    }

    /// Changes a READY version's description or labels (`versions.patch`); returns the finished
    /// operation with the updated version.
    pub async fn update_version(&self, name: &VersionName, update: Update) -> Result<OperationRecord> {
        if let Some(labels) = &update.labels {
            super::limits::check_labels("version.labels", labels)?;
        }
        self.store
            .update_version(name, update.description.as_deref(), update.labels.as_ref(), update.expected_revision)
            .await?;
        let version = self.get_version(name).await?;
        let subject = format!("{}_{}", name.model.model, name.version);
        let outcome = OperationOutcome::Version { version: Box::new(version.clone()) };
        self.finished_operation(
            &name.model.project,
            OperationKind::UpdateVersion,
            &subject,
            name.model.to_string(),
            Some(version),
            outcome,
        )
        .await
    }

    /// Marks the version DELETING and starts removing it; returns the operation.
    pub async fn delete_version(&self, name: &VersionName) -> Result<OperationRecord> {
        let pending = OperationRecord::start(
            &name.model.project,
            OperationKind::DeleteVersion,
            &format!("{}_{}", name.model.model, name.version),
            name.model.to_string(),
            None,
        );
        let version = self.store.begin_version_delete(name, &pending).await?;
        let operation = OperationRecord { version: Some(version.clone()), labels: version.labels.clone(), ..pending };
        let control = self.clone();
        let (name, op) = (name.clone(), operation.clone());
        self.tasks
            .spawn("delete-version", move |_token| async move { control.finish_delete(&name, version, &op).await });
        Ok(operation)
    }

    async fn finish_delete(&self, name: &VersionName, version: VersionRecord, op: &OperationRecord) {
        self.host.unload(&name.to_string());
        if let Some(dir) = &version.artifact_dir {
            if let Err(error) = self.storage.remove_stored(dir).await {
                tracing::warn!(version.name = %name, %error, "cannot remove a deleted version's published files");
            }
        }
        let outcome = match self.store.remove_version(name).await {
            Ok(()) => OperationOutcome::Empty,
            Err(e) => failure(op, &e),
        };
        if let Err(e) = self.store.finish_operation(&op.project, &op.id, &outcome).await {
            tracing::error!(operation = %op.id, error = %e, "cannot record the end of an operation");
        }
    }

    /// Ends what a previous run left mid-way, before this run serves any request: versions left
    /// CREATING end FAILED, versions left DELETING are removed, and their operations are finished.
    /// Returns the READY versions, for [`Control::reload_versions`].
    ///
    /// This must finish before the server accepts requests: run later, it would take a version
    /// that a request of this run is creating for one that a previous run left behind.
    ///
    /// With other nodes live on the same database this node leaves versions and operations alone:
    /// what is mid-way may be another node's work in progress (versions do not record which node
    /// works on them yet); the next node that starts while no other is live recovers it.
    pub async fn recover_versions(&self) -> Result<Vec<VersionRecord>> {
        let others = self
            .store
            .live_nodes(chrono::Utc::now())
            .await?
            .into_iter()
            .filter(|n| n.node != self.node().id.as_str())
            .count();
        if others > 0 {
            tracing::info!(nodes = others, "other nodes are live: versions and operations mid-way are left to them");
            // This node's own, from before its restart, are nobody else's.
            let own = self.store.creations_of(self.node().id.as_str()).await?;
            self.fail_creations(own, "Interrupted by a restart of the node creating it").await?;
            return self.store.versions_in_state(VersionState::Ready).await;
        }
        let interrupted = "Interrupted by a server restart; create the version again.";
        for version in self.store.versions_in_state(VersionState::Creating).await? {
            let name = VersionName::new("name", &version.project, &version.model, &version.version)?;
            self.store
                .transition_version(&name, VersionState::Creating, VersionState::Failed, Some(interrupted), None)
                .await?;
        }
        for version in self.store.versions_in_state(VersionState::Deleting).await? {
            let name = VersionName::new("name", &version.project, &version.model, &version.version)?;
            self.store.remove_version(&name).await?;
        }
        for op in self.store.unfinished_operations().await? {
            let outcome = match op.kind {
                // Updates finish in the request that starts them; an unfinished one was cut short.
                OperationKind::CreateVersion | OperationKind::UpdateModel | OperationKind::UpdateVersion => {
                    failure(&op, &Error::Unavailable(interrupted.to_owned()))
                }
                OperationKind::DeleteVersion | OperationKind::DeleteModel => OperationOutcome::Empty,
            };
            self.store.finish_operation(&op.project, &op.id, &outcome).await?;
        }
        self.store.versions_in_state(VersionState::Ready).await
    }

    /// Fails `orphans`, versions left CREATING by the node named beside each (lost, or this node
    /// before its restart), and those nodes' unfinished create operations. `why` starts the
    /// message.
    pub(super) async fn fail_creations(&self, orphans: Vec<(VersionName, String)>, why: &str) -> Result<()> {
        let mut nodes = std::collections::BTreeSet::new();
        for (name, node) in orphans {
            let message = format!("{why} ({node}); create the version again.");
            if self
                .store
                .transition_version(&name, VersionState::Creating, VersionState::Failed, Some(&message), None)
                .await?
            {
                tracing::warn!(version.name = %name, node = %node, "failed a version its node left CREATING");
            }
            nodes.insert((node, message));
        }
        for (node, message) in nodes {
            for op in self.store.unfinished_operations_of(&node).await? {
                if op.kind == OperationKind::CreateVersion {
                    self.store
                        .finish_operation(&op.project, &op.id, &failure(&op, &Error::Unavailable(message.clone())))
                        .await?;
                }
            }
        }
        Ok(())
    }

    /// Follows the models the host gave up serving (Python workers that kept crashing): each
    /// one's version goes READY → FAILED with the last error. Runs until the server stops.
    pub fn watch_serving_failures(&self) {
        let Some(mut failures) = self.host.take_failures() else { return };
        let control = self.clone();
        self.tasks.spawn("serving-failures", move |token| async move {
            loop {
                let failure = tokio::select! {
                    failure = failures.recv() => failure,
                    () = token.cancelled() => None,
                };
                let Some(failure) = failure else { return };
                let parts: Vec<&str> = failure.key.split('/').collect();
                let ["projects", project, "models", model, "versions", version] = parts.as_slice() else { continue };
                let Ok(name) = VersionName::new("name", project, model, version) else { continue };
                tracing::warn!(version.name = %name, error = %failure.message, "version FAILED while serving");
                let message = format!("Serving stopped: {}", failure.message);
                if let Err(e) = control
                    .store
                    .transition_version(&name, VersionState::Ready, VersionState::Failed, Some(&message), None)
                    .await
                {
                    tracing::warn!(version.name = %name, error = %e, "cannot mark a version FAILED");
                }
            }
        });
    }

    /// Loads `versions` (READY at start) again, in the background of a running server. A version
    /// that cannot be loaded any more ends FAILED; one deleted meanwhile is not kept loaded.
    pub async fn reload_versions(&self, versions: Vec<VersionRecord>) -> Result<()> {
        for version in versions {
            let name = VersionName::new("name", &version.project, &version.model, &version.version)?;
            let loaded = match &version.artifact_dir {
                Some(dir) => match self.storage.local_copy(dir).await {
                    Ok(dir) => {
                        self.host.load(&name.to_string(), &dir, settings(&version)).await.map(drop).map_err(Error::from)
                    }
                    Err(e) => Err(Error::from(e)),
                },
                None => Err(Error::FailedPrecondition("the version has no stored model files".to_owned())),
            };
            match loaded {
                Ok(()) => {
                    let still_ready =
                        matches!(self.store.get_version(&name).await?, Some(v) if v.state == VersionState::Ready);
                    if still_ready {
                        tracing::info!(version.name = %name, "version loaded");
                    } else {
                        self.host.unload(&name.to_string());
                    }
                }
                Err(error) => {
                    tracing::warn!(version.name = %name, %error, "a READY version could not be loaded again");
                    let message = format!("Could not be loaded after a restart: {}", error.status().message);
                    self.store
                        .transition_version(&name, VersionState::Ready, VersionState::Failed, Some(&message), None)
                        .await?;
                }
            }
        }
        Ok(())
    }
}

/// The most worker threads one version may ask for.
const MAX_WORKERS: u32 = 16;

/// The serving settings a stored version asks for.
pub(super) fn settings(version: &VersionRecord) -> VersionSettings {
    let serving = &version.serving;
    VersionSettings {
        workers: serving.workers.map(|w| w as usize),
        intra_op_threads: serving.intra_op_threads.map(|t| t as i32),
        use_cuda: serving.accelerator_count > 0,
        framework: serving.framework.clone(),
        prediction_class: serving.prediction_class.clone(),
        packages: serving.package_paths.iter().map(PathBuf::from).collect(),
        project: version.project.clone(),
    }
}

/// The intra-op threads a machine type stands for: its vCPUs (`mls1-c4-m2` → 4,
/// `n1-standard-8` → 8). Empty: the server's default. Anything else is INVALID_ARGUMENT.
fn threads_for_machine_type(machine_type: &str) -> Result<Option<u32>> {
    if machine_type.is_empty() {
        return Ok(None);
    }
    let parts: Vec<&str> = machine_type.split('-').collect();
    let cpus = match parts.as_slice() {
        ["mls1", cores, _memory] => cores.strip_prefix('c').and_then(|c| c.parse::<u32>().ok()),
        [_family, _kind, cores] => cores.parse::<u32>().ok(),
        _ => None,
    };
    match cpus {
        Some(n) if (1..=64).contains(&n) => Ok(Some(n)),
        _ => Err(Error::invalid(
            "version.machineType",
            format!("Machine type '{machine_type}' is not known; use mls1-c<N>-m<M> or <family>-<kind>-<N> (e.g. n1-standard-4): N vCPUs become N libtorch threads."),
        )),
    }
}

/// The model files that stand for each framework (ML Engine's, and Anneal's `model.pt`).
const MODEL_FILES: [(&str, &str); 6] = [
    ("saved_model.pb", TENSORFLOW),
    ("saved_model.pbtxt", TENSORFLOW),
    ("model.joblib", SCIKIT_LEARN),
    ("model.pkl", SCIKIT_LEARN),
    ("model.bst", XGBOOST),
    (MODEL_FILE, PYTORCH),
];

/// Checks `framework`, or detects it from the files when it is not given (ML Engine's rules:
/// `saved_model.pb(txt)` is TENSORFLOW, `model.joblib`/`model.pkl` SCIKIT_LEARN, or XGBOOST when
/// the pickled object is an XGBoost model, `model.bst` XGBOOST; and Anneal's `model.pt`
/// PYTORCH). More than one model file is refused as ML Engine refuses it.
fn detect_framework(dir: &Path, framework: &str) -> Result<String> {
    let requested = framework.trim().to_ascii_uppercase().replace('-', "_");
    let found: Vec<(&str, &str)> = MODEL_FILES.iter().copied().filter(|(file, _)| dir.join(file).is_file()).collect();
    let names = |files: &[(&str, &str)]| files.iter().map(|(f, _)| *f).collect::<Vec<_>>().join(", ");
    match requested.as_str() {
        "" | "FRAMEWORK_UNSPECIFIED" => {}
        PYTORCH | TENSORFLOW | SCIKIT_LEARN | XGBOOST => {
            let wanted: Vec<&str> = MODEL_FILES
                .iter()
                .filter(|(file, kind)| {
                    *kind == requested || (requested == XGBOOST && file.starts_with("model.") && *kind == SCIKIT_LEARN)
                })
                .map(|(file, _)| *file)
                .collect();
            if found.iter().any(|(file, _)| wanted.contains(file)) {
                return Ok(requested);
            }
            let holds = match found.as_slice() {
                [] => String::new(),
                [(file, kind)] => format!("; it holds {file} (a {kind} model)"),
                files => format!("; it holds {}", names(files)),
            };
            return Err(Error::invalid(
                "version.framework",
                format!("Framework {requested} needs {} in the deployment directory{holds}.", wanted.join(" or ")),
            ));
        }
        other => {
            return Err(Error::invalid(
                "version.framework",
                format!(
                    "Framework {other} is not supported; Anneal serves TENSORFLOW, SCIKIT_LEARN, XGBOOST and PYTORCH."
                ),
            ))
        }
    }
    // A SavedModel directory may hold both saved_model.pb and .pbtxt only as one model.
    let kinds: Vec<(&str, &str)> = {
        let mut kinds = found.clone();
        kinds.dedup_by(|a, b| a.1 == TENSORFLOW && b.1 == TENSORFLOW);
        kinds
    };
    match kinds.as_slice() {
        [] => Err(Error::invalid(
            "version.deploymentUri",
            format!(
                "The deployment directory holds no model file; looked for {} (or set predictionClass for a custom prediction routine).",
                MODEL_FILES.iter().map(|(f, _)| *f).collect::<Vec<_>>().join(", ")
            ),
        )),
        [(file, SCIKIT_LEARN)] if pickles_xgboost(&dir.join(file)) => Ok(XGBOOST.to_owned()),
        [(_, kind)] => Ok((*kind).to_owned()),
        files => Err(Error::invalid(
            "version.deploymentUri",
            format!("Multiple model files are found in the model_path: {}; keep one.", names(files)),
        )),
    }
}

/// The framework recorded for a custom prediction routine: the one the client names (checked
/// by name only: the routine loads its own files), else the one its model files stand for, if
/// exactly one does.
fn routine_framework(dir: &Path, framework: &str) -> Result<String> {
    let requested = framework.trim().to_ascii_uppercase().replace('-', "_");
    match requested.as_str() {
        "" | "FRAMEWORK_UNSPECIFIED" => Ok(detect_framework(dir, "").unwrap_or_default()),
        PYTORCH | TENSORFLOW | SCIKIT_LEARN | XGBOOST => Ok(requested),
        _ => detect_framework(dir, &requested),
    }
}

/// Whether a pickle (or an uncompressed joblib file) names the `xgboost` module among its first
/// bytes, where the pickled object's class is recorded. A compressed joblib file reads as not:
/// it is served as SCIKIT_LEARN, whose worker serves an XGBoost object all the same.
fn pickles_xgboost(file: &Path) -> bool {
    use std::io::Read;
    let mut head = Vec::with_capacity(64 * 1024);
    let read = std::fs::File::open(file).and_then(|f| f.take(64 * 1024).read_to_end(&mut head));
    read.is_ok() && head.windows(8).any(|w| w == b"xgboost.")
}

/// The fields a list filter can name on a version.
fn version_fields(v: &VersionRecord) -> Vec<(String, String)> {
    let mut fields = vec![
        ("name".to_owned(), v.version.clone()),
        ("name".to_owned(), format!("projects/{}/models/{}/versions/{}", v.project, v.model, v.version)),
        ("state".to_owned(), v.state.as_str().to_owned()),
        ("framework".to_owned(), v.framework.clone()),
        ("description".to_owned(), v.description.clone()),
        ("runtimeVersion".to_owned(), v.runtime_version.clone()),
        ("isDefault".to_owned(), v.is_default.to_string()),
    ];
    fields.extend(labels(&v.labels));
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_types_become_thread_counts() {
        assert_eq!(threads_for_machine_type("").expect("empty"), None);
        assert_eq!(threads_for_machine_type("mls1-c1-m2").expect("mls1"), Some(1));
        assert_eq!(threads_for_machine_type("mls1-c4-m2").expect("mls1"), Some(4));
        assert_eq!(threads_for_machine_type("n1-standard-8").expect("n1"), Some(8));
        for bad in ["big", "n1-standard-x", "mls1-4-m2", "n1-standard-0"] {
            let err = threads_for_machine_type(bad).expect_err(bad);
            assert!(matches!(&err, Error::InvalidArgument(v) if v.field == "version.machineType"), "{bad}: {err}");
        }
    }
}

/// A model folder downloaded from a bucket for a version being created, removed (on a blocking
/// thread) when dropped: once the version's own copy is made, or when the request fails.
struct Download(Option<PathBuf>);

impl Drop for Download {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take() {
            let remove = move || {
                let _ = std::fs::remove_dir_all(&dir);
            };
            match tokio::runtime::Handle::try_current() {
                Ok(handle) => drop(handle.spawn_blocking(remove)),
                Err(_) => remove(),
            }
        }
    }
}

impl Control {
    /// The local folder a version's `deploymentUri` names: a folder inside the storage roots as
    /// it is, or the objects under an `s3://` URI downloaded into `storage/cache/<project>/` (ML
    /// Engine's models are small: its own limit was 250 MB on its legacy machine types).
    async fn model_source(&self, project: &crate::names::ProjectId, uri: &str) -> Result<(PathBuf, Download)> {
        let field = "version.deploymentUri";
        let located = self.storage.locate(project, field, uri)?;
        self.refuse_foreign(project, field, uri, &located).await?;
        let object = match located {
            crate::storage::Location::Local(dir) => return Ok((dir, Download(None))),
            crate::storage::Location::Object(object) => object,
        };
        let dest = self
            .storage
            .root()
            .join("cache")
            .join(project.as_str())
            .join(format!("download-{}", chrono::Utc::now().timestamp_micros()));
        let download = Download(Some(dest.clone()));
        match self.storage.fetch(&object, &dest, true).await {
            Ok(dir) => Ok((dir, download)),
            Err(crate::storage::ObjectError::NotFound(_)) => {
                Err(Error::invalid(field, format!("'{uri}' does not exist (no objects under it)")))
            }
            Err(e) => Err(e.into()),
        }
    }
}

impl Control {
    /// The local folder of a version's stored files (fetched from the artifacts bucket when this
    /// node has no copy).
    pub async fn version_files(&self, artifact_dir: &str) -> Result<PathBuf> {
        Ok(self.storage.local_copy(artifact_dir).await?)
    }
}
