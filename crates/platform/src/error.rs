/// Why the platform could not start or stopped: its parts' errors, kept whole.
#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    #[error(transparent)]
    Control(#[from] serval_control::ControlError),
    #[error(transparent)]
    Store(#[from] serval_store::StoreError),
    #[error(transparent)]
    Runtime(#[from] serval_runtime::RuntimeError),
    #[error("io error: {0}")]
    Io(#[from] std::io::Error),
}
