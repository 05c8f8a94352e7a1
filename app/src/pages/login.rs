//! The login page: a plain HTML form (it works without JavaScript) that posts a token to
//! `/console/login`. The server answers with the session cookie and a redirect, or back here with
//! `?failed=` saying what went wrong.

use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_query_map;

use crate::components::ErrorNotice;

/// Asks for an API token.
#[component]
pub fn LoginPage() -> impl IntoView {
    let query = use_query_map();
    let failed = move || query.with(|q| q.get("failed"));
    let next = query.with_untracked(|q| q.get("next")).unwrap_or_default();
    view! {
        <Title text="Log in"/>
        <section class="login" aria-labelledby="login-heading">
            <h1 id="login-heading">"Log in to Anneal"</h1>
            {move || failed().map(|reason| view! { <ErrorNotice message=message(&reason)/> })}
            <form class="login-form" method="post" action="/console/login">
                <input type="hidden" name="next" value=next/>
                <label>
                    "API token"
                    <input
                        type="password"
                        name="token"
                        autocomplete="current-password"
                        required=true
                        autofocus=true
                        spellcheck="false"
                    />
                </label>
                <button type="submit" class="button primary">"Log in"</button>
            </form>
            <p class="muted">
                "When it starts, the server prints a one-time login link, and keeps its admin token in the file "
                <code>"admin.token"</code>
                " of its data directory. "
                <code>"anneal auth token create"</code>
                " makes tokens for other people and roles."
            </p>
        </section>
    }
}

/// What a `?failed=` reason tells the user.
fn message(reason: &str) -> String {
    match reason {
        "token" => "That token is not valid, or it was revoked.".to_owned(),
        "code" => "This login link was used already or is not valid. Log in with a token instead.".to_owned(),
        other => format!("Logging in failed ({other})."),
    }
}
