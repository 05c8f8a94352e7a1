//! A model's page: its versions (state, default badge, created), create version, set default,
//! delete, and the operations still in flight.

use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::components::A;
use serde_json::{json, Value};

use crate::api::{api_get, api_send};
use crate::components::{
    last_segment, short_time, text, use_param, use_project, use_ticker, EmptyState, ErrorNotice, PageHeading,
    StateBadge,
};

/// The model page; refreshes while a version is being created or deleted.
#[component]
pub fn ModelPage() -> impl IntoView {
    let project = use_project();
    let model = use_param("model");
    let busy = RwSignal::new(false);
    let changed = RwSignal::new(0u32);
    let tick = use_ticker(1000, move || busy.get_untracked());
    let versions = Resource::new(
        move || (project.get(), model.get(), tick.get(), changed.get()),
        |(project, model, _, _)| api_get(format!("/projects/{project}/models/{model}/versions?pageSize=100")),
    );
    let operations = Resource::new(
        move || (project.get(), tick.get(), changed.get()),
        |(project, _, _)| api_get(format!("/projects/{project}/operations?pageSize=50")),
    );
    let info = Resource::new(
        move || (project.get(), model.get()),
        |(project, model)| api_get(format!("/projects/{project}/models/{model}")),
    );
    view! {
        <PageHeading title=move || format!("Model {}", model.get())/>
        <Transition fallback=|| ()>
            {move || info.get().map(|result| match result {
                Ok(Ok(info)) => view! { <p class="muted">{text(&info, "description")}</p> }.into_any(),
                Ok(Err(e)) => view! { <ErrorNotice message=e.to_string()/> }.into_any(),
                Err(e) => view! { <ErrorNotice message=e.to_string()/> }.into_any(),
            })}
        </Transition>
        <CreateVersion changed/>
        <section aria-label="Versions">
            <h2>"Versions"</h2>
            <Transition fallback=|| view! { <p class="muted">"Loading versions…"</p> }>
                {move || versions.get().map(|result| match result {
                    Ok(Ok(page)) => {
                        let list = page["versions"].as_array().cloned().unwrap_or_default();
                        busy.set(list.iter().any(|v| matches!(text(v, "state").as_str(), "CREATING" | "DELETING")));
                        if list.is_empty() {
                            return view! { <EmptyState message="No versions yet." hint="Create one from an exported model directory (model.pt), or deploy a finished training job."/> }.into_any();
                        }
                        view! { <VersionTable versions=list changed/> }.into_any()
                    }
                    Ok(Err(e)) => view! { <ErrorNotice message=e.to_string()/> }.into_any(),
                    Err(e) => view! { <ErrorNotice message=e.to_string()/> }.into_any(),
                })}
            </Transition>
        </section>
        <section aria-label="Operations in flight">
            <Transition fallback=|| ()>
                {move || operations.get().map(|result| {
                    let prefix = format!("projects/{}/models/{}", project.get_untracked(), model.get_untracked());
                    let pending: Vec<Value> = match result {
                        Ok(Ok(page)) => page["operations"].as_array().cloned().unwrap_or_default()
                            .into_iter()
                            .filter(|op| op["done"] != json!(true) && text(op, "/metadata/modelName") == prefix)
                            .collect(),
                        _ => Vec::new(),
                    };
                    (!pending.is_empty()).then(|| view! {
                        <h2>"Operations in flight"</h2>
                        <ul data-testid="pending-operations">
                            {pending.into_iter().map(|op| view! {
                                <li>{text(&op, "/metadata/operationType")} " " <code>{last_segment(&text(&op, "/metadata/version/name"))}</code> " — running"</li>
                            }).collect_view()}
                        </ul>
                    })
                })}
            </Transition>
        </section>
    }
}

#[component]
fn VersionTable(versions: Vec<Value>, changed: RwSignal<u32>) -> impl IntoView {
    let project = use_project();
    let model = use_param("model");
    let rows = versions
        .into_iter()
        .map(|version| {
            let name = last_segment(&text(&version, "name"));
            let href = format!("/projects/{}/models/{}/versions/{name}", project.get_untracked(), model.get_untracked());
            let is_default = version["isDefault"] == json!(true);
            let ready = text(&version, "state") == "READY";
            let (shown, for_default, for_delete) = (name.clone(), name.clone(), name);
            view! {
                <tr>
                    <td><A href=href>{shown}</A> {is_default.then(|| view! { <span class="badge default">"default"</span> })}</td>
                    <td><StateBadge state=text(&version, "state")/></td>
                    <td>{short_time(&text(&version, "createTime"))}</td>
                    <td class="path">{text(&version, "deploymentUri")}</td>
                    <td class="actions">
                        {(ready && !is_default).then(|| view! { <VersionAction verb="setDefault" label="Set default" version=for_default.clone() changed/> })}
                        <VersionAction verb="delete" label="Delete" version=for_delete changed/>
                    </td>
                </tr>
            }
        })
        .collect_view();
    view! {
        <table class="table" data-testid="versions-table">
            <thead><tr><th>"Version"</th><th>"State"</th><th>"Created"</th><th>"Deployment URI"</th><th></th></tr></thead>
            <tbody>{rows}</tbody>
        </table>
    }
}

/// Set default or delete one version.
#[component]
pub fn VersionAction(
    verb: &'static str,
    label: &'static str,
    version: String,
    changed: RwSignal<u32>,
) -> impl IntoView {
    let project = use_project();
    let model = use_param("model");
    let error = RwSignal::new(None::<String>);
    let aria = format!("{label} {version}");
    let act = move |_| {
        let base = format!("/projects/{}/models/{}/versions/{version}", project.get_untracked(), model.get_untracked());
        let (method, path, body) = match verb {
            "setDefault" => ("POST", format!("{base}:setDefault"), Some("{}".to_owned())),
            _ => ("DELETE", base, None),
        };
        spawn_local(async move {
            match api_send(method.into(), path, body).await {
                Ok(Ok(_)) => changed.update(|n| *n += 1),
                Ok(Err(e)) => error.set(Some(e.message)),
                Err(e) => error.set(Some(e.to_string())),
            }
        });
    };
    let class = if verb == "delete" { "button small danger" } else { "button small" };
    view! {
        <button class=class type="button" aria-label=aria on:click=act>{label}</button>
        {move || error.get().map(|m| view! { <ErrorNotice message=m/> })}
    }
}

#[component]
fn CreateVersion(changed: RwSignal<u32>) -> impl IntoView {
    let project = use_project();
    let model = use_param("model");
    let name = RwSignal::new(String::new());
    let uri = RwSignal::new(String::new());
    let framework = RwSignal::new("PYTORCH".to_owned());
    let description = RwSignal::new(String::new());
    let error = RwSignal::new(None::<(String, String)>);
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let body = json!({"name": name.get_untracked().trim(), "deploymentUri": uri.get_untracked().trim(),
                          "framework": framework.get_untracked(), "description": description.get_untracked()});
        let path = format!("/projects/{}/models/{}/versions", project.get_untracked(), model.get_untracked());
        spawn_local(async move {
            match api_send("POST".into(), path, Some(body.to_string())).await {
                Ok(Ok(_)) => {
                    error.set(None);
                    name.set(String::new());
                    changed.update(|n| *n += 1);
                }
                Ok(Err(e)) => {
                    let field = e.field.clone().unwrap_or_default();
                    let which = if field.ends_with("deploymentUri") {
                        "uri"
                    } else if field.ends_with("name") {
                        "name"
                    } else if field.ends_with("framework") {
                        "framework"
                    } else {
                        ""
                    };
                    error.set(Some((which.into(), e.description.unwrap_or(e.message))));
                }
                Err(e) => error.set(Some((String::new(), e.to_string()))),
            }
        });
    };
    let field_error = move |which: &'static str| {
        move || {
            error
                .get()
                .filter(|(f, _)| f == which)
                .map(|(_, m)| view! { <span class="field-error" role="alert">{m}</span> })
        }
    };
    view! {
        <details class="panel">
            <summary>"Create version"</summary>
            <form class="form" on:submit=submit novalidate>
                <label>"Name" <input name="name" placeholder="v1" bind:value=name/> {field_error("name")}</label>
                <label>"Deployment URI (a folder with model.pt)" <input name="deploymentUri" placeholder="/path/to/outputs/job/model" bind:value=uri/> {field_error("uri")}</label>
                <label>"Framework"
                    <select name="framework" bind:value=framework><option value="PYTORCH">"PYTORCH"</option></select>
                    {field_error("framework")}
                </label>
                <label>"Description" <input name="description" bind:value=description/></label>
                {move || error.get().filter(|(f, _)| f.is_empty()).map(|(_, m)| view! { <ErrorNotice message=m/> })}
                <button class="button primary" type="submit">"Create version"</button>
            </form>
        </details>
    }
}
