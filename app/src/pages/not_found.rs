//! The page shown for an unknown console path.

use leptos::prelude::*;
use leptos_meta::Title;

/// Says the page does not exist and offers the way back.
#[component]
pub fn NotFound() -> impl IntoView {
    #[cfg(feature = "ssr")]
    {
        if let Some(response) = use_context::<leptos_axum::ResponseOptions>() {
            response.set_status(http::StatusCode::NOT_FOUND);
        }
    }
    view! {
        <Title text="Not found"/>
        <h1>"Page not found"</h1>
        <p>"There is no console page at this address. " <a href="/jobs">"Go to Jobs"</a></p>
    }
}
