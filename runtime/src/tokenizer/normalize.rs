//! NFC the way Hugging Face tokenizers applies it.
//!
//! Its NFC normalizer (the crate `unicode-normalization-alignments`) has Unicode 9.0 tables,
//! while `unicode-normalization` here is current. For text made only of characters assigned
//! in Unicode 9.0 both give the same result (Unicode's normalization stability policy); a
//! character assigned later is, to the old tables, a starter that neither decomposes nor
//! composes nor reorders. So the text is cut at such characters, each run between them is
//! normalized with the current tables, and the characters themselves are kept as they are:
//! e.g. the Sogdian mark U+10F49 (combining class 230, Unicode 11) followed by the Dogra
//! virama U+11839 (class 9) stays in that order, as Hugging Face leaves it.

use std::borrow::Cow;

use unicode_normalization::{is_nfc_quick, IsNormalized, UnicodeNormalization};

use super::pretokenize::in_table;
use super::unicode_tables::NFC_V9_ASSIGNED;

/// Whether `c` was assigned in Unicode 9.0.
#[inline]
fn assigned_in_v9(c: char) -> bool {
    let cp = c as u32;
    // U+0000..=U+0377 and the CJK Unified Ideographs block were all assigned by 9.0.
    cp <= 0x377 || (0x4E00..=0x9FD5).contains(&cp) || in_table(NFC_V9_ASSIGNED, cp)
}

/// `text` in NFC as Hugging Face's `NFC` normalizer computes it.
pub(crate) fn nfc(text: &str) -> Cow<'_, str> {
    if is_nfc_quick(text.chars()) == IsNormalized::Yes {
        // Already NFC under the current tables, hence under the 9.0 ones too.
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    let mut start = 0;
    for (i, c) in text.char_indices() {
        if !assigned_in_v9(c) {
            out.extend(text[start..i].nfc());
            out.push(c);
            start = i + c.len_utf8();
        }
    }
    out.extend(text[start..].nfc());
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composes_like_current_nfc_for_old_characters() {
        assert_eq!(nfc("e\u{301}"), "é");
        assert_eq!(nfc("A\u{30A}"), "Å");
        assert_eq!(nfc("\u{212B}"), "Å"); // Angstrom sign: singleton decomposition
        assert_eq!(nfc("\u{1100}\u{1161}\u{11A8}"), "각"); // Hangul jamo
        assert_eq!(
            nfc("a\u{301}\u{316}"),
            "\u{e1}\u{316}".nfc().collect::<String>()
        );
        assert_eq!(nfc("plain ascii"), "plain ascii");
        assert!(matches!(nfc("déjà"), Cow::Borrowed(_)));
    }

    #[test]
    fn later_characters_are_inert() {
        // Sogdian U+10F49 (ccc 230) then Dogra virama U+11839 (ccc 9), both after 9.0:
        // current NFC would swap them, the 9.0 tables do not.
        assert_eq!(nfc("a\u{10F49}\u{11839}"), "a\u{10F49}\u{11839}");
        // A 9.0 mark after a later one is not moved before it either.
        assert_eq!(nfc("a\u{1AC1}\u{316}"), "a\u{1AC1}\u{316}");
        // ... but is still reordered / composed inside the runs of old characters.
        assert_eq!(nfc("e\u{301}\u{10F49}e\u{301}"), "é\u{10F49}é");
        assert!(assigned_in_v9('中'));
        assert!(assigned_in_v9('\u{8D4}'));
        assert!(!assigned_in_v9('\u{8D3}'));
        assert!(!assigned_in_v9('\u{378}'));
    }
}
