//! `projects.jobs` (training jobs): create, get, list, patch (labels), cancel; and Anneal's
//! `jobs/{job}/logs`.

use std::collections::BTreeMap;

use axum::extract::{Extension, Path, State};
use std::convert::Infallible;

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::{Deserialize, Serialize};

use super::extract::{Body, Query};
use super::patch::{mask_paths, revision, PatchQuery};
use super::resources::{etag, time, ListQuery};
use super::Json;
use crate::auth::Identity;
use crate::control::Control;
use crate::error::Error;
use crate::executor::LogCursor;
use crate::jobs::wire::{Job, ListJobsResponse, LogLine, LogPage, PredictionInput, TrainingInput};
use crate::jobs::JobOutput;
use crate::names::{parse_resource_id, JobName, ProjectId};
use crate::store::{JobInput, JobRecord};

pub fn router() -> Router<Control> {
    Router::new()
        .route("/projects/{project}/jobs", get(list).post(create))
        .route("/projects/{project}/jobs/{job}", get(fetch).patch(patch))
        .route("/projects/{project}/jobs/{job}/@cancel", post(cancel))
        .route("/projects/{project}/jobs/{job}/logs", get(logs))
        .route("/projects/{project}/jobs/{job}/metrics", get(metrics))
}

/// The fields a client may send in a Job; output-only ones are accepted and ignored.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct JobBody {
    #[serde(default)]
    job_id: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    training_input: Option<TrainingInput>,
    prediction_input: Option<PredictionInput>,
    #[serde(flatten)]
    #[allow(dead_code)]
    output_only: OutputOnly,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
struct OutputOnly {
    state: Option<serde_json::Value>,
    error_message: Option<serde_json::Value>,
    create_time: Option<serde_json::Value>,
    start_time: Option<serde_json::Value>,
    end_time: Option<serde_json::Value>,
    job_position: Option<serde_json::Value>,
    node: Option<serde_json::Value>,
    training_output: Option<serde_json::Value>,
    prediction_output: Option<serde_json::Value>,
    etag: Option<serde_json::Value>,
}

/// The API's view of a stored job at `position` in the queue.
fn job_resource(record: JobRecord, position: i64) -> Job {
    let (training_input, prediction_input) = match record.input {
        JobInput::Training(input) => (Some(input), None),
        JobInput::Prediction(input) => (None, Some(input)),
    };
    let (training_output, prediction_output) = match record.output {
        JobOutput::Training(output) => (Some(output), None),
        JobOutput::Prediction(output) => (None, Some(output)),
    };
    Job {
        job_id: record.job,
        labels: record.labels,
        training_input,
        prediction_input,
        training_output,
        prediction_output,
        state: record.state,
        error_message: record.error_message,
        create_time: time(&record.create_time),
        start_time: record.start_time.as_ref().map(time),
        end_time: record.end_time.as_ref().map(time),
        job_position: position,
        etag: etag(record.revision),
        node: record.node,
    }
}

async fn create(
    State(control): State<Control>,
    Path(project): Path<String>,
    Body(body): Body<JobBody>,
) -> crate::Result<Json<Job>> {
    let project = ProjectId::parse("parent", &project)?;
    let job = parse_resource_id("job.jobId", "job", &body.job_id)?;
    let name = JobName { project, job };
    let record = match (body.training_input, body.prediction_input) {
        (Some(input), None) => control.create_job(&name, body.labels, input).await?,
        (None, Some(input)) => control.create_prediction_job(&name, body.labels, input).await?,
        _ => return Err(Error::invalid("job", "Exactly one of trainingInput and predictionInput is required.")),
    };
    let position = control.job_position(&record).await?;
    Ok(Json(job_resource(record, position)))
}

async fn fetch(
    State(control): State<Control>,
    Path((project, job)): Path<(String, String)>,
) -> crate::Result<Json<Job>> {
    let name = JobName::new("name", &project, &job)?;
    let record = control.get_job(&name).await?;
    let position = control.job_position(&record).await?;
    Ok(Json(job_resource(record, position)))
}

async fn list(
    State(control): State<Control>,
    Path(project): Path<String>,
    Query(query): Query<ListQuery>,
) -> crate::Result<Json<ListJobsResponse>> {
    let project = ProjectId::parse("parent", &project)?;
    let (page, filter) = query.parse()?;
    let page = control.list_jobs(&project, page, &filter).await?;
    let positions = control.job_positions(&page.jobs).await?;
    let jobs = page.jobs.into_iter().zip(positions).map(|(record, position)| job_resource(record, position)).collect();
    Ok(Json(ListJobsResponse { jobs, next_page_token: page.next_page_token }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JobPatch {
    #[serde(default)]
    labels: BTreeMap<String, String>,
    etag: Option<String>,
}

async fn patch(
    State(control): State<Control>,
    Path((project, job)): Path<(String, String)>,
    Query(query): Query<PatchQuery>,
    Body(body): Body<JobPatch>,
) -> crate::Result<Json<Job>> {
    let name = JobName::new("name", &project, &job)?;
    mask_paths(query.update_mask.as_deref(), &["labels"], &["etag"])?;
    let record = control.update_job_labels(&name, body.labels, revision(body.etag.as_deref())?).await?;
    let position = control.job_position(&record).await?;
    Ok(Json(job_resource(record, position)))
}

async fn cancel(
    State(control): State<Control>,
    Path((project, job)): Path<(String, String)>,
    // Read (and ignored: CancelJobRequest is empty) so the connection stays usable when a client
    // sends the body after the headers and the answer is an error.
    _body: axum::body::Bytes,
) -> crate::Result<Json<serde_json::Value>> {
    let name = JobName::new("name", &project, &job)?;
    control.cancel_job(&name).await?;
    Ok(Json(serde_json::json!({})))
}

#[derive(Deserialize)]
struct LogQuery {
    replica: Option<String>,
    #[serde(default)]
    offset: usize,
    limit: Option<usize>,
    /// Stream lines as server-sent events as they arrive, until the job ends.
    #[serde(default)]
    follow: bool,
}

async fn logs(
    State(control): State<Control>,
    Extension(caller): Extension<Identity>,
    Path((project, job)): Path<(String, String)>,
    Query(query): Query<LogQuery>,
) -> crate::Result<Response> {
    let name = JobName::new("name", &project, &job)?;
    if query.follow {
        control.get_job(&name).await?;
        let permit = control.log_follower(&caller.token_id, &project)?;
        return Ok(follow(control, name, query.replica, query.offset, permit).into_response());
    }
    let limit = query.limit.unwrap_or(1000).clamp(1, 10_000);
    let logs = control.job_logs(&name, query.replica, LogCursor::at_line(query.offset), limit).await?;
    let lines = logs.lines.into_iter().map(log_line).collect();
    Ok(Json(LogPage { lines, next_offset: logs.next.line }).into_response())
}

/// A log line as the API writes it.
fn log_line(line: crate::executor::LogLine) -> LogLine {
    LogLine { time: line.time, replica: line.replica, text: line.text }
}

/// How often a follower looks for new lines.
const FOLLOW_POLL: std::time::Duration = std::time::Duration::from_millis(100);

struct Following {
    control: Control,
    name: JobName,
    replica: Option<String>,
    cursor: LogCursor,
    pending: std::collections::VecDeque<crate::executor::LogLine>,
    /// Counts this stream against `max_log_followers` until it is dropped.
    _permit: crate::control::limits::Follower,
}

/// Server-sent events: one `line` event per log line (JSON `{time, replica, text}`), then an `end`
/// event once the job has ended and every line has been sent. Stops when the server shuts down.
fn follow(
    control: Control,
    name: JobName,
    replica: Option<String>,
    offset: usize,
    permit: crate::control::limits::Follower,
) -> Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>> {
    let state = Following {
        control,
        name,
        replica,
        cursor: LogCursor::at_line(offset),
        pending: Default::default(),
        _permit: permit,
    };
    let stream = futures_util::stream::unfold(Some(state), |state| async move {
        let mut state = state?;
        loop {
            if let Some(line) = state.pending.pop_front() {
                let event = Event::default().event("line").json_data(log_line(line)).unwrap_or_default();
                return Some((Ok(event), Some(state)));
            }
            let shutdown = state.control.shutdown_token();
            if shutdown.is_cancelled() {
                return None;
            }
            let read = state.control.job_logs(&state.name, state.replica.clone(), state.cursor, 1000).await;
            let Ok(logs) = read else { return None };
            state.cursor = logs.next;
            let lines = logs.lines;
            if lines.is_empty() {
                if logs.job_ended {
                    return Some((Ok(Event::default().event("end").data("the job has ended")), None));
                }
                tokio::select! {
                    () = tokio::time::sleep(FOLLOW_POLL) => {}
                    () = shutdown.cancelled() => return None,
                }
            }
            state.pending.extend(lines);
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

#[derive(Serialize)]
struct Series {
    tag: String,
    replica: String,
    points: Vec<Point>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Point {
    step: String,
    value: f64,
    time: String,
}

#[derive(Serialize)]
struct MetricsResponse {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    series: Vec<Series>,
}

/// Anneal's `jobs/{job}/metrics`: one time series per metric tag and replica.
async fn metrics(
    State(control): State<Control>,
    Path((project, job)): Path<(String, String)>,
) -> crate::Result<Json<MetricsResponse>> {
    let name = JobName::new("name", &project, &job)?;
    let series = control
        .job_metric_series(&name)
        .await?
        .into_iter()
        .map(|s| Series {
            tag: s.tag,
            replica: s.replica,
            points: s
                .points
                .into_iter()
                .map(|point| Point {
                    step: point.step.to_string(),
                    value: point.value,
                    time: chrono::DateTime::from_timestamp_millis((point.timestamp * 1000.0) as i64)
                        .map(|t| time(&t))
                        .unwrap_or_default(),
                })
                .collect(),
        })
        .collect();
    Ok(Json(MetricsResponse { series }))
}
