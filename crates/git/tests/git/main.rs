//! Integration tests of lifeboat-git against real repositories built with the
//! `git` CLI: local bare remotes, and smart HTTP(S) through `git-http-backend`.

mod http;
mod local;
mod publish;
mod ssh;
mod support;
