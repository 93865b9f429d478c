//! lifeboat's reconciler and the controller around it.
//!
//! - The reconcile cycle: [`reconcile`] fetches the policy repository
//!   ([`files`], [`policies`]), reads the backup catalog ([`catalog`],
//!   [`locations`]), plans with `lifeboat_core::plan`, runs the plan
//!   ([`executor`], [`jobs`]) and writes status to Git ([`status`]).
//! - The long-running parts: [`run`] (the loop), [`metrics`] (Prometheus
//!   registry), [`http`] (metrics, health and webhook server), [`leader`]
//!   (Lease-based leader election) and [`shutdown`] (signals, cancellation,
//!   draining within the grace period).
//! - Volume data: [`volume_data`] carries claims' data into a backup and
//!   back (by hand and from the controller alike); [`dumps`] streams dump
//!   hooks' stdout into a backup as artifacts.

pub mod catalog;
pub mod dumps;
pub mod executor;
pub mod files;
pub mod http;
pub mod images;
pub mod jobs;
pub mod leader;
pub mod locations;
pub mod metrics;
pub mod policies;
pub mod reconcile;
pub mod run;
pub mod shutdown;
pub mod status;
pub mod volume_data;
pub mod work;
