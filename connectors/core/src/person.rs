//! A person as every directory reports them, whatever the directory.

use std::collections::BTreeMap;

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
    pub attributes: BTreeMap<String, String>,
}

/// A licence assigned to a person: the vendor's SKU part number and, where known, its name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct License {
    pub sku: String,
    #[serde(default)]
    pub name: String,
}

impl Person {
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
