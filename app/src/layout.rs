//! The navigation frame every console page sits in: brand, the main sections (Jobs, Models,
//! Operations) and a server status panel.

use leptos::prelude::*;
use leptos_router::components::A;
use leptos_router::hooks::use_location;

use crate::api::{fetch_server_info, ServerInfo};

/// The frame around each page. `data-hydrated` turns `true` once the browser has taken over the
/// server-rendered page, which is what the browser tests wait for before they interact.
#[component]
pub fn Frame(children: Children) -> impl IntoView {
    let hydrated = RwSignal::new(false);
    Effect::new(move |_| hydrated.set(true));

    view! {
        <div class="frame" data-hydrated=move || hydrated.get().to_string()>
            <header class="topbar">
                <a class="brand" href="/">
                    <span class="brand-mark" aria-hidden="true">"◆"</span>
                    " Anneal"
                </a>
                <span class="tagline">"Train, version and serve PyTorch models"</span>
            </header>
            <nav class="sidebar" aria-label="Sections">
                <NavLink href="/jobs" label="Jobs"/>
                <NavLink href="/models" label="Models"/>
                <NavLink href="/operations" label="Operations"/>
                <ServerPanel/>
            </nav>
            <main class="content">{children()}</main>
        </div>
    }
}

/// One section link, marked current when its page is shown (`/` counts as Jobs).
#[component]
fn NavLink(href: &'static str, label: &'static str) -> impl IntoView {
    let location = use_location();
    let current = move || {
        let path = location.pathname.get();
        path.starts_with(href) || (href == "/jobs" && path == "/")
    };
    view! {
        <A href=href attr:class="nav-link" attr:aria-current=move || current().then_some("page")>
            {label}
        </A>
    }
}

/// Shows which server and device the console talks to, with a button to check again.
#[component]
fn ServerPanel() -> impl IntoView {
    let refresh = RwSignal::new(0u32);
    let info = Resource::new(move || refresh.get(), |_| fetch_server_info());

    view! {
        <section class="server-panel" aria-label="Server">
            <h2>"Server"</h2>
            <Transition fallback=|| view! { <p class="muted">"Checking…"</p> }>
                {move || info.get().map(|result| match result {
                    Ok(info) => view! { <ServerFacts info/> }.into_any(),
                    Err(error) => view! {
                        <p class="error" role="alert">{format!("Server unreachable: {error}")}</p>
                    }.into_any(),
                })}
            </Transition>
            <button type="button" class="button small" on:click=move |_| refresh.update(|n| *n += 1)>
                "Check again"
            </button>
            <p class="muted checks" data-testid="server-checks">{move || format!("Checks: {}", refresh.get() + 1)}</p>
        </section>
    }
}

#[component]
fn ServerFacts(info: ServerInfo) -> impl IntoView {
    view! {
        <dl class="facts" data-testid="server-facts">
            <dt>"Version"</dt><dd>{info.version}</dd>
            <dt>"Device"</dt><dd>{format!("{} ({} CUDA)", info.device, info.cuda_devices)}</dd>
            <dt>"Data"</dt><dd class="path">{info.data_dir}</dd>
        </dl>
    }
}
