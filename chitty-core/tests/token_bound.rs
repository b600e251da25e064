//! The token estimator must never count fewer tokens than real tokenizers (an under-count is a budget
//! overrun). Checked against OpenAI's cl100k_base and o200k_base on real and adversarial text.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use chitty_core::tokens::estimate_text;

fn corpus() -> Vec<(String, String)> {
    let mut texts: Vec<(String, String)> = vec![
        ("prose".into(), include_str!("fixtures/prose.txt").into()),
        ("cjk_emoji".into(), include_str!("fixtures/cjk_emoji.txt").into()),
        ("rust_source".into(), include_str!("../src/keys.rs").into()),
        ("rust_source_2".into(), include_str!("../src/wire/chat.rs").into()),
        ("markdown".into(), include_str!("../src/tokens.rs").into()),
    ];
    // Adversarial strings from a fixed-seed generator: identifiers, hashes, base64, numbers, mixed case.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let alphabets: [(&str, &str); 7] = [
        ("hex", "0123456789abcdef"),
        ("base64", "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"),
        ("lower", "abcdefghijklmnopqrstuvwxyz"),
        ("upper", "ABCDEFGHIJKLMNOPQRSTUVWXYZ"),
        ("mixed", "aBcDeFgHiJkLmNoPqRsTuVwXyZ"),
        ("digits", "0123456789"),
        ("symbols", "!@#$%^&*()_+-=[]{}|;:',.<>/?`~\\\""),
    ];
    for (name, alphabet) in alphabets {
        let chars: Vec<char> = alphabet.chars().collect();
        for len in [1usize, 2, 3, 5, 8, 13, 40, 200, 2000] {
            for rep in 0..4 {
                let s: String = (0..len).map(|_| chars[(next() % chars.len() as u64) as usize]).collect();
                texts.push((format!("{name}-{len}-{rep}"), s.clone()));
                // Words separated by spaces and newlines too.
                let spaced: String =
                    s.chars().enumerate().flat_map(|(i, c)| if i % 7 == 6 { vec![c, ' '] } else { vec![c] }).collect();
                texts.push((format!("{name}-{len}-{rep}-spaced"), spaced));
            }
        }
    }
    texts.push(("whitespace".into(), " \n\t \n\n   \r\n  x  \n".repeat(50)));
    texts.push(("repeated".into(), "aaaa".repeat(500)));
    texts.push((
        "json".into(),
        serde_json::json!({"a": [1, 2.5, -3e10, null, true], "b": {"c": "d\u{1F600}"}}).to_string().repeat(20),
    ));
    texts
}

#[test]
fn never_below_openai_tokenizers() {
    let tokenizers =
        [("cl100k_base", tiktoken_rs::cl100k_base().unwrap()), ("o200k_base", tiktoken_rs::o200k_base().unwrap())];
    let mut prose_ratio = 0.0;
    for (name, text) in corpus() {
        let estimate = estimate_text(&text);
        for (tname, bpe) in &tokenizers {
            let real = bpe.encode_ordinary(&text).len() as u64;
            assert!(
                estimate >= real,
                "{name}: estimate {estimate} < {tname} {real} for {:?}",
                &text[..text.len().min(80)]
            );
            if name == "prose" && *tname == "cl100k_base" {
                prose_ratio = estimate as f64 / real as f64;
            }
        }
    }
    // The documented cost of the safe bound: about 4-5x on English prose.
    assert!((3.0..6.0).contains(&prose_ratio), "prose over-estimate {prose_ratio:.2}x");
    println!("prose estimate / cl100k = {prose_ratio:.2}");
}
