//! A client of Ray's Jobs REST API (the head's dashboard): upload a working-directory package,
//! submit a job under a chosen `submission_id`, read its status and log, stop it. With token
//! authentication on the head (`RAY_AUTH_MODE=token`), every request carries the token as
//! `Authorization: Bearer`.

use std::time::Duration;

use serde::Deserialize;

/// How long one request to the head may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A failed request to the Ray head. The text of each is written for the job's owner or the
/// operator (it may end a job as its `errorMessage`).
#[derive(Debug, thiserror::Error)]
pub enum RayError {
    /// The head did not answer (down, restarting, or not at this address).
    #[error("cannot reach the Ray head at {address}: {source}")]
    Unreachable {
        address: String,
        #[source]
        source: reqwest::Error,
    },
    /// The head refused the token (or needs one and none is configured).
    #[error("the Ray head at {address} refused Anneal's credentials (HTTP {status}): set ray_token to the cluster's RAY_AUTH_TOKEN")]
    Unauthorized { address: String, status: u16 },
    /// The head answered with an error.
    #[error("the Ray head answered HTTP {status} to {what}: {text}")]
    Status { what: &'static str, status: u16, text: String },
    /// The head's answer is not what the Jobs API returns.
    #[error("the Ray head's answer to {what} cannot be read: {source}")]
    Unreadable {
        what: &'static str,
        #[source]
        source: reqwest::Error,
    },
}

impl RayError {
    /// Whether the head could not be reached at all (as opposed to answering with an error).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Unreachable { .. })
    }
}

/// A Ray job's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum RayStatus {
    Pending,
    Running,
    Stopped,
    Succeeded,
    Failed,
}

impl RayStatus {
    /// Whether the job is over.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Stopped | Self::Succeeded | Self::Failed)
    }
}

/// What the head says about a job.
#[derive(Clone, Debug, Deserialize)]
pub struct RayJob {
    pub status: RayStatus,
    #[serde(default)]
    pub message: Option<String>,
}

/// Whether a submission started a job or found one under its `submission_id`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Submitted {
    New,
    Existing,
}

/// The head's Jobs API.
#[derive(Clone, Debug)]
pub struct RayClient {
    http: reqwest::Client,
    address: String,
    token: Option<String>,
}

impl RayClient {
    /// A client of the head at `address` (`http://HOST:PORT`, its dashboard).
    pub fn new(address: &str, token: Option<String>) -> Self {
        let http = reqwest::Client::builder().timeout(REQUEST_TIMEOUT).build().unwrap_or_default();
        Self { http, address: address.trim_end_matches('/').to_owned(), token: token.filter(|t| !t.is_empty()) }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.address));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response, RayError> {
        let response =
            request.send().await.map_err(|source| RayError::Unreachable { address: self.address.clone(), source })?;
        let status = response.status().as_u16();
        if status == 401 || status == 403 {
            return Err(RayError::Unauthorized { address: self.address.clone(), status });
        }
        Ok(response)
    }

    async fn error(what: &'static str, response: reqwest::Response) -> RayError {
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        // Ray answers errors with a Python traceback: its last line says what went wrong.
        let text = text.trim().lines().last().unwrap_or_default().chars().take(500).collect();
        RayError::Status { what, status, text }
    }

    /// Uploads a working-directory zip as `gcs://<name>` (`name` is `_ray_pkg_<hash>.zip`).
    pub async fn upload_package(&self, name: &str, zip: Vec<u8>) -> Result<(), RayError> {
        let what = "a package upload";
        let request = self.request(reqwest::Method::PUT, &format!("/api/packages/gcs/{name}")).body(zip);
        let response = self.send(request).await?;
        if response.status().is_success() {
            return Ok(());
        }
        Err(Self::error(what, response).await)
    }

    /// Submits a job; a job already under `submission_id` is not started again.
    pub async fn submit(&self, body: &serde_json::Value, submission_id: &str) -> Result<Submitted, RayError> {
        let what = "a job submission";
        let response = self.send(self.request(reqwest::Method::POST, "/api/jobs/").json(body)).await?;
        if response.status().is_success() {
            return Ok(Submitted::New);
        }
        let error = Self::error(what, response).await;
        // A duplicate submission_id is a 500 with a traceback: ask for the job itself.
        if self.job(submission_id).await?.is_some() {
            return Ok(Submitted::Existing);
        }
        Err(error)
    }

    /// The job's status, or `None` when the head does not know it.
    pub async fn job(&self, submission_id: &str) -> Result<Option<RayJob>, RayError> {
        let what = "a job status request";
        let response = self.send(self.request(reqwest::Method::GET, &format!("/api/jobs/{submission_id}"))).await?;
        if response.status().as_u16() == 404 {
            return Ok(None);
        }
        if !response.status().is_success() {
            return Err(Self::error(what, response).await);
        }
        response.json().await.map(Some).map_err(|source| RayError::Unreadable { what, source })
    }

    /// The job's whole log (the driver's output) so far.
    pub async fn logs(&self, submission_id: &str) -> Result<String, RayError> {
        #[derive(Deserialize)]
        struct Logs {
            logs: String,
        }
        let what = "a job log request";
        let path = format!("/api/jobs/{submission_id}/logs");
        let response = self.send(self.request(reqwest::Method::GET, &path)).await?;
        if !response.status().is_success() {
            return Err(Self::error(what, response).await);
        }
        response.json::<Logs>().await.map(|l| l.logs).map_err(|source| RayError::Unreadable { what, source })
    }

    /// Asks Ray to stop the job (SIGTERM to its driver, which stops the replicas). Stopping a
    /// job that is over or unknown is not an error.
    pub async fn stop(&self, submission_id: &str) -> Result<(), RayError> {
        let what = "a job stop request";
        let path = format!("/api/jobs/{submission_id}/stop");
        let response = self.send(self.request(reqwest::Method::POST, &path)).await?;
        if response.status().is_success() || response.status().as_u16() == 404 {
            return Ok(());
        }
        Err(Self::error(what, response).await)
    }
}
