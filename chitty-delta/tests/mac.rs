//! The optional keyed MAC: what it catches that the SHA-256 checks cannot, and that archives without one
//! (including those written before it existed) still decode.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chitty_core::Compressor;
use chitty_delta::{DeltaError, MacKey, ModelDeltaCompressor, inspect};
use chitty_testkit::model_pairs::{ModelPairSpec, generate_pair};
use sha2::{Digest, Sha256};

const KEY: &[u8; 32] = b"the owner's key, 32 bytes long!!";
const OTHER_KEY: &[u8; 32] = b"someone else's key, also 32 B..!";

fn keyed(key: &[u8]) -> ModelDeltaCompressor {
    ModelDeltaCompressor::builder().mac_key(MacKey::new(key).unwrap()).build().unwrap()
}

fn plain() -> ModelDeltaCompressor {
    ModelDeltaCompressor::builder().build().unwrap()
}

fn encode(c: &ModelDeltaCompressor, base: &[u8], target: &[u8]) -> Vec<u8> {
    let mut archive = Vec::new();
    let report = c.encode(Some(base), target, &mut archive).unwrap();
    assert_eq!(report.output_bytes, archive.len() as u64);
    archive
}

/// Decodes, returning the error.
fn refused(c: &ModelDeltaCompressor, base: &[u8], archive: &[u8]) -> DeltaError {
    c.decode_with_progress(Some(base), &mut &archive[..], &mut Vec::new(), &mut |_| {}).unwrap_err()
}

/// Decodes, returning the error and checking that nothing was written before it.
fn refused_before_writing(c: &ModelDeltaCompressor, base: &[u8], archive: &[u8]) -> DeltaError {
    let mut out = Vec::new();
    let err = c.decode_with_progress(Some(base), &mut &archive[..], &mut out, &mut |_| {}).unwrap_err();
    assert!(out.is_empty(), "{err} after {} bytes", out.len());
    err
}

fn decoded(c: &ModelDeltaCompressor, base: &[u8], archive: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    c.decode(Some(base), &mut &archive[..], &mut out).unwrap();
    out
}

/// The archive's manifest JSON and the bytes after it.
fn split(archive: &[u8]) -> (String, &[u8]) {
    let len = u32::from_le_bytes(archive[12..16].try_into().unwrap()) as usize;
    (String::from_utf8(archive[48..48 + len].to_vec()).unwrap(), &archive[48 + len..])
}

/// An archive with `version`, `manifest` and `rest`, its manifest checksum recomputed (what anyone can do).
fn forge(version: u32, manifest: &str, rest: &[u8]) -> Vec<u8> {
    let mut out = b"CHTYDLTA".to_vec();
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&(manifest.len() as u32).to_le_bytes());
    out.extend_from_slice(&Sha256::digest(manifest.as_bytes()));
    out.extend_from_slice(manifest.as_bytes());
    out.extend_from_slice(rest);
    out
}

#[test]
fn keyed_archives_round_trip_and_need_the_right_key() {
    let pair = generate_pair(&ModelPairSpec::tiny(81));
    let archive = encode(&keyed(KEY), &pair.base, &pair.target);
    assert_eq!(&archive[8..12], &2u32.to_le_bytes(), "a keyed archive is container version 2");
    assert_eq!(decoded(&keyed(KEY), &pair.base, &archive), pair.target);

    assert!(matches!(refused_before_writing(&plain(), &pair.base, &archive), DeltaError::MacKeyNeeded));
    assert!(matches!(refused(&keyed(OTHER_KEY), &pair.base, &archive), DeltaError::MacMismatch));
    let truncated = &archive[..archive.len() - 1];
    assert!(matches!(refused(&keyed(KEY), &pair.base, truncated), DeltaError::Corrupt { .. }));
    let mut longer = archive.clone();
    longer.push(0);
    assert!(matches!(refused(&keyed(KEY), &pair.base, &longer), DeltaError::Corrupt { .. }));

    let summary = inspect(&mut archive.as_slice()).unwrap();
    assert_eq!(summary.mac.as_deref(), Some("hmac-sha256"));
    assert_eq!(summary.archive_bytes, archive.len() as u64);
}

#[test]
fn a_consistently_altered_archive_passes_every_checksum_but_not_the_mac() {
    // Same base, another fine-tune: an attacker's archive, every SHA-256 in it correct.
    let pair = generate_pair(&ModelPairSpec::tiny(82));
    let other = generate_pair(&ModelPairSpec::tiny(82).delta_scale(5e-2));
    assert_eq!(other.base, pair.base);
    let genuine = encode(&keyed(KEY), &pair.base, &pair.target);
    let forged = encode(&keyed(OTHER_KEY), &pair.base, &other.target);
    // Without the MAC nothing tells it apart: it decodes, to the attacker's weights.
    let unkeyed = encode(&plain(), &pair.base, &other.target);
    assert_eq!(decoded(&plain(), &pair.base, &unkeyed), other.target);

    assert!(matches!(refused(&keyed(KEY), &pair.base, &forged), DeltaError::MacMismatch));
    // Nor does the genuine archive's MAC fit the attacker's parts.
    let mut grafted = forged[..forged.len() - 32].to_vec();
    grafted.extend_from_slice(&genuine[genuine.len() - 32..]);
    assert!(matches!(refused(&keyed(KEY), &pair.base, &grafted), DeltaError::MacMismatch));
    // A renamed tensor (manifest rewritten, its checksum recomputed) is caught too.
    let (manifest, rest) = split(&genuine);
    let renamed = forge(2, &manifest.replacen("model.", "modex.", 1), rest);
    assert!(matches!(refused(&keyed(KEY), &pair.base, &renamed), DeltaError::MacMismatch));
}

#[test]
fn a_stripped_mac_is_refused_when_a_key_is_given() {
    let pair = generate_pair(&ModelPairSpec::tiny(83));
    let archive = encode(&keyed(KEY), &pair.base, &pair.target);
    let (manifest, rest) = split(&archive);
    let stripped = forge(
        1,
        &manifest.replace(",\"mac\":\"hmac-sha256\"", "").replace("\"version\":2", "\"version\":1"),
        &rest[..rest.len() - 32],
    );
    let err = refused_before_writing(&keyed(KEY), &pair.base, &stripped);
    assert!(matches!(err, DeltaError::MacMissing), "{err}");
    // A version that disagrees with the manifest is corrupt, whatever the key.
    let mixed = forge(1, &manifest, rest);
    assert!(matches!(refused(&keyed(KEY), &pair.base, &mixed), DeltaError::Corrupt { .. }));
    // An unkeyed decoder reads the stripped archive: the MAC protects only those who ask for it.
    assert_eq!(decoded(&plain(), &pair.base, &stripped), pair.target);
}

/// Written by the code before MACs existed (commit 130d86e), from `ModelPairSpec::tiny(61)`.
const OLD_ARCHIVE: &[u8] = include_bytes!("fixtures/v1-tiny-61.delta");
const OLD_BASE: &[u8] = include_bytes!("fixtures/v1-tiny-61.base.safetensors");
const OLD_TARGET_SHA256: &str = "24cbf33055ea3e1d865a9f5a2af3cfd516ffad4e867f4da210aaa1bee84221cc";

#[test]
fn archives_written_before_macs_still_decode_and_unkeyed_archives_are_unchanged() {
    let restored = decoded(&plain(), OLD_BASE, OLD_ARCHIVE);
    assert_eq!(hex::encode(Sha256::digest(&restored)), OLD_TARGET_SHA256);
    assert!(matches!(refused_before_writing(&keyed(KEY), OLD_BASE, OLD_ARCHIVE), DeltaError::MacMissing));
    assert_eq!(inspect(&mut &OLD_ARCHIVE[..]).unwrap().mac, None);

    let pair = generate_pair(&ModelPairSpec::tiny(61));
    assert_eq!(pair.base, OLD_BASE, "the testkit's generator changed: the comparison below needs the old pair");
    assert_eq!(encode(&plain(), &pair.base, &pair.target), OLD_ARCHIVE, "unkeyed archives must stay version 1");
}

#[test]
fn the_key_never_shows_in_debug_output() {
    let c = keyed(KEY);
    let shown = format!("{c:?}");
    assert!(shown.contains("MacKey(<redacted>)"), "{shown}");
    assert!(!shown.contains("owner"), "{shown}");
    let short = MacKey::new(&b"k3y!"[..]).unwrap_err();
    assert!(!short.to_string().contains("k3y!"), "{short}");
}
