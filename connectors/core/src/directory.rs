//! The directory role: where the people of one client come from.

use std::any::Any;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::person::Person;

/// Whether a read saw the whole directory.
///
/// A read cut short (a dropped connection mid-paging, a size limit, a malformed export) still
/// returns what it saw, but marked [`Completeness::Incomplete`]: the planner may then add seats,
/// never remove them. "Zero people" must never be mistaken for "could not read".
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Completeness {
    Complete,
    Incomplete { reason: String },
}

impl Completeness {
    pub fn is_complete(&self) -> bool {
        matches!(self, Completeness::Complete)
    }
}

/// What one read of a directory returned.
#[derive(Debug, Clone)]
pub struct DirectoryRead {
    /// Everyone in scope: a directory that reads incrementally still returns the whole set,
    /// merged from its cursor, so the engine never reasons about deltas.
    pub people: Vec<Person>,
    pub completeness: Completeness,
    /// Problems that did not stop the read (a malformed row, an unreadable attribute), each
    /// naming where: shown to the operator, and the reason the read is incomplete.
    pub warnings: Vec<String>,
    /// State to hand back on the next read so it can ask only for changes (a Graph delta link
    /// and the people it had). `None` for directories that always read everything.
    pub cursor: Option<Cursor>,
    /// The licences the tenant has bought, where the directory knows them (Graph's
    /// subscribedSkus): what a client pays for when billed by purchased rather than assigned.
    pub subscriptions: Vec<Subscription>,
}

/// A licence the tenant has bought: how many, and how many are assigned.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Subscription {
    /// The SKU part number (`SPB`).
    pub sku: String,
    pub name: String,
    pub purchased: u32,
    pub assigned: u32,
}

impl DirectoryRead {
    pub fn complete(people: Vec<Person>) -> Self {
        DirectoryRead {
            people,
            completeness: Completeness::Complete,
            warnings: Vec::new(),
            cursor: None,
            subscriptions: Vec::new(),
        }
    }
}

/// A directory's incremental-read state, opaque to the engine, which only stores it between
/// runs (per pipeline and client) and hands it back. It may hold people's data, so it lives in
/// rollcall's store and never in logs.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Cursor(pub serde_json::Value);

impl std::fmt::Debug for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cursor(..)")
    }
}

/// A read that produced nothing usable at all.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    /// The directory could not be reached or opened (file missing, server down).
    #[error("{source_name}: cannot read: {message}")]
    Unavailable {
        source_name: String,
        message: String,
    },
    /// The directory answered, but with something we cannot parse.
    #[error("{source_name}: {message}")]
    Malformed {
        source_name: String,
        message: String,
    },
}

/// A source of people for one client.
#[async_trait]
pub trait Directory: Send + Sync + std::fmt::Debug {
    /// A short human name for logs and errors ("file acme.csv", "ldap dc1.acme.local").
    fn describe(&self) -> String;

    /// Reads every person in scope, starting from `cursor` when the directory can read
    /// incrementally (a cursor it cannot use — expired, from another version — means a full
    /// read, never an error). Errors only when nothing usable was read; a partial read returns
    /// `Ok` with [`Completeness::Incomplete`].
    async fn read(&self, cursor: Option<&Cursor>) -> Result<DirectoryRead, DirectoryError>;
}

/// Which groups a client's rules can tell apart. A directory that reads membership group by
/// group (Graph: a request per page of each group's members) need read no others; one that
/// gets every person's groups with the person (LDAP's `memberOf`) may ignore it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum GroupsWanted {
    /// The rules (or templates) look at groups in a way no list of names captures
    /// (`groups.exists(g, g.startsWith('Team'))`, `size(groups)`), or nothing says: every
    /// group, as before.
    #[default]
    All,
    /// Only these group names (compared exactly, as rules compare them) can change what a
    /// person is billed; a person's `groups` may then hold only these.
    Named(BTreeSet<String>),
}

impl GroupsWanted {
    /// Whether a group of this name must be read.
    pub fn wants(&self, name: &str) -> bool {
        match self {
            GroupsWanted::All => true,
            GroupsWanted::Named(names) => names.contains(name),
        }
    }
}

/// What the directories built for one run share, so that clients of one tenant read what they
/// have in common once (Graph: the users, the group list, each group's members). Keyed by a
/// string the connector chooses; the engine only makes one per run and hands it to every
/// directory it builds.
#[derive(Clone, Default)]
pub struct RunShare(Arc<Mutex<HashMap<String, Arc<dyn Any + Send + Sync>>>>);

impl std::fmt::Debug for RunShare {
    // The keys may be built from credentials: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RunShare(..)")
    }
}

impl RunShare {
    /// The value kept under `key`, made by `make` the first time. A value of another type
    /// under the same key (two connectors choosing one key) is replaced, never mistaken.
    pub fn get_or_insert<T: Any + Send + Sync>(
        &self,
        key: &str,
        make: impl FnOnce() -> T,
    ) -> Arc<T> {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(found) = map.get(key).cloned()
            && let Ok(value) = found.downcast::<T>()
        {
            return value;
        }
        let value = Arc::new(make());
        map.insert(key.to_owned(), value.clone());
        value
    }
}

/// What the engine tells a directory it builds for one client of one run.
#[derive(Debug, Clone, Default)]
pub struct DirectoryContext {
    /// The groups the client's rules name.
    pub groups: GroupsWanted,
    /// Shared by every directory of the run.
    pub share: RunShare,
}

#[cfg(test)]
mod share_tests {
    use super::*;

    #[test]
    fn a_run_share_hands_out_one_value_per_key_and_type() {
        let share = RunShare::default();
        let a = share.get_or_insert("tenant", || std::sync::atomic::AtomicU32::new(7));
        let b = share.get_or_insert("tenant", || std::sync::atomic::AtomicU32::new(9));
        assert!(Arc::ptr_eq(&a, &b));
        let other = share.clone().get_or_insert("tenant", String::new);
        assert_eq!(*other, "");
        assert!(format!("{share:?}") == "RunShare(..)");
        assert!(GroupsWanted::All.wants("x"));
        let named = GroupsWanted::Named(["A".to_owned()].into());
        assert!(named.wants("A") && !named.wants("a"));
    }
}
