//! lifeboat's in-cluster controller.
//!
//! This crate holds the long-running parts around the reconcile loop:
//! [`metrics`] (Prometheus registry), [`http`] (metrics, health and webhook
//! server), [`leader`] (Lease-based leader election) and [`shutdown`]
//! (signals, cancellation, draining tasks within the grace period).

pub mod http;
pub mod leader;
pub mod metrics;
pub mod shutdown;
