//! The sans-IO session lives in [`ssh_session`]; re-exported for the driver.
pub use ssh_session::*;
