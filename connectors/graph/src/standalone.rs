//! `rollcall sandbox graph` and (where it counts writes) `rollcall demo`: this connector's
//! sandbox in its role, with the banner that tells a user how to point a pipeline at it.

use std::net::SocketAddr;
use std::path::Path;

use rollcall_core::standalone::{SandboxFuture, SandboxRole, seed_or};

use crate::sandbox::{Seed, run_standalone};

/// This connector's sandbox, run standalone.
#[derive(Debug, Clone, Copy, Default)]
pub struct Standalone;

impl SandboxRole for Standalone {
    fn title(&self) -> &'static str {
        "Microsoft Graph"
    }

    fn run(&self, addr: SocketAddr, seed: Option<&Path>) -> SandboxFuture<Result<(), String>> {
        let seed = seed.map(Path::to_owned);
        Box::pin(async move {
            let seed = seed_or(seed.as_deref(), Seed::demo)?;
            println!(
                "Microsoft Graph sandbox at http://{addr} (login_url and graph_url; tenant `{}`, client id `{}`; secret as in the seed); Ctrl-C stops it",
                seed.tenant_id, seed.client_id
            );
            run_standalone(addr, seed).await.map_err(|e| e.to_string())
        })
    }
}
