//! The Operations page: recent long-running operations and their outcome.

use leptos::prelude::*;
use serde_json::json;

use crate::api::api_get;
use crate::components::{
    last_segment, short_time, text, use_project, use_ticker, EmptyState, ErrorNotice, PageHeading, StateBadge,
};

/// Lists the project's operations, refreshing while any is running.
#[component]
pub fn OperationsPage() -> impl IntoView {
    let project = use_project();
    let running = RwSignal::new(false);
    let tick = use_ticker(2000, move || running.get_untracked());
    let operations = Resource::new(
        move || (project.get(), tick.get()),
        |(project, _)| api_get(format!("/projects/{project}/operations?pageSize=100")),
    );
    view! {
        <PageHeading title="Operations"/>
        <Transition fallback=|| view! { <p class="muted">"Loading operations…"</p> }>
            {move || operations.get().map(|result| match result {
                Ok(Ok(page)) => {
                    let list = page["operations"].as_array().cloned().unwrap_or_default();
                    running.set(list.iter().any(|op| op["done"] != json!(true)));
                    if list.is_empty() {
                        return view! { <EmptyState message="No operations yet." hint="Creating and deleting versions (and deleting models) runs as operations, listed here."/> }.into_any();
                    }
                    let rows = list.into_iter().map(|op| {
                        let outcome = if op["done"] != json!(true) {
                            "RUNNING".to_owned()
                        } else if op.get("error").is_some() {
                            "FAILED".to_owned()
                        } else {
                            "DONE".to_owned()
                        };
                        let target = {
                            let version = last_segment(&text(&op, "/metadata/version/name"));
                            let model = last_segment(&text(&op, "/metadata/modelName"));
                            if version.is_empty() { model } else { format!("{model} / {version}") }
                        };
                        view! {
                            <tr>
                                <td class="path">{last_segment(&text(&op, "name"))}</td>
                                <td>{text(&op, "/metadata/operationType")}</td>
                                <td>{target}</td>
                                <td>{short_time(&text(&op, "/metadata/createTime"))}</td>
                                <td><StateBadge state=outcome/></td>
                                <td class="error">{text(&op, "/error/message")}</td>
                            </tr>
                        }
                    }).collect_view();
                    view! {
                        <table class="table" data-testid="operations-table">
                            <thead><tr><th>"Operation"</th><th>"Type"</th><th>"Target"</th><th>"Created"</th><th>"Outcome"</th><th>"Error"</th></tr></thead>
                            <tbody>{rows}</tbody>
                        </table>
                    }.into_any()
                }
                Ok(Err(e)) => view! { <ErrorNotice message=e.to_string()/> }.into_any(),
                Err(e) => view! { <ErrorNotice message=e.to_string()/> }.into_any(),
            })}
        </Transition>
    }
}
