//! The Jobs page: training and batch prediction jobs.

use leptos::prelude::*;
use leptos_meta::Title;

/// Lists jobs. Jobs arrive with the training and batch prediction capabilities.
#[component]
pub fn JobsPage() -> impl IntoView {
    view! {
        <Title text="Jobs"/>
        <h1>"Jobs"</h1>
        <div class="empty-state">
            <p>"No jobs yet."</p>
            <p class="muted">"Training and batch prediction jobs you submit will be listed here."</p>
        </div>
    }
}
