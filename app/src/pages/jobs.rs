//! The Jobs page: training and batch prediction jobs, filters, paging, and the submit form.

use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::components::{Form, A};
use leptos_router::hooks::{use_navigate, use_query_map};
use serde_json::json;

use crate::api::{api_read, api_send, decode, ApiError};
use crate::components::{
    duration, labels_line, parse_labels, short_time, use_project, use_ticker, EmptyState, ErrorNotice, PageHeading,
    StateBadge,
};
use crate::jobs::{Job, JobState, ListJobsResponse, TrainingInput};

/// Lists the project's jobs, refreshing itself while any is active.
#[component]
pub fn JobsPage() -> impl IntoView {
    let project = use_project();
    let query = use_query_map();
    let param = move |key: &str| query.with(|q| q.get(key)).unwrap_or_default();
    let active = RwSignal::new(false);
    let tick = use_ticker(2000, move || active.get_untracked());
    let jobs = Resource::new(
        move || (project.get(), param("state"), param("type"), param("q"), param("page"), tick.get()),
        |(project, state, kind, search, page, _)| {
            let mut filter = Vec::new();
            if !state.is_empty() {
                filter.push(format!("state:{state}"));
            }
            if !kind.is_empty() {
                filter.push(format!("type:{kind}"));
            }
            if !search.is_empty() {
                filter.push(format!("jobId:{search}*"));
            }
            let mut path = format!("/projects/{project}/jobs?pageSize=20");
            if !filter.is_empty() {
                path.push_str(&format!("&filter={}", encode(&filter.join(" AND "))));
            }
            if !page.is_empty() {
                path.push_str(&format!("&pageToken={}", encode(&page)));
            }
            api_read::<ListJobsResponse>(path)
        },
    );
    view! {
        <PageHeading title="Jobs"/>
        <SubmitTrainingJob/>
        <Form method="GET" action="">
            <div class="filters" role="search">
                <label>"State "
                    <select name="state">
                        {std::iter::once("").chain(JobState::ALL.map(JobState::as_str)).map(|s| {
                            let selected = move || param("state") == s;
                            view! { <option value=s selected=selected>{if s.is_empty() { "any" } else { s }}</option> }
                        }).collect_view()}
                    </select>
                </label>
                <label>"Type "
                    <select name="type">
                        {[("", "any"), ("TRAINING", "training"), ("PREDICTION", "batch prediction")].into_iter().map(|(v, l)| {
                            let selected = move || param("type") == v;
                            view! { <option value=v selected=selected>{l}</option> }
                        }).collect_view()}
                    </select>
                </label>
                <label>"Id starts with " <input type="search" name="q" placeholder="digits_" prop:value=move || param("q")/></label>
                <button class="button" type="submit">"Apply"</button>
            </div>
        </Form>
        <Transition fallback=|| view! { <p class="muted">"Loading jobs…"</p> }>
            {move || jobs.get().map(|result| match result {
                Ok(page) => {
                    active.set(page.jobs.iter().any(|j| !j.state.is_final()));
                    let next = page.next_page_token.unwrap_or_default();
                    if page.jobs.is_empty() {
                        return view! {
                            <EmptyState message="No jobs here yet."
                                hint="Submit a training job above (try the example trainer in examples/digits), or a batch prediction job through the API or CLI."/>
                        }.into_any();
                    }
                    view! { <JobTable jobs=page.jobs project=project.get_untracked() next/> }.into_any()
                }
                Err(message) => view! { <ErrorNotice message/> }.into_any(),
            })}
        </Transition>
    }
}

#[component]
fn JobTable(jobs: Vec<Job>, project: String, next: String) -> impl IntoView {
    let rows = jobs
        .into_iter()
        .map(|job| {
            let href = format!("/projects/{project}/jobs/{}", job.job_id);
            let kind = if job.prediction_input.is_some() { "batch prediction" } else { "training" };
            let start = job.start_time.as_deref().unwrap_or("");
            let took = duration(start, job.end_time.as_deref().unwrap_or(""));
            view! {
                <tr>
                    <td><A href=href>{job.job_id.clone()}</A></td>
                    <td>{kind}</td>
                    <td><StateBadge state=job.state.as_str()/></td>
                    <td>{short_time(&job.create_time)}</td>
                    <td>{took}</td>
                    <td class="labels">{labels_line(&job.labels)}</td>
                </tr>
            }
        })
        .collect_view();
    view! {
        <table class="table" data-testid="jobs-table">
            <thead><tr><th>"Job"</th><th>"Type"</th><th>"State"</th><th>"Created"</th><th>"Duration"</th><th>"Labels"</th></tr></thead>
            <tbody>{rows}</tbody>
        </table>
        {(!next.is_empty()).then(|| view! { <p><A href=format!("?page={}", encode(&next))>"Next page →"</A></p> })}
    }
}

/// The upload folder `POST …/uploads` answers: its resource name and the URI files in it have.
#[cfg(feature = "hydrate")]
#[derive(serde::Deserialize)]
struct Upload {
    name: String,
    uri: String,
}

/// Uploads a package file into a new upload folder on the server (`POST …/uploads`, then `PUT`
/// of the file's bytes straight from the browser); returns the file's URI.
#[cfg(feature = "hydrate")]
async fn upload_file(project: &str, file: web_sys::File) -> Result<String, String> {
    use wasm_bindgen::JsCast;
    let call = format!("/projects/{project}/uploads");
    let answer = api_send("POST".into(), call.clone(), Some("{}".into()))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let upload: Upload = decode(&format!("POST /v1{call}"), answer)?;
    let id = upload.name.rsplit('/').next().unwrap_or("").to_owned();
    let name = file.name();
    let init = web_sys::RequestInit::new();
    init.set_method("PUT");
    init.set_body(&file);
    let url = format!("/v1/projects/{project}/uploads/{id}/{}", encode(&name));
    let request = web_sys::Request::new_with_str_and_init(&url, &init).map_err(|e| format!("{e:?}"))?;
    let window = web_sys::window().ok_or("no browser window")?;
    let response = wasm_bindgen_futures::JsFuture::from(window.fetch_with_request(&request))
        .await
        .map_err(|e| format!("the upload failed: {e:?}"))?;
    let response: web_sys::Response = response.dyn_into().map_err(|_| "the upload got no response".to_owned())?;
    if !response.ok() {
        return Err(format!("the upload failed (HTTP {})", response.status()));
    }
    Ok(format!("{}/{name}", upload.uri))
}

/// Percent-encodes a query value.
pub fn encode(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Which form field an API field violation belongs to.
fn field_of(error: &ApiError) -> &'static str {
    let field = error.field.as_deref().unwrap_or("");
    [
        ("jobId", "jobId"),
        ("packageUris", "package"),
        ("pythonModule", "module"),
        ("jobDir", "jobDir"),
        ("workerCount", "workers"),
        ("parameterServerCount", "ps"),
        ("scaleTier", "tier"),
        ("labels", "labels"),
    ]
    .into_iter()
    .find(|(api, _)| field.contains(api))
    .map_or("", |(_, form)| form)
}

/// The "Submit training job" form: field errors from the API appear next to their field.
#[component]
fn SubmitTrainingJob() -> impl IntoView {
    let project = use_project();
    let navigate = use_navigate();
    let job_id = RwSignal::new(String::new());
    let package = RwSignal::new(String::new());
    let module = RwSignal::new(String::new());
    let args = RwSignal::new(String::new());
    let job_dir = RwSignal::new(String::new());
    let tier = RwSignal::new("BASIC".to_owned());
    let workers = RwSignal::new("0".to_owned());
    let ps = RwSignal::new("0".to_owned());
    let labels = RwSignal::new(String::new());
    let error = RwSignal::new(None::<(String, String)>);
    let busy = RwSignal::new(false);
    let field_error = move |name: &'static str| {
        move || {
            error
                .get()
                .filter(|(field, _)| field == name)
                .map(|(_, message)| view! { <span class="field-error" role="alert">{message}</span> })
        }
    };
    let file_input = NodeRef::<leptos::html::Input>::new();
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let labels = match parse_labels(&labels.get_untracked()) {
            Ok(labels) => labels,
            Err(message) => return error.set(Some(("labels".into(), message))),
        };
        #[cfg(feature = "hydrate")]
        let file = file_input.get_untracked().and_then(|input| input.files()).and_then(|files| files.get(0));
        let package = package.get_untracked().trim().to_owned();
        let mut input = TrainingInput {
            scale_tier: Some(tier.get_untracked()),
            python_module: module.get_untracked().trim().to_owned(),
            args: args.get_untracked().split_whitespace().map(str::to_owned).collect(),
            job_dir: Some(job_dir.get_untracked().trim().to_owned()).filter(|dir| !dir.is_empty()),
            recorded: serde_json::Map::from_iter([("region".to_owned(), json!("local"))]),
            ..Default::default()
        };
        if tier.get_untracked() == "CUSTOM" {
            let count = |field: &str, label: &str, text: String| {
                text.trim()
                    .parse::<i64>()
                    .map(Some)
                    .map_err(|_| (field.to_owned(), format!("{label} must be a whole number.")))
            };
            match (
                count("workers", "Workers", workers.get_untracked()),
                count("ps", "Parameter servers", ps.get_untracked()),
            ) {
                (Ok(w), Ok(p)) => (input.worker_count, input.parameter_server_count) = (w, p),
                (Err(e), _) | (_, Err(e)) => return error.set(Some(e)),
            }
        }
        let job_id = job_id.get_untracked().trim().to_owned();
        let project = project.get_untracked();
        let navigate = navigate.clone();
        busy.set(true);
        spawn_local(async move {
            // A chosen file is uploaded first; its URI becomes the package.
            #[cfg(feature = "hydrate")]
            let package = match file {
                Some(file) => match upload_file(&project, file).await {
                    Ok(uri) => uri,
                    Err(message) => {
                        busy.set(false);
                        return error.set(Some(("package".into(), message)));
                    }
                },
                None => package,
            };
            input.package_uris = vec![package];
            let body = json!({"jobId": job_id, "labels": labels, "trainingInput": input});
            let call = format!("/projects/{project}/jobs");
            let result = api_send("POST".into(), call.clone(), Some(body.to_string())).await;
            busy.set(false);
            match result {
                Ok(Ok(answer)) => match decode::<Job>(&format!("POST /v1{call}"), answer) {
                    Ok(job) => navigate(&format!("{call}/{}", job.job_id), Default::default()),
                    Err(message) => error.set(Some((String::new(), message))),
                },
                Ok(Err(api)) => {
                    let message = api.description.clone().unwrap_or_else(|| api.message.clone());
                    error.set(Some((field_of(&api).to_owned(), message)));
                }
                Err(e) => error.set(Some((String::new(), e.to_string()))),
            }
        });
    };
    view! {
        <details class="panel submit-job">
            <summary>"Submit training job"</summary>
            <form on:submit=submit class="form" novalidate>
                <label>"Job id" <input name="jobId" required placeholder="digits_1" bind:value=job_id/> {field_error("jobId")}</label>
                <label>"Package (folder, sdist or wheel path / file:// URI)" <input name="package" placeholder="/path/to/examples/digits" bind:value=package/> {field_error("package")}</label>
                <label>"…or upload a package file (sdist .tar.gz or wheel)" <input name="packageFile" type="file" accept=".gz,.whl,.zip" node_ref=file_input/></label>
                <label>"Python module" <input name="module" placeholder="trainer.task" bind:value=module/> {field_error("module")}</label>
                <label>"Arguments (space separated)" <input name="args" placeholder="--epochs 20" bind:value=args/></label>
                <label>"Job dir" <input name="jobDir" placeholder="/path/to/outputs/digits_1" bind:value=job_dir/> {field_error("jobDir")}</label>
                <label>"Scale tier"
                    <select name="tier" bind:value=tier>
                        <option value="BASIC">"BASIC (one master)"</option>
                        <option value="BASIC_GPU">"BASIC_GPU"</option>
                        <option value="STANDARD_1">"STANDARD_1"</option>
                        <option value="CUSTOM">"CUSTOM"</option>
                    </select>
                    {field_error("tier")}
                </label>
                <div class="row" class:hidden=move || tier.get() != "CUSTOM">
                    <label>"Workers" <input name="workers" type="number" min="0" bind:value=workers/> {field_error("workers")}</label>
                    <label>"Parameter servers" <input name="ps" type="number" min="0" bind:value=ps/> {field_error("ps")}</label>
                </div>
                <label>"Labels (k=v, k=v)" <input name="labels" placeholder="team=vision" bind:value=labels/> {field_error("labels")}</label>
                {move || error.get().filter(|(field, _)| field.is_empty()).map(|(_, m)| view! { <ErrorNotice message=m/> })}
                <button class="button primary" type="submit" disabled=move || busy.get()>"Submit job"</button>
            </form>
        </details>
    }
}
