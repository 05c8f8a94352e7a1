//! Use cases: the one place where Anneal decides things. The REST API, the console and the CLI
//! all call these, so their behaviour cannot drift apart.

mod health;
mod projects;

use std::path::PathBuf;

pub use health::{Check, Readiness};
pub use projects::ProjectConfig;

use crate::serving::Accelerators;
use crate::storage::LocalStorage;
use crate::store::Store;

/// The handle every surface holds: cheap to clone, shared by all requests.
#[derive(Clone, Debug)]
pub struct Control {
    store: Store,
    storage: LocalStorage,
    accelerators: Accelerators,
    data_dir: PathBuf,
}

impl Control {
    /// Assembles the use cases over opened parts.
    pub fn new(
        store: Store,
        storage: LocalStorage,
        accelerators: Accelerators,
        data_dir: PathBuf,
    ) -> Self {
        Self {
            store,
            storage,
            accelerators,
            data_dir,
        }
    }

    /// What libtorch offers on this host.
    pub fn accelerators(&self) -> &Accelerators {
        &self.accelerators
    }

    /// The data directory.
    pub fn data_dir(&self) -> &std::path::Path {
        &self.data_dir
    }
}
