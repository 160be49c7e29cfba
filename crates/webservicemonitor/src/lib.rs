//! webservicemonitor: keeps tools' web services running, and `webservice`,
//! the command tool owners start and stop them with.
//!
//! Every interval the monitor makes one [`monitor::Monitor::pass`] over all
//! tools: it reads each `service.manifest` ([`manifest`]), asks the job
//! scheduler which jobs run ([`scheduler`]), reads the active proxy's `/list`
//! and probes registered backends ([`proxy`]), and restarts the web services
//! that should run but don't — through a throttle kept in Redis, under a lease
//! so only one monitor acts ([`store`]) — noting what it did in the tool's
//! `service.log` ([`servicelog`]).
//!
//! * [`config`] — both programs' configuration;
//! * [`template`] — the argv templates of configured commands;
//! * [`users`] — tool uid lookup (passwd or a table);
//! * [`webservice`] — the `webservice` command's logic.
//!
//! Entry points: [`monitor::run`] (the daemon loop, given a configuration, a
//! Redis [`store::Store`], a status board and a `Shutdown`) and
//! [`webservice::Webservice::execute`].

pub mod config;
pub mod manifest;
pub mod monitor;
pub mod proxy;
pub mod scheduler;
pub mod servicelog;
pub mod store;
pub mod template;
pub mod users;
pub mod webservice;

pub use config::{MonitorConfig, WebserviceConfig};
pub use monitor::{Action, Monitor, PassReport, RunOptions, ToolDecision, run};
pub use scheduler::{Job, JobTable, Scheduler};
pub use store::Store;
pub use webservice::{Invocation, Verb, Webservice};
