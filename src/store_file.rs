//! The store's file on disk: made private, and never mistaken for a new store.
//!
//! The store holds OAuth refresh tokens and who was billed for what, so it is created 0600 in
//! a directory created 0700 (SQLite gives its `-wal` and `-shm` files the main file's mode),
//! and a store found readable by others is tightened. It is made under a temporary name and
//! linked into place whole, so a second process opening the same new store at the same moment
//! never sees a half-made file.
//!
//! What must never happen is a damaged store taken for a fresh one: with an empty store,
//! rollcall forgets which billing objects it made and leaves them all alone, so a client's
//! seats silently stop moving. So an empty (0-byte) file, a file that is not SQLite, another
//! program's database and a store from a newer rollcall are each refused with what they are
//! and what to do.

use std::future::Future;
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};

use sqlx::SqlitePool;

use crate::store::StoreError;

/// Why a store could not be made ready.
#[derive(Debug)]
pub enum Prepare {
    /// The file at the path is not a usable store; the message says what it is and what to do.
    Refused(String),
    Store(StoreError),
}

const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// Makes `path` ready to open: checks a file that is there, or makes a new store with `init`
/// (called with a temporary path beside `path`, which it must leave closed and complete).
pub async fn prepare<F, Fut>(path: &Path, init: F) -> Result<(), Prepare>
where
    F: FnOnce(PathBuf) -> Fut,
    Fut: Future<Output = Result<(), StoreError>>,
{
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(dir) = dir {
        private_dir(dir).map_err(|e| {
            Prepare::Refused(format!(
                "cannot create the directory {}: {e}",
                dir.display()
            ))
        })?;
    }
    match std::fs::metadata(path) {
        Ok(meta) => return check_file(path, &meta).map_err(Prepare::Refused),
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(Prepare::Refused(format!("cannot read it: {e}"))),
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "store".into());
    let temp = dir
        .unwrap_or(Path::new("."))
        .join(format!(".{name}.{}.new", uuid::Uuid::new_v4().simple()));
    let made = async {
        private_file(&temp)
            .map_err(|e| Prepare::Refused(format!("cannot create {}: {e}", temp.display())))?;
        init(temp.clone()).await.map_err(Prepare::Store)?;
        // A link fails if the name exists: another process made the store first, and its
        // store is the one everybody uses.
        match std::fs::hard_link(&temp, path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
            // A file system without hard links: a rename, which a racing process could only
            // replace with another empty new store.
            Err(_) => std::fs::rename(&temp, path)
                .map_err(|e| Prepare::Refused(format!("cannot create it: {e}"))),
        }
    }
    .await;
    for leftover in ["", "-wal", "-shm", "-journal"] {
        let mut p = temp.clone().into_os_string();
        p.push(leftover);
        let _ = std::fs::remove_file(p);
    }
    made
}

/// Refuses what is not a rollcall store before SQLite would quietly treat it as an empty one.
fn check_file(path: &Path, meta: &std::fs::Metadata) -> Result<(), String> {
    if !meta.is_file() {
        return Err(
            "it is not a file (hint: point --store / ROLLCALL_STORE at rollcall's state file)"
                .into(),
        );
    }
    if meta.len() == 0 {
        return Err(
            "it is an empty file (0 bytes), not a rollcall store. An emptied or lost store would \
             make rollcall forget which billing objects it made, so it is not taken for a new one \
             (hint: restore the store from a backup; if no store was ever there, delete the empty \
             file and run again)"
                .into(),
        );
    }
    let mut head = [0u8; 16];
    let read = std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut head));
    if read.is_err() || &head != SQLITE_MAGIC {
        return Err(
            "it is not a rollcall store: not an SQLite database (hint: point --store / \
             ROLLCALL_STORE at rollcall's state file, or move this file away)"
                .into(),
        );
    }
    tighten(path, meta);
    Ok(())
}

/// Refuses another program's SQLite database, and a store a newer rollcall wrote (its schema
/// would be misread), before any migration touches them.
pub async fn check_schema(pool: &SqlitePool, known: usize) -> Result<(), String> {
    let version: i64 = sqlx::query_scalar("PRAGMA user_version")
        .fetch_one(pool)
        .await
        .map_err(|e| format!("cannot read it: {e}"))?;
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table'")
            .fetch_all(pool)
            .await
            .map_err(|e| format!("cannot read it: {e}"))?;
    let ours = tables.iter().any(|t| t == "runs");
    if version > i64::try_from(known).unwrap_or(i64::MAX) {
        return Err(format!(
            "it was written by a newer rollcall (schema version {version}; this rollcall knows up to \
             {known}) (hint: run the newer rollcall, or restore a backup this version made)"
        ));
    }
    if !tables.is_empty() && (version == 0 || !ours) {
        return Err(format!(
            "it is not a rollcall store: an SQLite database of another program (tables {}) (hint: \
             point --store / ROLLCALL_STORE at rollcall's state file, or move this file away)",
            tables.join(", ")
        ));
    }
    Ok(())
}

/// Writes a file only its owner can read (run reports hold people's names), making its
/// directory 0700 if it has to make it.
pub fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        private_dir(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(contents)
}

fn private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

fn private_file(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path).map(drop)
}

/// A store made by an older rollcall may be readable by others: it holds tokens, so it is
/// made private (with its `-wal` and `-shm`), and a failure to is only a warning.
#[cfg(unix)]
fn tighten(path: &Path, meta: &std::fs::Metadata) {
    use std::os::unix::fs::PermissionsExt;
    if meta.permissions().mode() & 0o077 == 0 {
        return;
    }
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let p = PathBuf::from(p);
        if !p.exists() {
            continue;
        }
        if let Err(e) = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)) {
            tracing::warn!(file = %p.display(), error = %e, "The store is readable by others and cannot be made private (hint: chmod 600 it).");
        }
    }
}

#[cfg(not(unix))]
fn tighten(_: &Path, _: &std::fs::Metadata) {}

#[cfg(test)]
mod tests {
    use crate::store::{Store, StoreError};

    fn refusal(e: StoreError) -> String {
        match e {
            StoreError::Open { message, .. } => message,
            other => panic!("not a refusal: {other}"),
        }
    }

    #[tokio::test]
    async fn empty_foreign_and_newer_files_are_refused_and_left_as_they_were() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.db");
        for (contents, says) in [
            (&b""[..], "empty file (0 bytes)"),
            (b"SQLite", "not an SQLite database"),
            (
                b"PK\x03\x04 a zip file, not a store",
                "not an SQLite database",
            ),
        ] {
            std::fs::write(&path, contents).expect("write");
            let e = refusal(Store::open(&path).await.expect_err("refused"));
            assert!(e.contains(says) && e.contains("hint:"), "{e}");
            assert_eq!(std::fs::read(&path).expect("read"), contents);
        }
        std::fs::remove_file(&path).expect("remove");

        // Another program's SQLite database.
        let foreign = dir.path().join("other.db");
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&foreign)
            .create_if_missing(true);
        let pool = sqlx::SqlitePool::connect_with(options)
            .await
            .expect("sqlite");
        sqlx::raw_sql("CREATE TABLE invoices (id INTEGER); PRAGMA user_version = 3;")
            .execute(&pool)
            .await
            .expect("create");
        pool.close().await;
        let e = refusal(Store::open(&foreign).await.expect_err("foreign"));
        assert!(e.contains("another program (tables invoices)"), "{e}");

        // A store a newer rollcall wrote.
        let newer = dir.path().join("newer.db");
        let store = Store::open(&newer).await.expect("new store");
        drop(store);
        let options = sqlx::sqlite::SqliteConnectOptions::new().filename(&newer);
        let pool = sqlx::SqlitePool::connect_with(options)
            .await
            .expect("sqlite");
        sqlx::raw_sql("PRAGMA user_version = 999")
            .execute(&pool)
            .await
            .expect("bump");
        pool.close().await;
        let e = refusal(Store::open(&newer).await.expect_err("newer"));
        assert!(e.contains("newer rollcall (schema version 999"), "{e}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_new_store_opened_by_many_at_once_is_made_once_and_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a/b/state.db");
        let opens: Vec<_> = (0..8)
            .map(|_| {
                let path = path.clone();
                tokio::spawn(async move { Store::open(&path).await })
            })
            .collect();
        let mut stores = Vec::new();
        for open in opens {
            stores.push(open.await.expect("join").expect("every open succeeds"));
        }
        stores[0].begin_run("r1", "p", "test").await.expect("write");
        for store in &stores {
            assert!(store.history(None, 10).await.is_ok());
        }
        let names: Vec<String> = std::fs::read_dir(path.parent().expect("dir"))
            .expect("list")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.ends_with(".new")), "{names:?}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &std::path::Path| {
                std::fs::metadata(p).expect("meta").permissions().mode() & 0o777
            };
            for name in &names {
                assert_eq!(mode(&path.with_file_name(name)), 0o600, "{name}");
            }
            assert_eq!(mode(path.parent().expect("b")), 0o700);
        }
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_store_left_readable_by_others_is_made_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.db");
        drop(Store::open(&path).await.expect("new"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        drop(Store::open(&path).await.expect("reopen"));
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
