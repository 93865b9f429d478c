//! Which objects a BackupPolicy or RestoreRequest selects. The rules live in
//! `lifeboat_core::select` (the volume planner needs them too, without I/O);
//! this module keeps their old path.

pub use lifeboat_core::select::*;
