//! A version's page: its fields, and the "Test & use" panel (a JSON editor for `instances`, a
//! Predict button, the answer and its round-trip time, and the equivalent commands).

use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::hooks::use_navigate;
use serde_json::{json, Value};

use super::model::VersionAction;
use crate::api::{api_get, api_send, example_instances};
use crate::components::{
    now_millis, short_time, text, use_param, use_project, use_ticker, ErrorNotice, PageHeading, StateBadge,
};

/// The version page; refreshes while the version is being created.
#[component]
pub fn VersionPage() -> impl IntoView {
    let project = use_project();
    let model = use_param("model");
    let version = use_param("version");
    let creating = RwSignal::new(false);
    let changed = RwSignal::new(0u32);
    let tick = use_ticker(1000, move || creating.get_untracked());
    let record = Resource::new(
        move || (project.get(), model.get(), version.get(), tick.get(), changed.get()),
        |(project, model, version, _, _)| api_get(format!("/projects/{project}/models/{model}/versions/{version}")),
    );
    let navigate = use_navigate();
    // A deleted version leaves for its model's page.
    Effect::new(move |_| {
        if let Some(Ok(Err(e))) = record.get() {
            if e.code == 404 && changed.get_untracked() > 0 {
                navigate(
                    &format!("/projects/{}/models/{}", project.get_untracked(), model.get_untracked()),
                    Default::default(),
                );
            }
        }
    });
    view! {
        <PageHeading title=move || format!("Version {} of {}", version.get(), model.get())/>
        <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || record.get().map(|result| match result {
                Ok(Ok(v)) => {
                    creating.set(text(&v, "state") == "CREATING");
                    view! { <VersionFacts version=v changed/> }.into_any()
                }
                Ok(Err(e)) => view! { <ErrorNotice message=e.to_string()/> }.into_any(),
                Err(e) => view! { <ErrorNotice message=e.to_string()/> }.into_any(),
            })}
        </Transition>
        <TestAndUse creating/>
    }
}

#[component]
fn VersionFacts(version: Value, changed: RwSignal<u32>) -> impl IntoView {
    let name = super::super::components::last_segment(&text(&version, "name"));
    let is_default = version["isDefault"] == json!(true);
    let ready = text(&version, "state") == "READY";
    let for_default = name.clone();
    view! {
        <p class="state-line">
            <StateBadge state=text(&version, "state")/>
            {is_default.then(|| view! { <span class="badge default">"default"</span> })}
            {(ready && !is_default).then(|| view! { <VersionAction verb="setDefault" label="Set default" version=for_default.clone() changed/> })}
            <VersionAction verb="delete" label="Delete" version=name changed/>
        </p>
        {(!text(&version, "errorMessage").is_empty()).then(|| view! { <pre class="error-message" role="alert">{text(&version, "errorMessage")}</pre> })}
        <dl class="facts wide">
            <dt>"Deployment URI"</dt><dd class="path">{text(&version, "deploymentUri")}</dd>
            <dt>"Framework"</dt><dd>{text(&version, "framework")}</dd>
            <dt>"Created"</dt><dd>{short_time(&text(&version, "createTime"))}</dd>
            <dt>"Machine type"</dt><dd>{text(&version, "machineType")}</dd>
            <dt>"Description"</dt><dd>{text(&version, "description")}</dd>
        </dl>
    }
}

/// What the request editor holds when the version declares no signature.
const FALLBACK_REQUEST: &str = "{\"instances\": [[0.0, 0.0, 0.0, 0.0]]}";

#[component]
fn TestAndUse(creating: RwSignal<bool>) -> impl IntoView {
    let project = use_project();
    let model = use_param("model");
    let version = use_param("version");
    let request = RwSignal::new(String::new());
    // Read again once the version is no longer being created (its files are in place then).
    let example = Resource::new(
        move || (project.get(), model.get(), version.get(), creating.get()),
        |(project, model, version, _)| example_instances(project, model, version),
    );
    Effect::new(move |_| {
        let current = request.get_untracked();
        let untouched = current.is_empty() || current == FALLBACK_REQUEST;
        match example.get() {
            Some(Ok(Some(text))) if untouched => request.set(text),
            Some(_) if current.is_empty() => request.set(FALLBACK_REQUEST.to_owned()),
            _ => {}
        }
    });
    let answer = RwSignal::new(None::<Result<String, String>>);
    let millis = RwSignal::new(None::<f64>);
    let busy = RwSignal::new(false);
    let predict = move |_| {
        let path = format!(
            "/projects/{}/models/{}/versions/{}:predict",
            project.get_untracked(),
            model.get_untracked(),
            version.get_untracked()
        );
        let body = request.get_untracked();
        if let Err(e) = serde_json::from_str::<Value>(&body) {
            answer.set(Some(Err(format!("The request is not JSON: {e}"))));
            return;
        }
        busy.set(true);
        let started = now_millis();
        spawn_local(async move {
            let result = api_send("POST".into(), path, Some(body)).await;
            millis.set(Some(now_millis() - started));
            busy.set(false);
            answer.set(Some(match result {
                Ok(Ok(v)) => Ok(serde_json::to_string_pretty(&v).unwrap_or_default()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(e) => Err(e.to_string()),
            }));
        });
    };
    let curl = move || {
        format!(
            "curl -s -X POST http://HOST/v1/projects/{}/models/{}/versions/{}:predict \\\n  -H \"authorization: Bearer $ANNEAL_TOKEN\" -H 'content-type: application/json' -d @request.json",
            project.get(),
            model.get(),
            version.get()
        )
    };
    let cli = move || {
        format!(
            "anneal predict --project {} --model {} --version {} --json-request request.json",
            project.get(),
            model.get(),
            version.get()
        )
    };
    view! {
        <section class="panel" aria-label="Test and use">
            <h2>"Test & use"</h2>
            <label class="block">"Request (JSON with instances)"
                <textarea class="editor" rows="8" spellcheck="false" data-testid="predict-request" bind:value=request></textarea>
            </label>
            <p>
                <button class="button primary" type="button" on:click=predict disabled=move || busy.get()>"Predict"</button>
                <span class="muted" data-testid="round-trip">{move || millis.get().map(|ms| format!(" round trip {ms:.0} ms"))}</span>
            </p>
            <div class="answer" data-testid="predict-answer">
                {move || answer.get().map(|a| match a {
                    Ok(text) => view! { <pre class="json ok">{text}</pre> }.into_any(),
                    Err(message) => view! { <ErrorNotice message/> }.into_any(),
                })}
            </div>
            <h3>"From a terminal"</h3>
            <pre class="command">{curl}</pre>
            <pre class="command">{cli}</pre>
        </section>
    }
}
