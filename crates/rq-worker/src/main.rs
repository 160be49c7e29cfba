//! rq-worker.
fn main() {}
