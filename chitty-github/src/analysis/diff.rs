//! The added lines of a unified diff, with their line numbers in the new file.
//!
//! ```
//! use chitty_github::analysis::diff::added_lines;
//!
//! let patch = "@@ -1,3 +1,4 @@\n line one\n-old two\n+new two\n+new three\n line four";
//! let added: Vec<(u32, &str)> = added_lines(patch).into_iter().map(|l| (l.line, l.text)).collect();
//! assert_eq!(added, [(2, "new two"), (3, "new three")]);
//! ```

/// One added line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddedLine<'a> {
    /// Its number in the new file (1-based).
    pub line: u32,
    /// Its text, without the leading `+`.
    pub text: &'a str,
}

/// The lines a patch (GitHub's per-file `patch`: hunks without file headers) adds, in order.
/// Text before the first hunk header, and malformed hunk headers' hunks, are skipped.
pub fn added_lines(patch: &str) -> Vec<AddedLine<'_>> {
    new_file_lines(patch).filter_map(|(line, text)| Some(AddedLine { line, text: text.strip_prefix('+')? })).collect()
}

/// The new-file lines a review comment can be placed on (`side: RIGHT`): added and context lines.
pub fn commentable_lines(patch: &str) -> Vec<u32> {
    new_file_lines(patch).map(|(line, _)| line).collect()
}

/// Each line of the patch that is in the new file (added, with its `+`, or context), with its number there.
fn new_file_lines(patch: &str) -> impl Iterator<Item = (u32, &str)> {
    // The next line number in the new file, while inside a hunk.
    let mut next: Option<u32> = None;
    patch.split('\n').filter_map(move |raw| {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.starts_with("@@") {
            next = new_start(line);
            return None;
        }
        let number = next.as_mut()?;
        match line.as_bytes().first() {
            Some(b'-') | Some(b'\\') => None,
            // Added lines, context lines (a space), and an empty line where a tool dropped the space.
            _ => {
                let here = *number;
                *number = number.saturating_add(1);
                Some((here, line))
            }
        }
    })
}

/// The new file's first line from a hunk header `@@ -a,b +c,d @@ …`.
fn new_start(header: &str) -> Option<u32> {
    let rest = header.strip_prefix("@@ -")?;
    let plus = rest.find(" +")?;
    let digits: &str = rest[plus + 2..].split([',', ' ']).next()?;
    let start: u32 = digits.parse().ok()?;
    // A hunk that adds to an empty file starts at 0 (`+0,0`) but its first line is 1.
    Some(start.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numbers(patch: &str) -> Vec<(u32, &str)> {
        added_lines(patch).into_iter().map(|l| (l.line, l.text)).collect()
    }

    #[test]
    fn line_numbers_follow_the_new_file_across_hunks() {
        let patch =
            "@@ -10,4 +10,5 @@ fn main() {\n a\n-b\n+B\n+C\n c\n\\ No newline at end of file\n@@ -40 +41,2 @@\n+x\n y";
        assert_eq!(numbers(patch), [(11, "B"), (12, "C"), (41, "x")]);
        assert_eq!(numbers("@@ -0,0 +1,2 @@\n+first\n+second"), [(1, "first"), (2, "second")]);
        assert_eq!(numbers("+no hunk header yet\n@@ nonsense @@\n+skipped"), []);
        assert_eq!(numbers("@@ -1 +1 @@\r\n+crlf\r\n"), [(1, "crlf")]);
        assert_eq!(numbers("@@ -1 +1 @@\n++++ looks like a header"), [(1, "+++ looks like a header")]);
    }

    #[test]
    fn comments_can_go_on_added_and_context_lines_only() {
        let patch = "@@ -10,4 +10,5 @@\n a\n-b\n+B\n+C\n c\n\\ No newline at end of file";
        assert_eq!(commentable_lines(patch), [10, 11, 12, 13]);
    }

    proptest::proptest! {
        #[test]
        fn any_text_parses_without_panicking(patch in ".{0,400}") {
            let _ = added_lines(&patch);
        }

        #[test]
        fn huge_line_numbers_saturate(start in proptest::num::u32::ANY) {
            let patch = format!("@@ -1 +{start} @@\n+a\n+b");
            let added = added_lines(&patch);
            proptest::prop_assert_eq!(added.len(), 2);
            proptest::prop_assert!(added[1].line >= added[0].line);
        }
    }
}
