//! The Operations page: long-running requests and their outcome.

use crate::components::{EmptyState, PageHeading};
use leptos::prelude::*;

/// Lists recent operations.
#[component]
pub fn OperationsPage() -> impl IntoView {
    view! {
        <PageHeading title="Operations"/>
        <EmptyState
            message="No operations yet."
            hint="Version creation and deletion run as operations; they will be listed here."
        />
    }
}
