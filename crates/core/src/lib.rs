//! lifeboat's core: the policy model, YAML loading with source spans, schema
//! validation, lint rules, schedules, retention and the planner.
//!
//! Nothing here performs I/O. Callers read files and hand `(path, text)` pairs
//! in, and pass the current time in as `now`.
