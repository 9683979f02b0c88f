//! The [`Directory`] an export file plays: read the file, pick the format, parse off the async
//! runtime.
//!
//! Parsing is pure and lives in [`crate::csv_export`] and [`crate::ldif`]; this module adds only
//! what touches the outside world (the file system, the clock) so those stay testable without
//! either.

use std::path::PathBuf;

use async_trait::async_trait;
use rollcall_core::{Cursor, Directory, DirectoryError, DirectoryRead};

use crate::config::Format;
use crate::csv_export::Beside;

/// People read from one export file on each [`Directory::read`].
#[derive(Debug, Clone)]
pub struct FileDirectory {
    path: PathBuf,
    /// How the file is named in messages: the path as the pipeline wrote it.
    source_name: String,
    format: Option<Format>,
    /// A group-member CSV read with the export, and how it is named in messages.
    groups: Option<(PathBuf, String)>,
}

impl FileDirectory {
    /// A directory reading `path`; `format` `None` decides from the extension, then the content.
    pub fn new(path: impl Into<PathBuf>, format: Option<Format>) -> Self {
        let path = path.into();
        FileDirectory {
            source_name: path.display().to_string(),
            path,
            format,
            groups: None,
        }
    }

    /// Reads groups and their members from a group-member CSV too, to expand nesting.
    pub fn with_groups(mut self, path: impl Into<PathBuf>, source_name: impl Into<String>) -> Self {
        self.groups = Some((path.into(), source_name.into()));
        self
    }

    /// Names the file in warnings and errors as the user wrote it, rather than as resolved.
    pub fn with_source_name(mut self, source_name: impl Into<String>) -> Self {
        self.source_name = source_name.into();
        self
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}

#[async_trait]
impl Directory for FileDirectory {
    fn describe(&self) -> String {
        format!("file {}", self.source_name)
    }

    /// An export is read whole every time; there is no cursor to use.
    async fn read(&self, _cursor: Option<&Cursor>) -> Result<DirectoryRead, DirectoryError> {
        let bytes = read_file(&self.path, &self.source_name, "path").await?;
        let groups = match &self.groups {
            Some((path, name)) => Some((read_file(path, name, "groups").await?, name.clone())),
            None => None,
        };
        let format = self
            .format
            .or_else(|| Format::from_path(&self.path))
            .unwrap_or_else(|| Format::sniff(&bytes));
        let source_name = self.source_name.clone();
        let now = chrono::Utc::now();
        // 100,000 rows take long enough to stall other pipelines' I/O on this runtime.
        let parse = move || {
            let beside = match groups {
                Some((bytes, name)) => {
                    let (groups, notes) = crate::groups::parse_group_members(&bytes, &name)?;
                    Beside { groups, notes }
                }
                None => Beside::default(),
            };
            match format {
                Format::Csv => crate::csv_export::read_csv(&bytes, &source_name, now, beside),
                Format::Ldif => crate::ldif::read_ldif(&bytes, &source_name, now, beside),
            }
        };
        // On a multi-threaded runtime the parse runs on this thread, its worker's other tasks
        // handed to another meanwhile: the people are mapped and dropped on this thread next,
        // and glibc's allocator reuses what they free only for the thread (arena) that made
        // them. Parsed on a pool thread, a 100,000-person export's memory sat unused beside the
        // plan's: 160 MB at the peak against 137 MB (issue 18, BENCHMARKS.md). The cost: other
        // clients planned in this same task wait for the parse (milliseconds for a usual
        // export); jobs of `serve` and `worker` are tasks of their own and do not.
        if tokio::runtime::Handle::current().runtime_flavor()
            == tokio::runtime::RuntimeFlavor::MultiThread
        {
            return tokio::task::block_in_place(parse);
        }
        let parsed = tokio::task::spawn_blocking(parse).await;
        match parsed {
            Ok(result) => result,
            // A panic in the parser is a bug: carry it on rather than dressing it as bad data.
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(DirectoryError::Unavailable {
                source_name: self.source_name.clone(),
                message: format!("the read was cancelled: {e}"),
            }),
        }
    }
}

/// A file's bytes, or why it cannot be read, naming the setting that points at it.
async fn read_file(
    path: &std::path::Path,
    source_name: &str,
    setting: &str,
) -> Result<Vec<u8>, DirectoryError> {
    tokio::fs::read(path)
        .await
        .map_err(|e| DirectoryError::Unavailable {
            source_name: source_name.to_owned(),
            message: format!(
                "{}: {e}; check `{setting}` in the client's directory section (a relative path is relative to the pipeline file's folder)",
                path.display()
            ),
        })
}
