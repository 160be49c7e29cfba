//! Stores: the database tables, one type per table. Services use these; no
//! SQL lives anywhere else.

pub mod blocklist;
pub mod sessions;
pub mod signups;

pub use blocklist::BlocklistStore;
pub use sessions::SqlSessionStore;
pub use signups::{NewSignup, Signup, SignupStore};
