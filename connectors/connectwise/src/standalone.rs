//! `rollcall sandbox connectwise` and (where it counts writes) `rollcall demo`: this connector's
//! sandbox in its role, with the banner that tells a user how to point a pipeline at it.

use std::net::SocketAddr;
use std::path::Path;

use rollcall_core::standalone::{RunningSandbox, SandboxFuture, SandboxRole, seed_or};

use crate::sandbox::{Sandbox, Seed, run_standalone};

/// This connector's sandbox, run standalone.
#[derive(Debug, Clone, Copy, Default)]
pub struct Standalone;

impl SandboxRole for Standalone {
    fn title(&self) -> &'static str {
        "ConnectWise Manage"
    }

    fn run(&self, addr: SocketAddr, seed: Option<&Path>) -> SandboxFuture<Result<(), String>> {
        let seed = seed.map(Path::to_owned);
        Box::pin(async move {
            let seed = seed_or(seed.as_deref(), Seed::demo)?;
            println!(
                "ConnectWise Manage sandbox at http://{addr}{} (company id `{}`; keys as in the seed); Ctrl-C stops it",
                crate::sandbox::API_BASE,
                seed.credentials.company_id
            );
            run_standalone(addr, seed).await.map_err(|e| e.to_string())
        })
    }

    fn start_demo(&self) -> Option<SandboxFuture<Box<dyn RunningSandbox>>> {
        Some(Box::pin(async {
            Box::new(Sandbox::start(Seed::demo()).await) as Box<dyn RunningSandbox>
        }))
    }
}

impl RunningSandbox for Sandbox {
    fn url(&self) -> String {
        Sandbox::url(self)
    }

    fn write_requests(&self) -> u64 {
        Sandbox::write_requests(self)
    }
}
