//! The console's pages. Each page is its own module under `pages/`.

mod job;
mod jobs;
mod login;
mod model;
mod models;
mod not_found;
mod operations;
mod version;

pub use job::JobPage;
pub use jobs::JobsPage;
pub use login::LoginPage;
pub use model::ModelPage;
pub use models::ModelsPage;
pub use not_found::NotFound;
pub use operations::OperationsPage;
pub use version::VersionPage;
