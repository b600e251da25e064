//! The dataset delta container from both sides. An odd first byte: the rest is an archive decoded against
//! a fixed base, which must be a typed error or a verified output, never a panic. An even one: the rest is
//! split into a base and a target, whose archive must decode back to the target bit for bit.
#![no_main]

use chitty_core::{Compressor, CompressorError};
use chitty_delta::DatasetDeltaCompressor;
use libfuzzer_sys::fuzz_target;

const BASE: &[u8] = b"id,name,score\n1,ada,3\n2,grace,5\n3,barbara,8\n4,edsger,13\n";

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    // Small chunks so that short inputs still have several.
    let c = DatasetDeltaCompressor::builder().chunk_sizes(64, 256, 1024).part_bytes(64 << 10).threads(1).build().expect("valid settings");
    if mode & 1 == 1 {
        let mut out = Vec::new();
        match c.decode(Some(BASE), &mut &rest[..], &mut out) {
            Ok(report) => assert_eq!(report.output_bytes, out.len() as u64),
            Err(CompressorError::Corrupt { .. } | CompressorError::WrongBase { .. } | CompressorError::MissingBase) => {}
            Err(other) => panic!("unexpected error kind: {other}"),
        }
    } else {
        let (base, target) = rest.split_at(rest.len() / 2);
        let mut archive = Vec::new();
        c.encode(Some(base), target, &mut archive).expect("encoding into a Vec succeeds");
        let mut out = Vec::new();
        c.decode(Some(base), &mut archive.as_slice(), &mut out).expect("its own archive decodes");
        assert!(out == target, "round trip differs");
    }
});
