//! How a connector joins the engine: its config type builds the role it plays.
//!
//! The engine's registry (`src/config/connectors.rs`) lists each connector's config type once;
//! everything else goes through these traits, so no vendor name is matched anywhere else.

use std::path::Path;
use std::sync::Arc;

use crate::oauth::TokenVault;
use crate::{BillingSystem, Directory, RemoteError};

/// What the engine lends a billing system when it is built.
#[derive(Clone)]
pub struct BuildContext {
    /// Where OAuth connections keep their rotating tokens (rollcall's store).
    pub tokens: Arc<dyn TokenVault>,
    /// The mark a billing system puts on what it makes, so that what one pipeline made is
    /// known as its own without the store ([`owner_mark`]); a system with no field to carry
    /// it ignores it.
    pub mark: String,
}

/// The mark of the objects `pipeline` makes: `rollcall:` and eight hex digits of a hash of the
/// pipeline's name. Short and fixed in length, so it fits any vendor's field; one pipeline's
/// mark never claims what another pipeline billing the same company made.
pub fn owner_mark(pipeline: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(pipeline.as_bytes());
    let hex: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    format!("rollcall:{hex}")
}

impl BuildContext {
    /// A context with an empty in-memory token vault: for systems that need none, and tests.
    pub fn in_memory() -> Self {
        BuildContext {
            tokens: Arc::new(crate::oauth::MemoryVault::default()),
            mark: owner_mark(""),
        }
    }

    /// This context, marking objects as made by `pipeline`.
    pub fn for_pipeline(self, pipeline: &str) -> Self {
        BuildContext {
            mark: owner_mark(pipeline),
            ..self
        }
    }
}

/// A billing system's section of a pipeline (`target:`), after secrets are resolved.
pub trait BillingConfig {
    /// The `target:` section `rollcall init` writes, commented for a first setup (indented to
    /// sit under `target:`).
    const STARTER: &'static str = "";

    fn build(&self, context: &BuildContext) -> Result<Arc<dyn BillingSystem>, RemoteError>;

    /// The OAuth app and connection this target signs in with, for `rollcall connect`; `None`
    /// for systems with static keys.
    fn oauth(&self) -> Option<crate::oauth::ConnectApp> {
        None
    }

    /// The webhook this kind of system pushes its changes to, if it does.
    fn inbound() -> Option<&'static dyn crate::inbound::Inbound> {
        None
    }

    /// The sandbox of this kind of system, if the connector was built with one.
    fn sandbox() -> Option<&'static dyn crate::standalone::SandboxRole> {
        None
    }
}

/// A directory's section of a pipeline (`clients[].directory:`). `pipeline_dir` is the folder of
/// the pipeline file, against which relative paths are resolved.
pub trait DirectoryConfig {
    /// The body of a `directory:` section `rollcall init` writes (starting with the kind).
    const STARTER: &'static str = "";

    fn build(&self, pipeline_dir: &Path) -> Arc<dyn Directory>;

    /// [`build`](Self::build) for one client of a run: the groups its rules name, and what
    /// the run's directories share. Directories that gain nothing from either build as usual.
    fn build_in(
        &self,
        pipeline_dir: &Path,
        context: &crate::directory::DirectoryContext,
    ) -> Arc<dyn Directory> {
        let _ = context;
        self.build(pipeline_dir)
    }

    /// The tenant whose change notifications concern this directory (an Entra tenant), so a
    /// notification resyncs only the clients it is about; `None` for sources that send none.
    fn notifying_tenant(&self) -> Option<&str> {
        None
    }

    /// The subscriptions that make this directory notify rollcall of changes; `None` for
    /// sources that cannot.
    fn change_notifications(&self) -> Option<Arc<dyn crate::notify::ChangeNotifications>> {
        None
    }

    /// The webhook this kind of directory pushes its changes to, if it does.
    fn inbound() -> Option<&'static dyn crate::inbound::Inbound> {
        None
    }

    /// The sandbox of this kind of directory, if the connector was built with one.
    fn sandbox() -> Option<&'static dyn crate::standalone::SandboxRole> {
        None
    }
}

/// Reads a whole-number setting and refuses one outside `range`, with `error(value)` as the
/// message — at the setting's line and column, since the pipeline reader positions it.
/// Connectors' page sizes and rate limits all need this one check.
pub fn u32_within<'de, D, E>(
    deserializer: D,
    range: std::ops::RangeInclusive<u32>,
    error: impl FnOnce(u32) -> E,
) -> Result<u32, D::Error>
where
    D: serde::Deserializer<'de>,
    E: std::fmt::Display,
{
    let value = <u32 as serde::Deserialize>::deserialize(deserializer)?;
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(serde::de::Error::custom(error(value)))
    }
}

#[cfg(test)]
mod mark_tests {
    use super::owner_mark;

    #[test]
    fn each_pipeline_has_its_own_short_stable_mark() {
        assert_eq!(owner_mark("demo"), owner_mark("demo"));
        assert_ne!(owner_mark("demo"), owner_mark("m365-licences"));
        assert_eq!(owner_mark(&"x".repeat(10_000)).len(), "rollcall:".len() + 8);
    }
}
