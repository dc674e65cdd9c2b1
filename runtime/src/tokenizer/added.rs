//! Finding added tokens (`<|im_start|>`, `<|endoftext|>`, ...) written literally in text.
//!
//! Like Hugging Face's added vocabulary (leftmost-longest matching): the match that starts
//! first wins, and among matches starting at the same place the longest.

/// A found added token: byte range in the text and its id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Found {
    pub start: usize,
    pub end: usize,
    pub id: u32,
}

#[derive(Clone, Default)]
pub(crate) struct AddedMatcher {
    /// (content, id), longest first.
    entries: Vec<(Box<[u8]>, u32)>,
    /// For each first byte, the indices into `entries` of the tokens starting with it
    /// (longest first); empty for bytes that start no token.
    by_first: Vec<Vec<u32>>,
}

impl AddedMatcher {
    pub(crate) fn new(tokens: impl IntoIterator<Item = (String, u32)>) -> Self {
        let mut entries: Vec<(Box<[u8]>, u32)> = tokens
            .into_iter()
            .filter(|(c, _)| !c.is_empty())
            .map(|(c, id)| (c.into_bytes().into_boxed_slice(), id))
            .collect();
        entries.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
        entries.dedup_by(|a, b| a.0 == b.0);
        let mut by_first = vec![Vec::new(); 256];
        for (k, (content, _)) in entries.iter().enumerate() {
            by_first[content[0] as usize].push(k as u32);
        }
        AddedMatcher { entries, by_first }
    }

    /// The first added token in `text` at or after byte `from`.
    pub(crate) fn find(&self, text: &str, from: usize) -> Option<Found> {
        if self.entries.is_empty() {
            return None;
        }
        let bytes = text.as_bytes();
        for i in from..bytes.len() {
            let candidates = &self.by_first[bytes[i] as usize];
            if candidates.is_empty() {
                continue;
            }
            for &k in candidates {
                let (content, id) = &self.entries[k as usize];
                if bytes[i..].starts_with(content) {
                    return Some(Found {
                        start: i,
                        end: i + content.len(),
                        id: *id,
                    });
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leftmost_then_longest() {
        let m = AddedMatcher::new([
            ("<a>".to_string(), 1),
            ("<a><b>".to_string(), 2),
            ("b>".to_string(), 3),
        ]);
        let f = m.find("x<a><b>", 0).unwrap();
        assert_eq!((f.start, f.end, f.id), (1, 7, 2));
        let f = m.find("x<a><b", 0).unwrap();
        assert_eq!((f.start, f.end, f.id), (1, 4, 1));
        let f = m.find("<a>b>", 3).unwrap();
        assert_eq!((f.start, f.end, f.id), (3, 5, 3));
        assert_eq!(m.find("nothing", 0), None);
    }
}
