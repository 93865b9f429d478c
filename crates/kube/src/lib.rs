//! lifeboat's Kubernetes edge: what to back up (selection), how restored
//! objects are rewritten (transforms) and in which order they are applied.
//!
//! ```text
//! backup:  discovery ─▶ list (paged, concurrent) ─▶ Selection ─▶ archive
//! restore: verify ─▶ archive ─▶ Selection ─▶ transform ─▶ order into tiers ─▶ apply
//!          (see `restore`)
//! plan:    claims, volumes, classes, pods ─▶ core::volumes::Inventory (see `inventory`)
//! ```

pub mod backup;
pub mod hooks;
pub mod inventory;
pub mod kubevirt;
pub mod level_hooks;
pub mod openshift;
pub mod order;
pub mod paths;
mod raw;
pub mod restore;
pub mod restore_hooks;
pub mod select;
pub mod transform;
pub mod volumes;

pub use paths::pod_path;
