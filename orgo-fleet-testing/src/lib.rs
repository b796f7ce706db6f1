//! Test support for orgo's fleet: real servers, each a process of its own on
//! 127.0.0.1 with its data in a temporary directory, stopped on drop.
//!
//! - [`Postgres`]: `initdb` and `postgres` from Debian's PostgreSQL.
//! - [`S3Server`]: `orgo-test-s3`, this crate's binary: s3s-fs, an
//!   S3-compatible server that keeps objects as files.
//! - [`Fleet`]: one of each, with a host's environment for them, the
//!   fleet's store opened, and [`seed_base_image`] to upload a base image
//!   a test home built.

mod fleet;
mod postgres;
mod s3;

pub use crate::fleet::{Fleet, s3_blobs, seed_base_image};
pub use crate::postgres::Postgres;
pub use crate::s3::S3Server;
