//! The navigation frame every console page sits in: brand, who is logged in (with Log out), the
//! main sections (Jobs, Models, Operations) and a server status panel. The login page gets a
//! bare frame: nothing in the full one can be read before logging in.

use leptos::prelude::*;
use leptos_router::components::A;
use leptos_router::hooks::use_location;

use crate::api::{fetch_server_info, fetch_session, ServerInfo, SessionInfo};

/// The frame around each page. `data-hydrated` turns `true` once the browser has taken over the
/// server-rendered page, which is what the browser tests wait for before they interact.
#[component]
pub fn Frame(children: Children) -> impl IntoView {
    let location = use_location();
    let hydrated = RwSignal::new(false);
    Effect::new(move |_| hydrated.set(true));

    // Leaving the login page is a full page load (the form posts to the server), so the choice
    // holds for the frame's life.
    if location.pathname.get_untracked() == "/login" {
        return view! {
            <div class="frame bare" data-hydrated=move || hydrated.get().to_string()>
                <main class="content">{children()}</main>
            </div>
        }
        .into_any();
    }

    view! {
        <div class="frame" data-hydrated=move || hydrated.get().to_string()>
            <header class="topbar">
                <a class="brand" href="/">
                    <span class="brand-mark" aria-hidden="true">"◆"</span>
                    " Anneal"
                </a>
                <span class="tagline">"Train, version and serve PyTorch models"</span>
                <form class="project-switch" action="/console/project" method="get">
                    <label>"Project "
                        <input name="name" size="12" prop:value=move || current_project(&location.pathname.get())/>
                    </label>
                </form>
                <SessionPanel/>
            </header>
            <nav class="sidebar" aria-label="Sections">
                <NavLink section="jobs" label="Jobs"/>
                <NavLink section="models" label="Models"/>
                <NavLink section="operations" label="Operations"/>
                <ServerPanel/>
            </nav>
            <main class="content">{children()}</main>
        </div>
    }
    .into_any()
}

/// Who is logged in (token name and role), and the Log out button (a plain form post).
#[component]
fn SessionPanel() -> impl IntoView {
    let session = Resource::new(|| (), |()| fetch_session());
    view! {
        <div class="session" data-testid="session">
            <Transition fallback=|| ()>
                {move || session.get().map(|result| match result {
                    Ok(info) => view! { <SessionFacts info/> }.into_any(),
                    Err(_) => view! { <span class="muted">"Not logged in"</span> }.into_any(),
                })}
            </Transition>
        </div>
    }
}

#[component]
fn SessionFacts(info: SessionInfo) -> impl IntoView {
    let SessionInfo { name, role, auth_enabled } = info;
    view! {
        <span class="who" title="The token this console acts as">
            <span class="who-name">{name}</span>
            " "
            <span class="badge role">{role}</span>
        </span>
        {auth_enabled.then(|| view! {
            <form class="logout" method="post" action="/console/logout">
                <button type="submit" class="button small">"Log out"</button>
            </form>
        })}
    }
}

/// The project a console path shows: `/projects/{project}/...`, else `default`.
fn current_project(path: &str) -> String {
    path.strip_prefix("/projects/")
        .and_then(|rest| rest.split('/').next())
        .filter(|p| !p.is_empty())
        .unwrap_or("default")
        .to_owned()
}

/// One section link of the current project, marked current when its page is shown (`/` counts
/// as Jobs).
#[component]
fn NavLink(section: &'static str, label: &'static str) -> impl IntoView {
    let location = use_location();
    let href = move || format!("/projects/{}/{section}", current_project(&location.pathname.get()));
    let current = move || {
        let path = location.pathname.get();
        let rest = path.strip_prefix("/projects/").and_then(|r| r.split_once('/')).map_or(path.as_str(), |(_, r)| r);
        rest.trim_start_matches('/').starts_with(section) || (section == "jobs" && (path == "/" || path.is_empty()))
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
