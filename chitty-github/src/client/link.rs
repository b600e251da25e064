//! The `Link` header GitHub paginates with (RFC 8288, the subset GitHub sends).

/// The target of the link with `rel="next"` (or a `rel` list containing `next`), if any.
///
/// Malformed entries are skipped, never an error: a broken header just ends pagination.
pub(crate) fn next_link(header: &str) -> Option<&str> {
    split_links(header).find_map(|entry| {
        let (target, params) = entry.trim().strip_prefix('<')?.split_once('>')?;
        params
            .split(';')
            .filter_map(|param| param.trim().split_once('='))
            .any(|(name, value)| {
                name.trim().eq_ignore_ascii_case("rel")
                    && value
                        .trim()
                        .trim_matches('"')
                        .split_ascii_whitespace()
                        .any(|rel| rel.eq_ignore_ascii_case("next"))
            })
            .then_some(target)
    })
}

/// Splits at commas that are outside `<…>`, since URLs may contain commas.
fn split_links(header: &str) -> impl Iterator<Item = &str> {
    let mut depth = 0usize;
    let mut start = 0usize;
    let mut parts = Vec::new();
    for (i, c) in header.char_indices() {
        match c {
            '<' => depth += 1,
            '>' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&header[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&header[start..]);
    parts.into_iter()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn finds_next_among_githubs_links() {
        let h = r#"<https://api.github.com/repositories/1/issues?page=2>; rel="prev", <https://api.github.com/repositories/1/issues?page=4>; rel="next", <https://api.github.com/repositories/1/issues?page=5>; rel="last""#;
        assert_eq!(next_link(h), Some("https://api.github.com/repositories/1/issues?page=4"));
        assert_eq!(next_link(r#"<https://x/a?q=1,2>; rel="next""#), Some("https://x/a?q=1,2"));
        assert_eq!(next_link(r#"<https://x/a>; rel="last""#), None);
        assert_eq!(next_link(""), None);
        assert_eq!(next_link("garbage; rel=next"), None);
    }

    proptest! {
        #[test]
        fn never_panics_and_only_returns_bracketed_targets(header in ".{0,300}") {
            if let Some(target) = next_link(&header) {
                let bracketed = format!("<{target}>");
                prop_assert!(header.contains(&bracketed));
            }
        }
    }
}
