//! The console's pages. Each page is its own module under `pages/`.

mod jobs;
mod models;
mod not_found;
mod operations;

pub use jobs::JobsPage;
pub use models::ModelsPage;
pub use not_found::NotFound;
pub use operations::OperationsPage;
