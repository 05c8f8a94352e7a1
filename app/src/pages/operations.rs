//! The Operations page: long-running requests and their outcome.

use leptos::prelude::*;
use leptos_meta::Title;

/// Lists recent operations.
#[component]
pub fn OperationsPage() -> impl IntoView {
    view! {
        <Title text="Operations"/>
        <h1>"Operations"</h1>
        <div class="empty-state">
            <p>"No operations yet."</p>
            <p class="muted">"Version creation and deletion run as operations; they will be listed here."</p>
        </div>
    }
}
