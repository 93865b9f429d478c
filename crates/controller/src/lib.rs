//! lifeboat's reconciler: reads the policy repository and the backup
//! catalog, plans with `lifeboat_core::plan`, executes the plan against the
//! cluster and object storage, and writes status back to Git.

pub mod files;
pub mod jobs;
pub mod locations;
pub mod policies;
