//! The Models page: list, create, delete.

use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::components::A;
use serde_json::{json, Value};

use crate::api::{api_get, api_send};
use crate::components::{
    labels_text, last_segment, parse_labels, text, use_project, EmptyState, ErrorNotice, PageHeading,
};

/// Lists the project's models, with a create form and a delete button per model.
#[component]
pub fn ModelsPage() -> impl IntoView {
    let project = use_project();
    let changed = RwSignal::new(0u32);
    let models = Resource::new(
        move || (project.get(), changed.get()),
        |(project, _)| api_get(format!("/projects/{project}/models?pageSize=100")),
    );
    view! {
        <PageHeading title="Models"/>
        <CreateModel changed/>
        <Transition fallback=|| view! { <p class="muted">"Loading models…"</p> }>
            {move || models.get().map(|result| match result {
                Ok(Ok(page)) => {
                    let list = page["models"].as_array().cloned().unwrap_or_default();
                    if list.is_empty() {
                        return view! {
                            <EmptyState message="No models yet — create one or train the example."
                                hint="A model groups versions: each version serves one exported TorchScript model."/>
                        }.into_any();
                    }
                    view! { <ModelTable models=list changed/> }.into_any()
                }
                Ok(Err(error)) => view! { <ErrorNotice message=error.to_string()/> }.into_any(),
                Err(error) => view! { <ErrorNotice message=error.to_string()/> }.into_any(),
            })}
        </Transition>
    }
}

#[component]
fn ModelTable(models: Vec<Value>, changed: RwSignal<u32>) -> impl IntoView {
    let project = use_project();
    let rows = models
        .into_iter()
        .map(|model| {
            let name = last_segment(&text(&model, "name"));
            let href = format!("/projects/{}/models/{name}", project.get_untracked());
            let default = last_segment(&text(&model, "/defaultVersion/name"));
            let shown = name.clone();
            view! {
                <tr>
                    <td><A href=href>{shown}</A></td>
                    <td>{text(&model, "description")}</td>
                    <td>{default}</td>
                    <td class="labels">{labels_text(&model)}</td>
                    <td><DeleteModel model=name changed/></td>
                </tr>
            }
        })
        .collect_view();
    view! {
        <table class="table" data-testid="models-table">
            <thead><tr><th>"Model"</th><th>"Description"</th><th>"Default version"</th><th>"Labels"</th><th></th></tr></thead>
            <tbody>{rows}</tbody>
        </table>
    }
}

#[component]
fn DeleteModel(model: String, changed: RwSignal<u32>) -> impl IntoView {
    let project = use_project();
    let error = RwSignal::new(None::<String>);
    let label = format!("Delete model {model}");
    let delete = move |_| {
        let path = format!("/projects/{}/models/{model}", project.get_untracked());
        spawn_local(async move {
            match api_send("DELETE".into(), path, None).await {
                Ok(Ok(_)) => changed.update(|n| *n += 1),
                Ok(Err(e)) => error.set(Some(e.message)),
                Err(e) => error.set(Some(e.to_string())),
            }
        });
    };
    view! {
        <button class="button small danger" type="button" aria-label=label on:click=delete>"Delete"</button>
        {move || error.get().map(|m| view! { <ErrorNotice message=m/> })}
    }
}

#[component]
fn CreateModel(changed: RwSignal<u32>) -> impl IntoView {
    let project = use_project();
    let name = RwSignal::new(String::new());
    let description = RwSignal::new(String::new());
    let labels = RwSignal::new(String::new());
    let error = RwSignal::new(None::<(bool, String)>);
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let labels = match parse_labels(&labels.get_untracked()) {
            Ok(labels) => labels,
            Err(message) => return error.set(Some((false, message))),
        };
        let body =
            json!({"name": name.get_untracked().trim(), "description": description.get_untracked(), "labels": labels});
        let path = format!("/projects/{}/models", project.get_untracked());
        spawn_local(async move {
            match api_send("POST".into(), path, Some(body.to_string())).await {
                Ok(Ok(_)) => {
                    error.set(None);
                    name.set(String::new());
                    description.set(String::new());
                    changed.update(|n| *n += 1);
                }
                Ok(Err(e)) => {
                    let on_name = e.field.as_deref().is_some_and(|f| f.contains("name"));
                    error.set(Some((on_name, e.description.unwrap_or(e.message))));
                }
                Err(e) => error.set(Some((false, e.to_string()))),
            }
        });
    };
    view! {
        <details class="panel">
            <summary>"Create model"</summary>
            <form class="form" on:submit=submit novalidate>
                <label>"Name" <input name="name" placeholder="digits" bind:value=name/>
                    {move || error.get().filter(|(on_name, _)| *on_name).map(|(_, m)| view! { <span class="field-error" role="alert">{m}</span> })}
                </label>
                <label>"Description" <input name="description" bind:value=description/></label>
                <label>"Labels (k=v, k=v)" <input name="labels" bind:value=labels/></label>
                {move || error.get().filter(|(on_name, _)| !*on_name).map(|(_, m)| view! { <ErrorNotice message=m/> })}
                <button class="button primary" type="submit">"Create model"</button>
            </form>
        </details>
    }
}
