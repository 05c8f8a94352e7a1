//! A job's page: inputs, timeline, replicas, live logs, live metric charts, outputs, cancel, and
//! "Deploy as version" for a finished training job.

use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::hooks::use_navigate;
use serde_json::json;

use crate::api::{api_get, api_read, api_send, job_charts, Chart};
use crate::components::{
    duration, labels_line, short_time, use_param, use_project, use_ticker, ErrorNotice, PageHeading, StateBadge,
};
use crate::jobs::{HyperparameterOutput, Job, JobState, LogLine, LogPage, TrainingInput};

/// The job page; live parts refresh while the job is active.
#[component]
pub fn JobPage() -> impl IntoView {
    let project = use_project();
    let job_id = use_param("job");
    let active = RwSignal::new(true);
    let tick = use_ticker(1000, move || active.get_untracked());
    let job = Resource::new(
        move || (project.get(), job_id.get(), tick.get()),
        |(project, job, _)| api_read::<Job>(format!("/projects/{project}/jobs/{job}")),
    );
    let training = Resource::new(
        move || (project.get(), job_id.get()),
        |(project, job)| async move {
            api_read::<Job>(format!("/projects/{project}/jobs/{job}")).await.map(|job| job.is_training())
        },
    );
    // The live sections' first data is read here, with the page, so the server renders it before
    // it answers (a resource made inside them could be read after the page was sent).
    // Charts: every second tick while active; once more after the job ends.
    let charts = Resource::new(
        move || (project.get(), job_id.get(), tick.get() / 2, active.get()),
        |(project, job, _, _)| job_charts(project, job),
    );
    let first_logs = Resource::new(
        move || (project.get(), job_id.get()),
        |(project, job)| api_read::<LogPage>(format!("/projects/{project}/jobs/{job}/logs?limit=5000")),
    );
    view! {
        <PageHeading title=move || format!("Job {}", job_id.get())/>
        <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || job.get().map(|result| match result {
                Ok(job) => {
                    active.set(!job.state.is_final());
                    view! { <JobSummary job/> }.into_any()
                }
                Err(message) => view! { <ErrorNotice message/> }.into_any(),
            })}
        </Transition>
        // Read once (not on every refresh), inside Suspense, so the server renders these sections
        // exactly as the browser hydrates them and the live parts keep their state.
        <Suspense fallback=|| ()>
            {move || training.get().map(|result| (result == Ok(true)).then(|| {
                let (project, job) = (project.get_untracked(), job_id.get_untracked());
                view! {
                    <section class="panel" aria-label="Metrics">
                        <h2>"Metrics"</h2>
                        <Charts charts/>
                    </section>
                    <section class="panel" aria-label="Logs">
                        <h2>"Logs"</h2>
                        <LogViewer project job active first=first_logs/>
                    </section>
                }
            }))}
        </Suspense>
    }
}

#[component]
fn JobSummary(job: Job) -> impl IntoView {
    let project = use_project();
    let state = job.state;
    let training = job.is_training();
    let input = match (&job.training_input, &job.prediction_input) {
        (Some(input), _) => serde_json::to_string_pretty(input),
        (None, input) => serde_json::to_string_pretty(input),
    };
    let output = match (&job.training_output, &job.prediction_output) {
        (Some(output), _) => serde_json::to_string_pretty(output),
        (None, output) => serde_json::to_string_pretty(output),
    };
    let end_or_now = job.end_time.clone().unwrap_or_default();
    let start = job.start_time.clone().unwrap_or_default();
    let replicas = job.training_input.as_ref().map(replicas).unwrap_or_default();
    let job_dir = job.training_input.as_ref().and_then(|input| input.job_dir.clone()).unwrap_or_default();
    let deployable = training && state == JobState::Succeeded && !job_dir.is_empty();
    let trials = job.training_output.as_ref().map(|output| output.trials.clone()).unwrap_or_default();
    let error_message = job.error_message.clone().filter(|m| !m.is_empty());
    let id = job.job_id;
    view! {
        <div class="summary">
            <p class="state-line">
                <StateBadge state=state.as_str()/>
                {(job.job_position != 0).then(|| view! {
                    <span class="muted">{format!(" position {} in the queue", job.job_position)}</span>
                })}
                {(!state.is_final()).then(|| view! { <CancelButton project=project.get_untracked() job=id.clone()/> })}
            </p>
            {error_message.map(|message| view! { <pre class="error-message" role="alert">{message}</pre> })}
            <dl class="facts wide" data-testid="timeline">
                <dt>"Type"</dt><dd>{if training { "training" } else { "batch prediction" }}</dd>
                <dt>"Created"</dt><dd>{short_time(&job.create_time)}</dd>
                <dt>"Started"</dt><dd>{short_time(&start)}</dd>
                <dt>"Ended"</dt><dd>{short_time(&end_or_now)}</dd>
                <dt>"Duration"</dt><dd>{duration(&start, &end_or_now)}</dd>
                <dt>"Labels"</dt><dd>{labels_line(&job.labels)}</dd>
                {job.node.clone().map(|node| view! { <dt>"Node"</dt><dd data-testid="node">{node}</dd> })}
            </dl>
            <div class="two-columns">
                <section aria-label="Inputs">
                    <h2>"Inputs"</h2>
                    <pre class="json" data-testid="job-input">{input.unwrap_or_default()}</pre>
                </section>
                <section aria-label="Output">
                    <h2>{if training { "Training output" } else { "Prediction output" }}</h2>
                    <pre class="json" data-testid="job-output">{output.unwrap_or_default()}</pre>
                    {(!replicas.is_empty()).then(|| view! {
                        <h2>"Replicas"</h2>
                        <ul class="replicas">
                            {replicas.into_iter().map(|r| view! { <li><code>{r}</code> " " <StateBadge state=state.as_str()/></li> }).collect_view()}
                        </ul>
                    })}
                </section>
            </div>
            {(!trials.is_empty()).then(|| view! {
                <section class="panel" aria-label="Trials">
                    <h2>"Trials"</h2>
                    <TrialsTable trials/>
                </section>
            })}
            {deployable.then(|| view! { <DeployForm job=id.clone() job_dir=job_dir.clone()/> })}
        </div>
    }
}

/// How the trials table is ordered.
#[derive(Clone, Copy, PartialEq, Eq)]
enum TrialOrder {
    /// Best first, as the API orders them.
    Objective,
    /// By trial number.
    Trial,
}

/// A tuning job's trials: best first as the API orders them (the best row highlighted); the
/// headers sort by trial number or objective.
#[component]
fn TrialsTable(trials: Vec<HyperparameterOutput>) -> impl IntoView {
    let best = trials.first().filter(|t| t.final_metric.is_some()).map(|t| t.trial_id.clone());
    let order = RwSignal::new(TrialOrder::Objective);
    let rows = move || {
        let mut rows = trials.clone();
        if order.get() == TrialOrder::Trial {
            rows.sort_by_key(HyperparameterOutput::number);
        }
        rows.into_iter()
            .map(|t| {
                let values = t.hyperparameters.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ");
                let class = if best.as_ref() == Some(&t.trial_id) { "best" } else { "" };
                // The objective as the API writes it (JSON's shortest form: `0.25`, `1.0`).
                let objective =
                    t.final_metric.map(|m| serde_json::to_string(&m.objective_value).unwrap_or_default()).unwrap_or_default();
                let step = t.final_metric.map(|m| m.training_step.to_string()).unwrap_or_default();
                let took = duration(&t.start_time, t.end_time.as_deref().unwrap_or(""));
                view! {
                    <tr class=class>
                        <td>{t.trial_id}</td>
                        <td class="labels">{values}</td>
                        <td>{objective}</td>
                        <td>{step}</td>
                        <td><StateBadge state=t.state.as_str()/> {t.is_trial_stopped_early.then_some(" stopped early")}</td>
                        <td>{took}</td>
                    </tr>
                }
            })
            .collect_view()
    };
    view! {
        <table class="table" data-testid="trials-table">
            <thead><tr>
                <th><button class="sort" type="button" on:click=move |_| order.set(TrialOrder::Trial)>"Trial"</button></th>
                <th>"Hyperparameters"</th>
                <th><button class="sort" type="button" on:click=move |_| order.set(TrialOrder::Objective)>"Objective"</button></th>
                <th>"Step"</th><th>"State"</th><th>"Duration"</th>
            </tr></thead>
            <tbody>{rows}</tbody>
        </table>
    }
}

/// Replica names of a training input (master first).
fn replicas(input: &TrainingInput) -> Vec<String> {
    let count = |n: Option<i64>| n.and_then(|n| u32::try_from(n).ok()).unwrap_or(0);
    let (workers, ps) = match input.scale_tier.as_deref() {
        Some("CUSTOM") => (count(input.worker_count), count(input.parameter_server_count)),
        Some("STANDARD_1") => (4, 3),
        Some("PREMIUM_1") => (19, 11),
        _ => (0, 0),
    };
    let mut all = vec!["master-replica-0".to_owned()];
    all.extend((0..workers).map(|i| format!("worker-replica-{i}")));
    all.extend((0..ps).map(|i| format!("ps-replica-{i}")));
    all
}

/// Cancel, after a confirmation step.
#[component]
fn CancelButton(project: String, job: String) -> impl IntoView {
    let confirming = RwSignal::new(false);
    let error = RwSignal::new(None::<String>);
    let cancel = move |_| {
        let path = format!("/projects/{project}/jobs/{job}:cancel");
        spawn_local(async move {
            match api_send("POST".into(), path, Some("{}".into())).await {
                Ok(Ok(_)) => confirming.set(false),
                Ok(Err(e)) => error.set(Some(e.to_string())),
                Err(e) => error.set(Some(e.to_string())),
            }
        });
    };
    view! {
        <span class="cancel">
            <Show when=move || confirming.get() fallback=move || view! {
                <button class="button small danger" type="button" on:click=move |_| confirming.set(true)>"Cancel job"</button>
            }>
                <span class="confirm">"Stop every replica? "
                    <button class="button small danger" type="button" on:click=cancel.clone()>"Yes, cancel"</button>
                    <button class="button small" type="button" on:click=move |_| confirming.set(false)>"Keep running"</button>
                </span>
            </Show>
            {move || error.get().map(|m| view! { <ErrorNotice message=m/> })}
        </span>
    }
}

/// Creates a version from the job's exported model (`<jobDir>/model`), creating the model first
/// when it does not exist.
#[component]
fn DeployForm(job: String, job_dir: String) -> impl IntoView {
    let project = use_project();
    let navigate = use_navigate();
    let model = RwSignal::new(job.split('_').next().unwrap_or("model").to_owned());
    let version = RwSignal::new("v1".to_owned());
    let error = RwSignal::new(None::<String>);
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let (project, model, version) = (project.get_untracked(), model.get_untracked(), version.get_untracked());
        let uri = format!("{}/model", job_dir.trim_end_matches('/'));
        let navigate = navigate.clone();
        spawn_local(async move {
            let models = format!("/projects/{project}/models");
            if let Ok(Err(e)) = api_get(format!("{models}/{model}")).await {
                if e.code == 404 {
                    if let Ok(Err(e)) =
                        api_send("POST".into(), models.clone(), Some(json!({"name": model}).to_string())).await
                    {
                        return error.set(Some(e.to_string()));
                    }
                }
            }
            let body = json!({"name": version, "deploymentUri": uri, "framework": "PYTORCH"});
            match api_send("POST".into(), format!("{models}/{model}/versions"), Some(body.to_string())).await {
                Ok(Ok(_)) => navigate(&format!("{models}/{model}/versions/{version}"), Default::default()),
                Ok(Err(e)) => error.set(Some(e.to_string())),
                Err(e) => error.set(Some(e.to_string())),
            }
        });
    };
    view! {
        <section class="panel" aria-label="Deploy">
            <h2>"Deploy as version"</h2>
            <form class="form inline" on:submit=submit>
                <label>"Model" <input name="model" bind:value=model/></label>
                <label>"Version" <input name="version" bind:value=version/></label>
                <button class="button primary" type="submit">"Deploy"</button>
            </form>
            {move || error.get().map(|m| view! { <ErrorNotice message=m/> })}
        </section>
    }
}

/// One chart per metric tag, redrawn while the job runs.
#[component]
fn Charts(charts: Resource<Result<Vec<Chart>, ServerFnError>>) -> impl IntoView {
    view! {
        <Transition fallback=|| view! { <p class="muted">"Loading charts…"</p> }>
            {move || charts.get().map(|result| match result {
                Ok(list) if list.is_empty() => view! {
                    <p class="muted">"No metrics reported yet. Trainers report with the cloudml-hypertune format (CLOUD_ML_HP_METRIC_FILE)."</p>
                }.into_any(),
                Ok(list) => view! {
                    <div class="charts">
                        {list.into_iter().map(|chart| view! {
                            <figure class="chart" data-testid="chart" data-tag=chart.tag.clone() data-points=chart.points.to_string()>
                                <div inner_html=chart.svg/>
                                <figcaption class="muted">{format!("{} · {} points", chart.tag, chart.points)}</figcaption>
                            </figure>
                        }).collect_view()}
                    </div>
                }.into_any(),
                Err(error) => view! { <ErrorNotice message=error.to_string()/> }.into_any(),
            })}
        </Transition>
    }
}

/// The job's log: the first lines are rendered on the server; new ones are fetched every second
/// while the job runs (and once more after it ends). Filter by replica, search by text.
#[component]
fn LogViewer(
    project: String,
    job: String,
    active: RwSignal<bool>,
    first: Resource<Result<LogPage, String>>,
) -> impl IntoView {
    let base = format!("/projects/{project}/jobs/{job}");
    let more = RwSignal::new(Vec::<LogLine>::new());
    let next = RwSignal::new(None::<usize>);
    let replica = RwSignal::new(String::new());
    let search = RwSignal::new(String::new());
    let fetching = RwSignal::new(false);
    let drained = RwSignal::new(false);
    Effect::new(move |_| {
        if let Some(Ok(page)) = first.get() {
            if next.get_untracked().is_none() {
                next.set(Some(page.next_offset));
            }
        }
    });
    let poll = use_ticker(1000, move || !drained.get_untracked());
    let base_link = base.clone();
    Effect::new(move |_| {
        poll.track();
        let Some(offset) = next.get_untracked() else { return };
        if fetching.get_untracked() {
            return;
        }
        let was_active = active.get_untracked();
        fetching.set(true);
        let path = format!("{base}/logs?offset={offset}&limit=5000");
        spawn_local(async move {
            if let Ok(page) = api_read::<LogPage>(path).await {
                if page.lines.is_empty() && !was_active {
                    drained.set(true);
                }
                if !page.lines.is_empty() {
                    more.update(|m| m.extend(page.lines));
                }
                next.set(Some(page.next_offset));
            }
            fetching.set(false);
        });
    });
    // Filtered once per change; the count and the list both read it.
    let shown = Memo::new(move |_| {
        let mut lines = match first.get() {
            Some(Ok(page)) => page.lines,
            _ => Vec::new(),
        };
        lines.extend(more.get());
        let (who, needle) = (replica.get(), search.get().to_lowercase());
        lines
            .into_iter()
            .filter(|l| who.is_empty() || l.replica == who)
            .filter(|l| needle.is_empty() || l.text.to_lowercase().contains(&needle))
            .collect::<Vec<_>>()
    });
    let replicas = move || {
        let mut names: Vec<String> = match first.get() {
            Some(Ok(page)) => page.lines.into_iter().map(|l| l.replica).collect(),
            _ => Vec::new(),
        };
        more.with(|more| names.extend(more.iter().map(|l| l.replica.clone())));
        names.sort();
        names.dedup();
        names
    };
    view! {
        <div class="log-controls">
            <label>"Replica "
                <select on:change=move |ev| replica.set(event_target_value(&ev))>
                    <option value="">"all"</option>
                    {move || replicas().into_iter().map(|r| view! { <option value=r.clone()>{r.clone()}</option> }).collect_view()}
                </select>
            </label>
            <label>"Search " <input type="search" placeholder="text in a line" bind:value=search/></label>
            <span class="muted" data-testid="log-count">{move || format!("{} lines", shown.with(Vec::len))}</span>
            {move || active.get().then(|| view! { <span class="live">"● following"</span> })}
        </div>
        <div class="log" role="log" aria-live="polite" data-testid="log">
            <Transition fallback=|| view! { <p class="muted">"Loading logs…"</p> }>
                {move || shown.get().into_iter().map(|line| view! {
                    <div class="log-line">
                        <span class="log-time">{short_time(&line.time).get(11..).unwrap_or("").to_owned()}</span>
                        <span class="log-replica">{line.replica}</span>
                        <span class="log-text">{line.text}</span>
                    </div>
                }).collect_view()}
            </Transition>
        </div>
        <p class="muted"><a rel="external" href=format!("/v1{base_link}/logs")>"Raw log (JSON)"</a></p>
    }
}
