//! Integration tests of lifeboat-git against real repositories built with the
//! `git` CLI: local bare remotes, smart HTTP(S) through `git-http-backend`, and
//! SSH through a throw-away `sshd`.

mod http;
mod local;
mod publish;
mod ssh;
mod ssh_server;
mod support;
