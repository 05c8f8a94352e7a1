//! The browser entry point: hydrates the HTML that the server rendered with the same `app::App`.
//! Nothing else lives here; pages and components belong to the `app` crate.

#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    leptos::mount::hydrate_body(app::App);
}
