//! Small components and helpers shared by the console's pages.

use std::collections::BTreeMap;

use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_params_map;
use serde_json::Value;

/// A page's title (browser tab and heading) above its content.
#[component]
pub fn PageHeading(#[prop(into)] title: TextProp, #[prop(optional)] children: Option<Children>) -> impl IntoView {
    let heading = title.clone();
    view! {
        <Title text=title/>
        <div class="page-heading">
            <h1>{move || heading.get().to_string()}</h1>
            {children.map(|c| view! { <div class="heading-actions">{c()}</div> })}
        </div>
    }
}

/// What a list shows when it has nothing in it: what is missing and how it comes to be.
#[component]
pub fn EmptyState(#[prop(into)] message: String, #[prop(into)] hint: String) -> impl IntoView {
    view! {
        <div class="empty-state">
            <p>{message}</p>
            <p class="muted">{hint}</p>
        </div>
    }
}

/// A resource state (job, version, operation) with the same colour everywhere.
#[component]
pub fn StateBadge(#[prop(into)] state: String) -> impl IntoView {
    let class = format!("badge state-{}", state.to_ascii_lowercase());
    view! { <span class=class data-testid="state">{state}</span> }
}

/// An error shown in place of what could not be loaded or done.
#[component]
pub fn ErrorNotice(#[prop(into)] message: String) -> impl IntoView {
    view! { <p class="error notice" role="alert">{message}</p> }
}

/// The project in the URL (`/projects/{project}/...`), else `default`.
pub fn use_project() -> Memo<String> {
    let params = use_params_map();
    Memo::new(move |_| params.with(|p| p.get("project")).unwrap_or_else(|| "default".to_owned()))
}

/// A route parameter.
pub fn use_param(name: &'static str) -> Memo<String> {
    let params = use_params_map();
    Memo::new(move |_| params.with(|p| p.get(name)).unwrap_or_default())
}

/// A counter that goes up every `millis` ms while `active()` holds (in the browser only); pages
/// key their resources on it to refresh live data.
pub fn use_ticker(millis: u64, active: impl Fn() -> bool + Clone + Send + Sync + 'static) -> RwSignal<u32> {
    let tick = RwSignal::new(0u32);
    Effect::new(move |_| {
        let active = active.clone();
        let handle = set_interval_with_handle(
            move || {
                if active() {
                    tick.update(|n| *n = n.wrapping_add(1));
                }
            },
            std::time::Duration::from_millis(millis),
        );
        if let Ok(handle) = handle {
            on_cleanup(move || handle.clear());
        }
    });
    tick
}

/// A string field of an API resource, or "".
pub fn text(value: &Value, key: &str) -> String {
    match value.pointer(key).or_else(|| value.get(key)) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

/// `2026-11-28T02:40:58.123Z` as `2026-11-28 02:40:58`.
pub fn short_time(rfc3339: &str) -> String {
    if rfc3339.len() < 19 {
        return rfc3339.to_owned();
    }
    format!("{} {}", &rfc3339[..10], &rfc3339[11..19])
}

/// Seconds since the Unix epoch of an RFC 3339 UTC time (`...Z`).
pub fn epoch_seconds(rfc3339: &str) -> Option<f64> {
    let b = rfc3339.as_bytes();
    if b.len() < 19 {
        return None;
    }
    let num = |range: std::ops::Range<usize>| rfc3339.get(range)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, min, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let fraction: f64 = rfc3339
        .get(19..)
        .and_then(|rest| rest.strip_prefix('.'))
        .map(|rest| rest.trim_end_matches('Z'))
        .and_then(|digits| format!("0.{digits}").parse().ok())
        .unwrap_or(0.0);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + h * 3600 + min * 60 + s) as f64 + fraction)
}

/// A human duration between two RFC 3339 times (`end` empty: until `now`, when known).
pub fn duration(start: &str, end: &str) -> String {
    let (Some(a), Some(b)) = (epoch_seconds(start), epoch_seconds(end)) else { return String::new() };
    let total = (b - a).max(0.0);
    if total < 60.0 {
        format!("{total:.1} s")
    } else if total < 3600.0 {
        format!("{} min {} s", (total / 60.0) as u64, (total % 60.0) as u64)
    } else {
        format!("{} h {} min", (total / 3600.0) as u64, ((total % 3600.0) / 60.0) as u64)
    }
}

/// A resource's `labels` as `k=v, k=v`.
pub fn labels_text(value: &Value) -> String {
    let labels: BTreeMap<String, String> =
        value.get("labels").and_then(|labels| serde_json::from_value(labels.clone()).ok()).unwrap_or_default();
    labels_line(&labels)
}

/// Labels as `k=v, k=v`.
pub fn labels_line(labels: &BTreeMap<String, String>) -> String {
    labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ")
}

/// Parses `k=v, k=v` into a labels object.
pub fn parse_labels(text: &str) -> Result<serde_json::Map<String, Value>, String> {
    let mut labels = serde_json::Map::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').ok_or_else(|| format!("'{pair}' is not key=value"))?;
        labels.insert(k.trim().to_owned(), Value::String(v.trim().to_owned()));
    }
    Ok(labels)
}

/// The last path segment of a resource name (`projects/p/models/m` → `m`).
pub fn last_segment(name: &str) -> String {
    name.rsplit('/').next().unwrap_or(name).to_owned()
}

/// Milliseconds since the epoch in the browser (0 on the server).
pub fn now_millis() -> f64 {
    #[cfg(feature = "hydrate")]
    {
        js_sys::Date::now()
    }
    #[cfg(not(feature = "hydrate"))]
    {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_durations_read_the_api_format() {
        assert_eq!(epoch_seconds("1970-01-01T00:00:00Z"), Some(0.0));
        assert_eq!(epoch_seconds("2000-03-01T00:00:01.500Z"), Some(951_868_801.5));
        assert_eq!(duration("2026-11-28T02:40:58.000Z", "2026-11-28T02:42:08.000Z"), "1 min 10 s");
        assert_eq!(short_time("2026-11-28T02:40:58.123Z"), "2026-11-28 02:40:58");
        assert_eq!(parse_labels("a=1, b = two").expect("labels").len(), 2);
        assert!(parse_labels("nope").is_err());
        let labels = BTreeMap::from([("b".to_owned(), "2".to_owned()), ("a".to_owned(), "1".to_owned())]);
        assert_eq!(labels_line(&labels), "a=1, b=2");
        assert_eq!(labels_text(&serde_json::json!({"labels": {"team": "vision"}})), "team=vision");
    }
}
