//! The Models page: models and their versions.

use crate::components::{EmptyState, PageHeading};
use leptos::prelude::*;

/// Lists models.
#[component]
pub fn ModelsPage() -> impl IntoView {
    view! {
        <PageHeading title="Models"/>
        <EmptyState
            message="No models yet."
            hint="Models you create, and the versions deployed from them, will be listed here."
        />
    }
}
