//! The Jobs page: training and batch prediction jobs.

use crate::components::{EmptyState, PageHeading};
use leptos::prelude::*;

/// Lists jobs. Jobs arrive with the training and batch prediction capabilities.
#[component]
pub fn JobsPage() -> impl IntoView {
    view! {
        <PageHeading title="Jobs"/>
        <EmptyState
            message="No jobs yet."
            hint="Training and batch prediction jobs you submit will be listed here."
        />
    }
}
