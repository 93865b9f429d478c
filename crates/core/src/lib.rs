//! lifeboat's core: the policy model, YAML loading with source spans, schema
//! validation, lint rules, schedules, retention and the planner.
//!
//! Nothing here performs I/O. Callers read files and hand `(path, bytes)`
//! pairs in, and pass the current time in as `now`.
//!
//! ```text
//! (path, bytes) ──yaml::parse──▶ JSON + spans ──schema::validate──▶ Document
//!                                                       │
//!                              PolicySet ◀──load────────┘ ──lint::check──▶ Diagnostics
//!                                  │
//!        Observed (store), now ──▶ plan::plan ──▶ Plan (actions, facts) ──plan::compare──▶ Change
//! ```

pub mod diagnostic;
pub mod duration;
pub mod hooks;
pub mod images;
pub mod import;
pub mod kubevirt;
pub mod lint;
pub mod load;
pub mod model;
pub mod plan;
pub mod prerequisites;
pub mod quantity;
pub mod retention;
pub mod schedule;
pub mod schema;
pub mod select;
pub mod selector;
pub mod volumes;
pub mod yaml;

pub use diagnostic::{Code, Diagnostic, Severity, Span};
pub use duration::Duration;
pub use model::*;
