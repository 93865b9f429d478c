//! lifeboat's Kubernetes edge: what to back up (selection), how restored
//! objects are rewritten (transforms) and in which order they are applied.
//!
//! ```text
//! backup:  discovery ─▶ list (paged, concurrent) ─▶ Selection ─▶ archive
//! restore: archive ─▶ Selection ─▶ transform ─▶ order into tiers ─▶ apply
//! ```

pub mod backup;
pub mod order;
pub mod select;
pub mod transform;
