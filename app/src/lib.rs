//! Anneal's web console, shared by the server (server-side rendering, feature `ssr`) and the
//! browser (hydration, feature `hydrate`).
//!
//! This crate holds pages, components, server-function declarations and the wire types they carry.
//! It never holds server logic: server functions reach the server through the [`backend`] handle
//! that the `server` crate puts into Leptos' context, so the UI crate links neither the database
//! nor libtorch.

#![recursion_limit = "256"]

pub mod api;
#[cfg(feature = "ssr")]
pub mod backend;
mod components;
pub mod jobs;
mod layout;
mod pages;

use leptos::prelude::*;
use leptos_meta::{provide_meta_context, MetaTags, Stylesheet, Title};
use leptos_router::components::{Route, Router, Routes};
use leptos_router::{path, SsrMode};

/// The HTML document the server renders around [`App`].
pub fn shell(options: LeptosOptions) -> impl IntoView {
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8"/>
                <meta name="viewport" content="width=device-width, initial-scale=1"/>
                <meta name="color-scheme" content="light"/>
                <link rel="icon" href="/favicon.svg" type="image/svg+xml"/>
                <HydrationScripts options/>
                <MetaTags/>
            </head>
            <body>
                <App/>
            </body>
        </html>
    }
}

/// The console: a navigation frame (Jobs, Models, Operations) around the routed page.
#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    view! {
        <Stylesheet id="leptos" href="/pkg/anneal.css"/>
        <Title formatter=|page: String| if page.is_empty() { "Anneal".to_string() } else { format!("{page} · Anneal") }/>
        <Router>
            <layout::Frame>
                <Routes fallback=pages::NotFound>
                    // Without a project in the path, pages show the `default` project. Pages render
                    // once their data is read (SsrMode::Async), so they read without JavaScript.
                    <Route path=path!("/login") view=pages::LoginPage/>
                    <Route path=path!("") view=pages::JobsPage ssr=SsrMode::Async/>
                    <Route path=path!("/jobs") view=pages::JobsPage ssr=SsrMode::Async/>
                    <Route path=path!("/models") view=pages::ModelsPage ssr=SsrMode::Async/>
                    <Route path=path!("/operations") view=pages::OperationsPage ssr=SsrMode::Async/>
                    <Route path=path!("/projects/:project/jobs") view=pages::JobsPage ssr=SsrMode::Async/>
                    <Route path=path!("/projects/:project/jobs/:job") view=pages::JobPage ssr=SsrMode::Async/>
                    <Route path=path!("/projects/:project/models") view=pages::ModelsPage ssr=SsrMode::Async/>
                    <Route path=path!("/projects/:project/models/:model") view=pages::ModelPage ssr=SsrMode::Async/>
                    <Route path=path!("/projects/:project/models/:model/versions/:version") view=pages::VersionPage ssr=SsrMode::Async/>
                    <Route path=path!("/projects/:project/operations") view=pages::OperationsPage ssr=SsrMode::Async/>
                </Routes>
            </layout::Frame>
        </Router>
    }
}
