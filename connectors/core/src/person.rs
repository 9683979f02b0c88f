//! A person as every directory reports them, whatever the directory.

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::{Arc, LazyLock, RwLock};

use serde::{Deserialize, Serialize};

/// One person in a client's directory.
///
/// `id` is the directory's stable identifier (AD's objectGUID, Entra's object id, or a column of
/// an export): names and emails change, the id does not. Everything a pipeline's rules may read
/// is here; directory-specific extras go to `attributes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Person {
    pub id: String,
    /// sAMAccountName or the local part an export carries; may be empty.
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub given_name: String,
    #[serde(default)]
    pub surname: String,
    #[serde(default)]
    pub display_name: String,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub upn: Option<String>,
    pub enabled: bool,
    /// Group names, transitive membership included, as the directory names them.
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub licenses: Vec<License>,
    /// Any further attribute the directory returned (title, department, …), single-valued.
    #[serde(default)]
    pub attributes: Attributes,
}

/// A licence assigned to a person: the vendor's SKU part number and, where known, its name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct License {
    pub sku: String,
    #[serde(default)]
    pub name: String,
}

impl Person {
    /// Gives back the room a reader's growing lists left unused: a large directory's people
    /// are all held until they are mapped, and a list grown by pushing keeps room for four.
    pub fn shrink_to_fit(&mut self) {
        self.groups.shrink_to_fit();
        self.licenses.shrink_to_fit();
        self.attributes.shrink_to_fit();
    }

    /// The name a client recognises on an invoice: the display name, else "given surname", else
    /// the username, else the id.
    pub fn billing_name(&self) -> String {
        if !self.display_name.trim().is_empty() {
            return self.display_name.trim().to_owned();
        }
        let joined = format!("{} {}", self.given_name.trim(), self.surname.trim());
        let joined = joined.trim();
        if !joined.is_empty() {
            return joined.to_owned();
        }
        if !self.username.is_empty() {
            return self.username.clone();
        }
        self.id.clone()
    }
}

/// An attribute's name, shared by every person that carries it.
///
/// A directory's people all carry the same dozen names (`title`, `department`, `dn`, …); a name
/// owned by each person was a large part of a held person's size (issue 18: ~1.7 KiB each, 500
/// MiB for 100,000 people). Names are interned process-wide, up to a bound, so every person's
/// `title` points at one text; past the bound (names come from directories, which must not grow
/// the table without limit) a name is allocated on its own, which is only less compact.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AttributeName(Arc<str>);

/// Names interned so far; past this many, a new name is allocated per use instead.
const MAX_INTERNED: usize = 4096;

static INTERNED: LazyLock<RwLock<HashSet<Arc<str>>>> = LazyLock::new(Default::default);

impl AttributeName {
    /// The shared name `name`, interned on first use.
    pub fn new(name: &str) -> Self {
        let table = INTERNED.read().unwrap_or_else(|e| e.into_inner());
        if let Some(shared) = table.get(name) {
            return AttributeName(Arc::clone(shared));
        }
        let full = table.len() >= MAX_INTERNED;
        drop(table);
        let shared: Arc<str> = Arc::from(name);
        if !full {
            let mut table = INTERNED.write().unwrap_or_else(|e| e.into_inner());
            // Another thread may have interned it since the read.
            if let Some(first) = table.get(name) {
                return AttributeName(Arc::clone(first));
            }
            table.insert(Arc::clone(&shared));
        }
        AttributeName(shared)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for AttributeName {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for AttributeName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for AttributeName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AttributeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for AttributeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for AttributeName {
    fn from(name: &str) -> Self {
        AttributeName::new(name)
    }
}

impl From<String> for AttributeName {
    fn from(name: String) -> Self {
        AttributeName::new(&name)
    }
}

impl From<&String> for AttributeName {
    fn from(name: &String) -> Self {
        AttributeName::new(name)
    }
}

impl From<&AttributeName> for AttributeName {
    fn from(name: &AttributeName) -> Self {
        name.clone()
    }
}

impl PartialEq<str> for AttributeName {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for AttributeName {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

/// A person's further attributes: single-valued, one value per name, ordered by name.
///
/// A sorted vector of (shared name, value) rather than a map: a person has a handful of them,
/// looked up by binary search, and a `BTreeMap` node reserves room for eleven entries however
/// few there are. Reads like the map it replaces (`get`, `contains_key`, `insert`, `["title"]`,
/// iteration in name order) and serialises as the same JSON object.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Attributes(Vec<(AttributeName, String)>);

impl Attributes {
    pub fn new() -> Self {
        Attributes(Vec::new())
    }

    pub fn with_capacity(n: usize) -> Self {
        Attributes(Vec::with_capacity(n))
    }

    fn position(&self, name: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| k.as_str().cmp(name))
    }

    pub fn get(&self, name: &str) -> Option<&String> {
        self.position(name).ok().map(|i| &self.0[i].1)
    }

    pub fn get_mut(&mut self, name: &str) -> Option<&mut String> {
        self.position(name).ok().map(|i| &mut self.0[i].1)
    }

    pub fn contains_key(&self, name: &str) -> bool {
        self.position(name).is_ok()
    }

    /// Sets `name` to `value`, returning the value it replaces, as a map's `insert` does.
    /// Names given in order are appended without a search.
    pub fn insert(&mut self, name: AttributeName, value: String) -> Option<String> {
        if self.0.last().is_none_or(|(last, _)| *last < name) {
            self.0.push((name, value));
            return None;
        }
        match self.position(&name) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, value)),
            Err(i) => {
                self.0.insert(i, (name, value));
                None
            }
        }
    }

    pub fn remove(&mut self, name: &str) -> Option<String> {
        self.position(name).ok().map(|i| self.0.remove(i).1)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Name and value, in name order.
    pub fn iter(
        &self,
    ) -> impl DoubleEndedIterator<Item = (&AttributeName, &String)> + ExactSizeIterator {
        self.0.iter().map(|(k, v)| (k, v))
    }

    pub fn keys(&self) -> impl Iterator<Item = &AttributeName> {
        self.0.iter().map(|(k, _)| k)
    }

    pub fn values(&self) -> impl Iterator<Item = &String> {
        self.0.iter().map(|(_, v)| v)
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut String> {
        self.0.iter_mut().map(|(_, v)| v)
    }

    /// Releases room reserved while filling.
    pub fn shrink_to_fit(&mut self) {
        self.0.shrink_to_fit();
    }
}

impl fmt::Debug for Attributes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl std::ops::Index<&str> for Attributes {
    type Output = String;
    fn index(&self, name: &str) -> &String {
        self.get(name)
            .unwrap_or_else(|| panic!("no attribute `{name}`"))
    }
}

impl<K: Into<AttributeName>> FromIterator<(K, String)> for Attributes {
    /// Later values of a name replace earlier ones, as collecting into a map does.
    fn from_iter<I: IntoIterator<Item = (K, String)>>(iter: I) -> Self {
        let mut out = Attributes::new();
        out.extend(iter);
        out
    }
}

impl<K: Into<AttributeName>> Extend<(K, String)> for Attributes {
    fn extend<I: IntoIterator<Item = (K, String)>>(&mut self, iter: I) {
        for (k, v) in iter {
            self.insert(k.into(), v);
        }
    }
}

impl<K: Into<AttributeName>, const N: usize> From<[(K, String); N]> for Attributes {
    fn from(entries: [(K, String); N]) -> Self {
        entries.into_iter().collect()
    }
}

impl<'a> IntoIterator for &'a Attributes {
    type Item = (&'a AttributeName, &'a String);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (AttributeName, String)>,
        fn(&'a (AttributeName, String)) -> (&'a AttributeName, &'a String),
    >;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(k, v)| (k, v))
    }
}

impl Serialize for Attributes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter().map(|(k, v)| (k.as_str(), v)))
    }
}

impl<'de> Deserialize<'de> for Attributes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(BTreeMap::<String, String>::deserialize(d)?
            .into_iter()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_read_and_serialise_like_the_map_they_replace() {
        let entries = [
            ("title", "CEO"),
            ("dn", "CN=a"),
            ("title", "CTO"),
            ("b", ""),
        ];
        let mut map = BTreeMap::new();
        let mut attributes = Attributes::new();
        for (k, v) in entries {
            assert_eq!(
                attributes.insert(k.into(), v.to_owned()),
                map.insert(k.to_owned(), v.to_owned())
            );
        }
        assert_eq!(
            attributes
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect::<Vec<_>>(),
            map.clone().into_iter().collect::<Vec<_>>()
        );
        assert_eq!(attributes["title"], "CTO");
        assert!(attributes.contains_key("b") && !attributes.contains_key("c"));
        assert_eq!(
            serde_json::to_string(&attributes).expect("json"),
            serde_json::to_string(&map).expect("json")
        );
        let back: Attributes = serde_json::from_str(r#"{"z":"1","a":"2"}"#).expect("from json");
        assert_eq!(
            back.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
            ["a", "z"]
        );
        assert_eq!(attributes.remove("dn").as_deref(), Some("CN=a"));
        assert_eq!(attributes.len(), 2);
    }

    #[test]
    fn a_name_is_shared_by_every_person_that_carries_it() {
        let a = AttributeName::from("department");
        let b = AttributeName::from(String::from("department"));
        assert!(Arc::ptr_eq(&a.0, &b.0));
    }
}
