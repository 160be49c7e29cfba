//! rq-worker (being written).
