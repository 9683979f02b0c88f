//! The crate as the engine uses it: a pipeline's `directory:` section, built and read.

use std::path::Path;

use rollcall_core::{Completeness, Directory, DirectoryConfig, DirectoryError};
use rollcall_file::{Config, FileDirectory, Format};

use crate::{fixture, fixture_path};

fn config(json: serde_json::Value) -> Result<Config, serde_json::Error> {
    serde_json::from_value(json)
}

#[test]
fn config_reads_path_and_format() {
    let c =
        config(serde_json::json!({"path": "people/acme.ldf", "format": "ldif"})).expect("valid");
    assert_eq!(c.path, Path::new("people/acme.ldf"));
    assert_eq!(c.format, Some(Format::Ldif));
    let c = config(serde_json::json!({"path": "acme.csv"})).expect("format is optional");
    assert_eq!(c.format, None);
}

#[test]
fn config_refuses_unknown_fields_and_formats() {
    let err = config(serde_json::json!({"path": "a.csv", "fromat": "csv"})).expect_err("typo");
    assert!(err.to_string().contains("unknown field `fromat`"), "{err}");
    let err = config(serde_json::json!({"path": "a.csv", "format": "xlsx"})).expect_err("xlsx");
    assert!(err.to_string().contains("unknown variant `xlsx`"), "{err}");
}

#[test]
fn config_schema_documents_every_field() {
    let schema = serde_json::to_value(schemars::schema_for!(Config)).expect("serialises");
    assert_eq!(schema["additionalProperties"], serde_json::json!(false));
    let description = |field: &str| {
        schema["properties"][field]["description"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    assert!(description("path").contains("relative to the folder of the pipeline file"));
    assert!(description("format").contains("from the file's extension"));
    let text = schema.to_string();
    assert!(
        text.contains("\"csv\"") && text.contains("\"ldif\""),
        "{text}"
    );
}

#[tokio::test]
async fn build_resolves_the_path_against_the_pipeline_folder() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(dir.path().join("people")).expect("mkdir");
    std::fs::write(dir.path().join("people/acme.csv"), fixture("msp-sheet.csv")).expect("write");

    let c = config(serde_json::json!({"path": "people/acme.csv"})).expect("valid");
    let directory = c.build(dir.path());
    assert_eq!(directory.describe(), "file people/acme.csv");
    let read = directory.read(None).await.expect("reads");
    assert_eq!(read.completeness, Completeness::Complete);
    assert_eq!(read.people.len(), 3);
}

#[tokio::test]
async fn an_absolute_path_is_kept() {
    let c = Config {
        path: fixture_path("ldifde-export.ldf"),
        format: None,
        groups: None,
    };
    let read = c
        .build(Path::new("/nonexistent"))
        .read(None)
        .await
        .expect("reads");
    assert_eq!(read.people.len(), 4);
}

#[tokio::test]
async fn a_missing_file_is_unavailable_and_says_where_we_looked() {
    let dir = tempfile::tempdir().expect("temp dir");
    let c = Config {
        path: "people/gone.csv".into(),
        format: None,
        groups: None,
    };
    let err = c.build(dir.path()).read(None).await.expect_err("missing");
    let DirectoryError::Unavailable {
        source_name,
        message,
    } = &err
    else {
        panic!("expected Unavailable, got {err:?}");
    };
    assert_eq!(source_name, "people/gone.csv");
    let resolved = dir.path().join("people/gone.csv");
    assert!(
        message.starts_with(&format!("{}: ", resolved.display())),
        "{message}"
    );
    assert!(message.contains("No such file"), "{message}");
}

#[tokio::test]
async fn an_empty_file_reads_as_incomplete() {
    let read = FileDirectory::new(fixture_path("empty.csv"), None)
        .read(None)
        .await
        .expect("reads");
    assert!(!read.completeness.is_complete());
    assert!(read.people.is_empty());
}

#[tokio::test]
async fn the_format_comes_from_config_then_extension_then_content() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ldif = dir.path().join("export.txt");
    std::fs::write(&ldif, fixture("ldapsearch-openldap.ldif")).expect("write");
    let read = FileDirectory::new(&ldif, None)
        .read(None)
        .await
        .expect("sniffed as LDIF");
    assert_eq!(read.people.len(), 2);

    // A CSV misnamed .ldif, with the format given: the config wins over the extension.
    let csv = dir.path().join("users.ldif");
    std::fs::write(&csv, fixture("msp-sheet.csv")).expect("write");
    let read = FileDirectory::new(&csv, Some(Format::Csv))
        .read(None)
        .await
        .expect("reads");
    assert_eq!(read.people.len(), 3);
    // Without it, the extension decides, and the CSV is not mistaken for an empty LDIF.
    let read = FileDirectory::new(&csv, None)
        .read(None)
        .await
        .expect("reads");
    assert!(!read.completeness.is_complete());
}

#[tokio::test]
async fn a_missing_id_column_is_malformed() {
    let err = FileDirectory::new(fixture_path("no-id-column.csv"), None)
        .read(None)
        .await
        .expect_err("no id");
    assert!(matches!(err, DirectoryError::Malformed { .. }), "{err:?}");
}
