//! Stores: the database tables, one type per table. Services use these; no
//! SQL lives anywhere else.

pub mod api_tokens;
pub mod audit;
pub mod blocklist;
pub mod email_links;
pub mod sessions;
pub mod signups;

pub use api_tokens::ApiTokenStore;
pub use audit::AuditStore;
pub use blocklist::BlocklistStore;
pub use email_links::EmailLinkStore;
pub use sessions::SqlSessionStore;
pub use signups::{NewSignup, Signup, SignupStore};
