//! The REST client the CLI verbs use: one endpoint and project, JSON in and out, and the API's
//! error envelope turned into one line.

use std::time::Duration;

use serde_json::Value;

/// Why a call failed, as one line for the terminal.
#[derive(Debug)]
pub struct ClientError(pub String);

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

pub type Result<T> = std::result::Result<T, ClientError>;

/// A connection to one Anneal server, for one project.
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    endpoint: String,
    pub project: String,
}

impl Client {
    /// A client for `project` at `endpoint`, sending `token` as a bearer token when given.
    pub fn new(endpoint: &str, project: &str, token: Option<&str>) -> Result<Self> {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = token {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| ClientError("the token has characters a header cannot carry".into()))?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| ClientError(format!("cannot create an HTTP client: {e}")))?;
        Ok(Self { http, endpoint: endpoint.trim_end_matches('/').to_owned(), project: project.to_owned() })
    }

    /// `/v1/projects/{project}{rest}`.
    pub fn url(&self, rest: &str) -> String {
        format!("{}/v1/projects/{}{rest}", self.endpoint, self.project)
    }

    /// `GET /v1{path}` (outside the project).
    pub async fn get_v1(&self, path: &str) -> Result<Value> {
        self.send(self.http.get(format!("{}/v1{path}", self.endpoint))).await
    }

    /// `POST /v1{path}` (outside the project).
    pub async fn post_v1(&self, path: &str, body: &Value) -> Result<Value> {
        self.send(self.http.post(format!("{}/v1{path}", self.endpoint)).json(body)).await
    }

    /// `DELETE /v1{path}` (outside the project).
    pub async fn delete_v1(&self, path: &str) -> Result<Value> {
        self.send(self.http.delete(format!("{}/v1{path}", self.endpoint))).await
    }

    pub async fn get(&self, rest: &str) -> Result<Value> {
        self.send(self.http.get(self.url(rest))).await
    }

    pub async fn post(&self, rest: &str, body: &Value) -> Result<Value> {
        self.send(self.http.post(self.url(rest)).json(body)).await
    }

    pub async fn delete(&self, rest: &str) -> Result<Value> {
        self.send(self.http.delete(self.url(rest))).await
    }

    /// `PUT` of raw bytes (an uploaded file).
    pub async fn put_bytes(&self, rest: &str, body: reqwest::Body) -> Result<Value> {
        self.send(self.http.put(self.url(rest)).body(body)).await
    }

    /// A streaming `GET` (server-sent events).
    pub async fn stream(&self, rest: &str) -> Result<reqwest::Response> {
        let response = self.http.get(self.url(rest)).send().await.map_err(|e| self.unreachable(e))?;
        if response.status().is_success() {
            Ok(response)
        } else {
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            Err(api_error(status, &body))
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Value> {
        let response = request.send().await.map_err(|e| self.unreachable(e))?;
        let status = response.status().as_u16();
        let text = response.text().await.map_err(|e| ClientError(format!("cannot read the answer: {e}")))?;
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if (200..300).contains(&status) {
            Ok(body)
        } else {
            Err(api_error(status, &body))
        }
    }

    fn unreachable(&self, error: reqwest::Error) -> ClientError {
        // The innermost cause says it best ("Connection refused").
        let mut cause: &dyn std::error::Error = &error;
        while let Some(source) = cause.source() {
            cause = source;
        }
        ClientError(format!(
            "cannot reach Anneal at {}: {cause} (start it with `anneal serve`, or set --endpoint)",
            self.endpoint
        ))
    }
}

/// The API's error envelope (or a predict error body) as one line: `message (STATUS)`.
fn api_error(status: u16, body: &Value) -> ClientError {
    let error = &body["error"];
    let message =
        error["message"].as_str().or_else(|| error.as_str()).or_else(|| body.as_str()).unwrap_or("request failed");
    let code = error["status"].as_str().map_or_else(|| format!("HTTP {status}"), str::to_owned);
    ClientError(format!("{} ({code})", message.lines().next().unwrap_or(message)))
}
