//! Integration tests of forge-test-support: every server is really started, used through the
//! client library forge uses for it, and torn down.
//!
//! One test binary with a module per server keeps linking time down.

mod browser;
mod ldap;
mod redis;
mod smtp;
mod sql;
