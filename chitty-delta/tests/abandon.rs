//! `files::abandon_pending_outputs`, in a test binary of its own: it is process-wide and one-way.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::io::Write;

use chitty_delta::DeltaError;
use chitty_delta::files::{AtomicFile, abandon_pending_outputs};

#[test]
fn abandoning_removes_uncommitted_temporary_files_and_refuses_new_ones() {
    let dir = tempfile::tempdir().unwrap();
    let temporaries = || {
        fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with(".chitty-delta-"))
            .count()
    };
    let committed = AtomicFile::create(&dir.path().join("done")).unwrap();
    committed.commit().unwrap();
    let mut first = AtomicFile::create(&dir.path().join("a")).unwrap();
    first.write_all(b"partial").unwrap();
    let second = AtomicFile::create(&dir.path().join("b")).unwrap();
    assert_eq!(temporaries(), 2);

    assert_eq!(abandon_pending_outputs(), 2);
    assert_eq!(temporaries(), 0);
    let err = first.commit().unwrap_err();
    assert!(matches!(&err, DeltaError::Io { source, .. } if source.kind() == std::io::ErrorKind::Interrupted));
    assert!(!dir.path().join("a").exists());
    drop(second);
    assert!(AtomicFile::create(&dir.path().join("c")).is_err());
    assert_eq!(temporaries(), 0);
    assert!(dir.path().join("done").exists());
}
