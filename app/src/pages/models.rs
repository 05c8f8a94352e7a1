//! The Models page: models and their versions.

use leptos::prelude::*;
use leptos_meta::Title;

/// Lists models.
#[component]
pub fn ModelsPage() -> impl IntoView {
    view! {
        <Title text="Models"/>
        <h1>"Models"</h1>
        <div class="empty-state">
            <p>"No models yet."</p>
            <p class="muted">"Models you create, and the versions deployed from them, will be listed here."</p>
        </div>
    }
}
