//! The sandbox role: a connector that ships a stateful fake of its vendor's API runs it for
//! `rollcall sandbox KIND` and `rollcall demo` through this trait, so the engine lists, seeds
//! and starts sandboxes without knowing whose they are.
//!
//! The trait carries no web framework: the sandboxes themselves (feature `sandbox` of each
//! connector, built on [`crate::sandbox`]) stay behind their feature, and a connector built
//! without it simply has no sandbox role.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;

/// A sandbox's work, run on the caller's task (sandboxes' futures need not be `Send`).
pub type SandboxFuture<T> = Pin<Box<dyn Future<Output = T>>>;

/// A connector's sandbox, run standalone.
pub trait SandboxRole: Send + Sync {
    /// The vendor's product as people name it ("Xero"), for banners.
    fn title(&self) -> &'static str;

    /// Prints the sandbox's banner (where it listens, the credentials a client needs) and runs
    /// it on `addr` until interrupted, seeded from the JSON file `seed` or else its demo seed.
    fn run(&self, addr: SocketAddr, seed: Option<&Path>) -> SandboxFuture<Result<(), String>>;

    /// Starts it with its demo seed on a free loopback port, for `rollcall demo`; `None` for a
    /// sandbox that does not count its writes (the demo checks that a resync writes nothing).
    fn start_demo(&self) -> Option<SandboxFuture<Box<dyn RunningSandbox>>> {
        None
    }
}

/// A sandbox started by [`SandboxRole::start_demo`]; it stops when dropped.
pub trait RunningSandbox {
    /// The base URL a pipeline's target names.
    fn url(&self) -> String;

    /// Requests that changed something, so far.
    fn write_requests(&self) -> u64;
}

/// A sandbox seed from a JSON file, with the file and position in the error.
pub fn read_seed<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text)
        .map_err(|e| format!("{}:{}:{}: {e}", path.display(), e.line(), e.column()))
}

/// The seed from `path`, or `demo()` without one.
pub fn seed_or<T: serde::de::DeserializeOwned>(
    path: Option<&Path>,
    demo: impl FnOnce() -> T,
) -> Result<T, String> {
    match path {
        Some(path) => read_seed(path),
        None => Ok(demo()),
    }
}
