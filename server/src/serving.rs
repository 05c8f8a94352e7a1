//! Model serving: the only module that touches libtorch (through `tch`).
//!
//! Tensors never run on the async runtime: every libtorch call here runs on a blocking thread
//! (and, once versions are served, on each model's own worker threads).

use serde::Serialize;

/// What libtorch offers on this host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Accelerators {
    /// The number of CUDA devices libtorch can use (0 without a GPU or CUDA driver).
    pub cuda_devices: i64,
}

impl Accelerators {
    /// Asks libtorch which devices it can use. This loads libtorch's CUDA runtime, which takes a
    /// moment, so it runs on a blocking thread.
    pub async fn detect() -> Self {
        let cuda_devices = tokio::task::spawn_blocking(|| {
            if tch::Cuda::is_available() {
                tch::Cuda::device_count()
            } else {
                0
            }
        })
        .await
        .unwrap_or(0);
        Self { cuda_devices }
    }

    /// `cuda` when a GPU is usable, else `cpu`: where predictions run.
    pub fn device_label(&self) -> &'static str {
        if self.cuda_devices > 0 {
            "cuda"
        } else {
            "cpu"
        }
    }
}
