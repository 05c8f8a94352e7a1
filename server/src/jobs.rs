//! Jobs as typed values, below both control and the executors: what a job is asked to do (its
//! [`plan::JobPlan`], checked once by control at `jobs.create`, stored once, run as is), what it
//! reports ([`wire`]: outputs, trials and states, shared with the console), the tuning
//! [`study`] it may carry, and the [`executor`] interface every backend implements.
//!
//! Nothing here does I/O or reaches up: control builds plans and decides which job runs when; an
//! executor runs what it is given and reports back through [`executor::JobEvent`]s.

pub mod executor;
pub mod plan;
pub mod study;

/// The API's job types (`GoogleCloudMlV1__Job` and its parts), defined once in the `app` crate so
/// the console reads exactly what the server writes.
pub mod wire {
    pub use app::jobs::*;
}

pub use executor::{Capacity, Ending, Event, JobEvent, JobExecutor, JobFiles, JobOutput, Submission};
pub use plan::{JobPlan, Needs, PredictionPlan, TrainingPlan, Work};
pub use wire::JobState;
