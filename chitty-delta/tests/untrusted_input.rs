//! Arbitrary and mutated bytes fed to the safetensors parser and the archive decoder: typed errors, never
//! a panic, never output that was not verified.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::OnceLock;

use chitty_core::Compressor;
use chitty_delta::ModelDeltaCompressor;
use chitty_delta::safetensors::SafetensorsLayout;
use chitty_testkit::model_pairs::{ModelPair, ModelPairSpec, generate_pair};
use proptest::prelude::*;

struct Fixture {
    pair: ModelPair,
    archive: Vec<u8>,
    compressor: ModelDeltaCompressor,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let pair = generate_pair(&ModelPairSpec::tiny(21));
        let compressor = ModelDeltaCompressor::builder().chunk_elements(128).threads(1).build().unwrap();
        let mut archive = Vec::new();
        compressor.encode(Some(&pair.base), &pair.target, &mut archive).unwrap();
        Fixture { pair, archive, compressor }
    })
}

fn header_file(json: &str, data: usize) -> Vec<u8> {
    let mut f = (json.len() as u64).to_le_bytes().to_vec();
    f.extend_from_slice(json.as_bytes());
    f.resize(f.len() + data, 0);
    f
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn parser_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = SafetensorsLayout::parse(&bytes);
    }

    #[test]
    fn parser_checks_generated_headers(
        entries in proptest::collection::vec(
            ("[a-c]{1,2}", prop_oneof![Just("F32"), Just("BF16"), Just("U8"), Just("X9")],
             proptest::collection::vec(0u64..6, 0..3), 0u64..40, 0u64..40),
            0..5),
        data in 0usize..64,
    ) {
        let body: Vec<String> = entries.iter().map(|(name, dtype, shape, a, b)| {
            format!(r#""{name}":{{"dtype":"{dtype}","shape":{shape:?},"data_offsets":[{a},{b}]}}"#)
        }).collect();
        let file = header_file(&format!("{{{}}}", body.join(",")), data);
        if let Ok(layout) = SafetensorsLayout::parse(&file) {
            // Whatever is accepted really covers the data section exactly, in order.
            let mut end = 0;
            for t in &layout.tensors {
                prop_assert_eq!(t.begin, end);
                prop_assert_eq!(t.byte_len(), t.shape.iter().product::<u64>() * t.dtype.size_bytes());
                end = t.end;
            }
            prop_assert_eq!(end as usize, data);
        }
    }

    #[test]
    fn parser_refuses_mutated_valid_headers(pos in 0usize..4096, byte in any::<u8>()) {
        let f = fixture();
        let mut file = f.pair.target.clone();
        let header_end = 8 + u64::from_le_bytes(file[..8].try_into().unwrap()) as usize;
        let pos = pos % header_end;
        file[pos] = byte;
        let _ = SafetensorsLayout::parse(&file);
    }

    #[test]
    fn decoder_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let f = fixture();
        let mut out = Vec::new();
        let result = f.compressor.decode(Some(&f.pair.base), &mut bytes.as_slice(), &mut out);
        prop_assert!(result.is_err());
        prop_assert!(out.is_empty());
    }

    #[test]
    fn decoder_refuses_mutated_archives(edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
                                        cut in any::<Option<usize>>()) {
        let f = fixture();
        let mut archive = f.archive.clone();
        let mut edited = std::collections::HashSet::new();
        for (pos, byte) in edits {
            let pos = pos % archive.len();
            if edited.insert(pos) {
                archive[pos] = archive[pos].wrapping_add(byte.max(1));
            }
        }
        if let Some(cut) = cut {
            archive.truncate(cut % archive.len());
        }
        let mut out = Vec::new();
        let result = f.compressor.decode(Some(&f.pair.base), &mut archive.as_slice(), &mut out);
        prop_assert!(
            matches!(result, Err(chitty_core::CompressorError::Corrupt { .. })),
            "mutated archive gave {result:?}"
        );
        prop_assert!(f.pair.target.starts_with(&out));
    }

    #[test]
    fn encoder_never_panics_on_a_mutated_target(pos in any::<usize>(), byte in any::<u8>()) {
        let f = fixture();
        let mut target = f.pair.target.clone();
        let header_end = 8 + u64::from_le_bytes(target[..8].try_into().unwrap()) as usize;
        target[pos % header_end] = byte;
        let _ = f.compressor.encode(Some(&f.pair.base), &target, &mut Vec::new());
    }
}
