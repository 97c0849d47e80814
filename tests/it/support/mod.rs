//! What the tests share, one file per concern; `use crate::support::*` brings it all in.

mod arb;
mod broker;
mod certs;
mod env;
mod events;
mod frameworks;
mod http;
mod pgbouncer;
mod process;
mod proxy;
mod publish;
mod services;
mod settings;
mod sql;
mod tls;
mod wait;
mod worker;

pub(crate) use arb::*;
pub(crate) use broker::*;
pub(crate) use certs::*;
pub(crate) use env::*;
pub(crate) use events::*;
pub(crate) use frameworks::*;
pub(crate) use http::*;
pub(crate) use pgbouncer::*;
pub(crate) use process::*;
pub(crate) use proxy::*;
pub(crate) use publish::*;
pub(crate) use services::*;
pub(crate) use settings::*;
pub(crate) use sql::*;
pub(crate) use tls::*;
pub(crate) use wait::*;
pub(crate) use worker::*;
