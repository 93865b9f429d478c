//! Servers the test suites of several crates share. Nothing here ships in
//! the `lifeboat` binary: it is a dev-dependency only.

pub mod s3;
