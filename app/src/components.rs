//! Small components shared by the console's pages.

use leptos::prelude::*;
use leptos_meta::Title;

/// A page's title (browser tab and heading) above its content.
#[component]
pub fn PageHeading(title: &'static str) -> impl IntoView {
    view! {
        <Title text=title/>
        <h1>{title}</h1>
    }
}

/// What a list shows when it has nothing in it: what is missing and how it comes to be.
#[component]
pub fn EmptyState(message: &'static str, hint: &'static str) -> impl IntoView {
    view! {
        <div class="empty-state">
            <p>{message}</p>
            <p class="muted">{hint}</p>
        </div>
    }
}
