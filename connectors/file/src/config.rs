//! The `directory:` section of a pipeline for a client whose people come from an export file.
//!
//! The doc comments on these types are the user reference: they are generated into the pipeline
//! schema (`rollcall schema`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rollcall_core::{Directory, DirectoryConfig};

use crate::client::FileDirectory;

/// A directory read from an export file: a CSV (PowerShell `Get-ADUser | Export-Csv`, `csvde`,
/// the Entra or Microsoft 365 admin centre's user download, a spreadsheet) or an LDIF
/// (`ldifde`, `ldapsearch`). The file is read afresh on every run.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "FileDirectory")]
pub struct Config {
    /// The export to read. A relative path is relative to the folder of the pipeline file.
    ///
    /// A CSV needs a header row with an id column (`id`, `ObjectGUID`, `objectId`, `guid` or
    /// `entryUUID`, any case). Columns named like a person's fields are recognised, e.g.
    /// `SamAccountName`, `GivenName`, `Surname`, `DisplayName`, `mail`, `UserPrincipalName`,
    /// `Enabled`, `userAccountControl`, `accountExpires`, `MemberOf` (`;`-separated, DNs become
    /// group names) and `licenses` (`;`-separated SKU part numbers, optionally `SKU=Name`);
    /// every other column becomes an attribute under its own name.
    pub path: PathBuf,

    /// `csv` or `ldif`. When absent: from the file's extension (`.csv`; `.ldif` or `.ldf`), and
    /// otherwise from its content (an LDIF starts with `dn:` or `version:`).
    #[serde(default)]
    pub format: Option<Format>,

    /// A group-member CSV beside the export, for nested groups: AD's `memberOf` lists a
    /// person's direct groups only, so a billing group reached through nesting needs the groups'
    /// own members. One row per group and direct member (people and groups), with columns
    /// `GroupDN`, `MemberDN` and optionally `GroupName` (any case); a group without members is
    /// one row with `MemberDN` empty. People are matched by their `DistinguishedName` column.
    /// Write it with `Get-ADGroup -Filter * | ForEach-Object { $g = $_; Get-ADGroupMember $g |
    /// Select-Object @{n='GroupDN';e={$g.DistinguishedName}}, @{n='GroupName';e={$g.Name}},
    /// @{n='MemberDN';e={$_.distinguishedName}} } | Export-Csv groups.csv -NoTypeInformation`.
    /// An LDIF export needs none: its group entries (`member` values) are used.
    #[serde(default)]
    pub groups: Option<PathBuf>,
}

/// The kind of export a file holds.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// Comma-separated values with a header row, UTF-8 or UTF-16 with a byte order mark.
    Csv,
    /// LDAP Data Interchange Format (RFC 2849), as `ldifde` and `ldapsearch` write it.
    Ldif,
}

impl Format {
    /// The format a file's extension names, if it names one.
    pub fn from_path(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?;
        if ext.eq_ignore_ascii_case("csv") {
            Some(Format::Csv)
        } else if ext.eq_ignore_ascii_case("ldif") || ext.eq_ignore_ascii_case("ldf") {
            Some(Format::Ldif)
        } else {
            None
        }
    }

    /// The format of an export whose name does not say (`users.txt`, `export.out`): LDIF when
    /// its first line that is not a comment starts with `dn:` or `version:`, else CSV.
    pub fn sniff(content: &[u8]) -> Format {
        let content = content.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(content);
        // UTF-16 is checked on its ASCII subset: every other byte of the first line.
        let content: Vec<u8> = match content {
            [0xFF, 0xFE, rest @ ..] => rest.iter().step_by(2).copied().take(4096).collect(),
            [0xFE, 0xFF, rest @ ..] => rest.iter().skip(1).step_by(2).copied().take(4096).collect(),
            _ => content.iter().copied().take(4096).collect(),
        };
        let first = content
            .split(|&b| b == b'\n')
            .map(<[u8]>::trim_ascii)
            .find(|line| !line.is_empty() && !line.starts_with(b"#"));
        let is_ldif = first.is_some_and(|line| {
            let lower = line.to_ascii_lowercase();
            lower.starts_with(b"dn:") || lower.starts_with(b"version:")
        });
        if is_ldif { Format::Ldif } else { Format::Csv }
    }
}

impl DirectoryConfig for Config {
    const STARTER: &'static str = STARTER;

    fn build(&self, pipeline_dir: &Path) -> Arc<dyn Directory> {
        // `join` keeps an absolute `path` as it is.
        let resolved = pipeline_dir.join(&self.path);
        let mut directory = FileDirectory::new(resolved, self.format)
            .with_source_name(self.path.display().to_string());
        if let Some(groups) = &self.groups {
            directory =
                directory.with_groups(pipeline_dir.join(groups), groups.display().to_string());
        }
        Arc::new(directory)
    }
}

/// The `directory:` section `rollcall init` writes for an export file.
const STARTER: &str = r#"file:
        # A Get-ADUser | Export-Csv export, an Entra user download, or an ldifde/ldapsearch LDIF,
        # relative to this pipeline file.
        path: people/acme.csv
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_from_extension() {
        assert_eq!(
            Format::from_path(Path::new("a/acme.csv")),
            Some(Format::Csv)
        );
        assert_eq!(Format::from_path(Path::new("acme.CSV")), Some(Format::Csv));
        assert_eq!(
            Format::from_path(Path::new("acme.ldif")),
            Some(Format::Ldif)
        );
        assert_eq!(Format::from_path(Path::new("acme.LDF")), Some(Format::Ldif));
        assert_eq!(Format::from_path(Path::new("acme.txt")), None);
        assert_eq!(Format::from_path(Path::new("acme")), None);
    }

    #[test]
    fn format_from_content() {
        assert_eq!(Format::sniff(b"id,mail\n1,a@b\n"), Format::Csv);
        assert_eq!(
            Format::sniff(b"#TYPE Microsoft.ActiveDirectory.Management.ADUser\n\"id\"\n"),
            Format::Csv
        );
        assert_eq!(Format::sniff(b"\n# comment\nversion: 1\n"), Format::Ldif);
        assert_eq!(Format::sniff(b"\xEF\xBB\xBFdn: CN=a\n"), Format::Ldif);
        assert_eq!(Format::sniff(b"DN: CN=a\n"), Format::Ldif);
        let utf16: Vec<u8> = [0xFF, 0xFE]
            .into_iter()
            .chain("dn: CN=a\r\n".encode_utf16().flat_map(u16::to_le_bytes))
            .collect();
        assert_eq!(Format::sniff(&utf16), Format::Ldif);
        // csvde's header starts with DN, but as a column.
        assert_eq!(Format::sniff(b"DN,objectClass\n"), Format::Csv);
        assert_eq!(Format::sniff(b""), Format::Csv);
    }
}
