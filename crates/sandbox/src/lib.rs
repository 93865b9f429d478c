//! An in-memory Kubernetes API server for lifeboat's tests and demo.
