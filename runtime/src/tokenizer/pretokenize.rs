//! The Qwen2 pre-tokenizer: a hand-written scanner with exactly the matches of
//!
//! ```text
//! (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
//! ```
//!
//! as Hugging Face tokenizers runs it (Oniguruma, `Split` with `Isolated` behaviour): at each
//! position the first alternative that matches wins, each quantifier is greedy and gives
//! back characters only as far as the rest of its alternative needs. Every character is a
//! letter, a number, white space or "other", and each of these starts some alternative, so
//! the matches tile the text with no gaps.
//!
//! Character sets: `\p{L}` and `\p{N}` are the Unicode general categories L and N (tables
//! in `unicode_tables.rs`, Unicode 15.0 like Oniguruma 6.9.8); `\s` is the White_Space
//! property (Oniguruma's Unicode `\s`: U+0009..U+000D, U+0085 and Zs/Zl/Zp, the same set),
//! which is Rust's `char::is_whitespace`. Case-insensitive `s` also matches `ſ` (U+017F,
//! whose case folding is `s`); no other character folds to the contraction letters.
//!
//! Every alternative is matched by scanning forward once from its start, and the match
//! consumes all of what was scanned except at most one character, so splitting is linear
//! in the length of the text.

use super::unicode_tables::{LETTER, NUMBER};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Class {
    /// `\p{L}`
    Letter,
    /// `\p{N}`
    Number,
    /// `\s`
    Space,
    /// Anything else: punctuation, symbols, marks, controls that are not white space, ...
    Other,
}

const fn ascii_classes() -> [Class; 128] {
    let mut t = [Class::Other; 128];
    let mut i = 0;
    while i < 128 {
        let b = i as u8;
        t[i] = if b.is_ascii_alphabetic() {
            Class::Letter
        } else if b.is_ascii_digit() {
            Class::Number
        } else if matches!(b, 0x09..=0x0D | 0x20) {
            Class::Space
        } else {
            Class::Other
        };
        i += 1;
    }
    t
}

static ASCII_CLASS: [Class; 128] = ascii_classes();

/// Whether `cp` lies in one of the sorted inclusive ranges of `table`.
pub(crate) fn in_table(table: &[(u32, u32)], cp: u32) -> bool {
    // Largest range start <= cp.
    let idx = table.partition_point(|&(start, _)| start <= cp);
    idx > 0 && cp <= table[idx - 1].1
}

/// The class of a character.
#[inline]
pub(crate) fn classify(c: char) -> Class {
    let cp = c as u32;
    if cp < 0x80 {
        return ASCII_CLASS[cp as usize];
    }
    classify_non_ascii(c)
}

#[inline(never)]
fn classify_non_ascii(c: char) -> Class {
    let cp = c as u32;
    // The CJK Unified Ideographs block is entirely Lo: skip the search for Chinese text.
    if (0x4E00..=0x9FFF).contains(&cp) {
        return Class::Letter;
    }
    if in_table(LETTER, cp) {
        Class::Letter
    } else if c.is_whitespace() {
        Class::Space
    } else if in_table(NUMBER, cp) {
        Class::Number
    } else {
        Class::Other
    }
}

/// Decodes the character at byte `i` of `s` (a char boundary): the character and its length.
#[inline]
fn char_at(s: &str, i: usize) -> (char, usize) {
    let b = s.as_bytes()[i];
    if b < 0x80 {
        return (b as char, 1);
    }
    match s[i..].chars().next() {
        Some(c) => (c, c.len_utf8()),
        None => ('\0', 1), // unreachable for a char boundary inside s
    }
}

/// Like `char_at`, `None` at the end of the text.
#[inline]
fn peek(s: &str, i: usize) -> Option<(char, usize)> {
    if i < s.len() {
        Some(char_at(s, i))
    } else {
        None
    }
}

#[inline]
fn is_cr_or_lf(c: char) -> bool {
    c == '\r' || c == '\n'
}

/// End of the run of characters of class `class` starting at `i`.
#[inline]
fn scan_class(s: &str, mut i: usize, class: Class) -> usize {
    let bytes = s.as_bytes();
    while i < bytes.len() {
        let b = bytes[i];
        if b < 0x80 {
            if ASCII_CLASS[b as usize] != class {
                break;
            }
            i += 1;
        } else {
            let (c, l) = char_at(s, i);
            if classify_non_ascii(c) != class {
                break;
            }
            i += l;
        }
    }
    i
}

/// End of a run of `\r` / `\n` starting at `i` (possibly empty).
#[inline]
fn scan_cr_lf(s: &str, mut i: usize) -> usize {
    let bytes = s.as_bytes();
    while i < bytes.len() && (bytes[i] == b'\r' || bytes[i] == b'\n') {
        i += 1;
    }
    i
}

/// Length of `(?i:s|t|re|ve|m|ll|d)` at `i` (the part after the apostrophe), if it matches.
fn contraction_len(s: &str, i: usize) -> Option<usize> {
    let (c, l) = peek(s, i)?;
    let lower = |c: char| -> Option<char> {
        match c {
            'ſ' => Some('s'),
            c if c.is_ascii() => Some(c.to_ascii_lowercase()),
            _ => None,
        }
    };
    let second = |expected: char| -> Option<usize> {
        let (c2, l2) = peek(s, i + l)?;
        (lower(c2)? == expected).then_some(l + l2)
    };
    match lower(c)? {
        's' | 't' | 'm' | 'd' => Some(l),
        'r' | 'v' => second('e'),
        'l' => second('l'),
        _ => None,
    }
}

/// End (byte index) of the regex match that starts at byte `i` (< `s.len()`).
pub(crate) fn match_end(s: &str, i: usize) -> usize {
    let (c, l) = char_at(s, i);
    // (?i:'s|'t|'re|'ve|'m|'ll|'d)
    if c == '\'' {
        if let Some(n) = contraction_len(s, i + l) {
            return i + l + n;
        }
    }
    let class = classify(c);
    match class {
        // [^\r\n\p{L}\p{N}]?\p{L}+ with the optional part empty.
        Class::Letter => return scan_class(s, i + l, Class::Letter),
        // \p{N} (the letter alternative cannot start at a number).
        Class::Number => return i + l,
        Class::Space | Class::Other => {}
    }
    let next = peek(s, i + l);
    let next_class = next.map(|(c, _)| classify(c));
    // [^\r\n\p{L}\p{N}]?\p{L}+ with the optional part taken.
    if !is_cr_or_lf(c) && next_class == Some(Class::Letter) {
        return scan_class(s, i + l, Class::Letter);
    }
    //  ?[^\s\p{L}\p{N}]+[\r\n]*
    if c == ' ' && next_class == Some(Class::Other) {
        let end = scan_class(s, i + l, Class::Other);
        return scan_cr_lf(s, end);
    }
    if class == Class::Other {
        let end = scan_class(s, i + l, Class::Other);
        return scan_cr_lf(s, end);
    }
    // `c` is white space. Scan its whole run, noting where the last \r or \n ends and
    // where the last character starts.
    let bytes = s.as_bytes();
    let mut j = i;
    let mut last_newline_end = None;
    let mut last_char_start = i;
    let mut count = 0usize;
    while j < bytes.len() {
        let b = bytes[j];
        let (c, l) = if b < 0x80 {
            if ASCII_CLASS[b as usize] != Class::Space {
                break;
            }
            (b as char, 1)
        } else {
            let (c, l) = char_at(s, j);
            if !c.is_whitespace() {
                break;
            }
            (c, l)
        };
        last_char_start = j;
        j += l;
        count += 1;
        if is_cr_or_lf(c) {
            last_newline_end = Some(j);
        }
    }
    // \s*[\r\n]+ : \s* gives back until [\r\n]+ can match, i.e. up to the last newline.
    if let Some(end) = last_newline_end {
        return end;
    }
    // \s+(?!\S) : the whole run at the end of the text; otherwise all of it but the last
    // character (which then starts the next match, e.g. " word").
    if j == bytes.len() {
        return j;
    }
    if count >= 2 {
        return last_char_start;
    }
    // \s+
    j
}

/// Iterator over the pre-tokenized words of a text, as string slices.
pub(crate) struct Words<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Iterator for Words<'a> {
    type Item = &'a str;

    #[inline]
    fn next(&mut self) -> Option<&'a str> {
        if self.pos >= self.text.len() {
            return None;
        }
        let start = self.pos;
        let end = match_end(self.text, start);
        self.pos = end;
        Some(&self.text[start..end])
    }
}

/// Splits `text` the way the Qwen2 split regex does.
pub(crate) fn words(text: &str) -> Words<'_> {
    Words { text, pos: 0 }
}

/// The pre-tokenized words of `text` (no normalization, no added tokens): a debugging and
/// testing aid.
pub fn pre_tokenize(text: &str) -> Vec<&str> {
    words(text).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(s: &str) -> Vec<&str> {
        pre_tokenize(s)
    }

    #[test]
    fn classes() {
        assert_eq!(classify('a'), Class::Letter);
        assert_eq!(classify('é'), Class::Letter);
        assert_eq!(classify('中'), Class::Letter);
        assert_eq!(classify('ª'), Class::Letter); // Lo
        assert_eq!(classify('ʰ'), Class::Letter); // Lm
        assert_eq!(classify('७'), Class::Number); // Nd
        assert_eq!(classify('Ⅻ'), Class::Number); // Nl: alphabetic in Rust, but N
        assert_eq!(classify('½'), Class::Number); // No
        assert_eq!(classify('²'), Class::Number); // No
        assert_eq!(classify('\u{0301}'), Class::Other); // Mn
        assert_eq!(classify('\u{0345}'), Class::Other); // Mn with Other_Alphabetic
        assert_eq!(classify('\u{093E}'), Class::Other); // Mc, alphabetic in Rust
        assert_eq!(classify('\u{3000}'), Class::Space);
        assert_eq!(classify('\u{00A0}'), Class::Space);
        assert_eq!(classify('\u{0085}'), Class::Space);
        assert_eq!(classify('\u{2028}'), Class::Space);
        assert_eq!(classify('\u{200B}'), Class::Other); // zero width space is Cf
        assert_eq!(classify('\u{001C}'), Class::Other); // not White_Space
        assert_eq!(classify('😀'), Class::Other);
        assert_eq!(classify('_'), Class::Other);
    }

    #[test]
    fn contractions() {
        assert_eq!(split("I'm can't"), ["I", "'m", " can", "'t"]);
        assert_eq!(split("WE'VE THEY'LL"), ["WE", "'VE", " THEY", "'LL"]);
        assert_eq!(split("it'S x'Re"), ["it", "'S", " x", "'Re"]);
        // The first alternative wins even inside a longer word.
        assert_eq!(split("'sup"), ["'s", "up"]);
        assert_eq!(split("'dx'll'"), ["'d", "x", "'ll", "'"]);
        // ſ folds to s.
        assert_eq!(split("'ſ"), ["'ſ"]);
        // Not contractions: the apostrophe goes with the letters.
        assert_eq!(split("'x 'l"), ["'x", " '", "l"]);
        assert_eq!(split("'"), ["'"]);
        assert_eq!(split("''s"), ["''", "s"]);
    }

    #[test]
    fn letters_and_prefix() {
        assert_eq!(split("Hello, world!"), ["Hello", ",", " world", "!"]);
        assert_eq!(split("a_b"), ["a", "_b"]);
        assert_eq!(split("$x"), ["$x"]);
        assert_eq!(split("\tx"), ["\tx"]);
        assert_eq!(split("\nx"), ["\n", "x"]);
        assert_eq!(split("\rx"), ["\r", "x"]);
        assert_eq!(split("x\u{3000}y"), ["x", "\u{3000}y"]);
    }

    #[test]
    fn digits_one_by_one() {
        assert_eq!(split("12345"), ["1", "2", "3", "4", "5"]);
        assert_eq!(split("x1"), ["x", "1"]);
        assert_eq!(split(" 1"), [" ", "1"]);
        assert_eq!(split("3.14"), ["3", ".", "1", "4"]);
        assert_eq!(split("-42"), ["-", "4", "2"]);
        assert_eq!(split("Ⅻ½"), ["Ⅻ", "½"]);
    }

    #[test]
    fn punctuation() {
        assert_eq!(split("a... b"), ["a", "...", " b"]);
        assert_eq!(split(" ..."), [" ..."]);
        assert_eq!(split("  ..."), [" ", " ..."]);
        assert_eq!(split("):\n    return"), ["):\n", "   ", " return"]);
        assert_eq!(split("}\r\n\r\n}"), ["}\r\n\r\n", "}"]);
        assert_eq!(split("x;\n\n  y"), ["x", ";\n\n", " ", " y"]);
        assert_eq!(split("!\t\n"), ["!", "\t\n"]);
        assert_eq!(split("😀😀 😀"), ["😀😀", " 😀"]);
    }

    #[test]
    fn whitespace() {
        // \s+(?!\S): the last space goes with the next word.
        assert_eq!(split("a   b"), ["a", "  ", " b"]);
        assert_eq!(split("a \tb"), ["a", " ", "\tb"]);
        assert_eq!(split("   "), ["   "]);
        assert_eq!(split("a   "), ["a", "   "]);
        assert_eq!(split(" "), [" "]);
        assert_eq!(split("  1"), [" ", " ", "1"]);
        assert_eq!(split(" 1"), [" ", "1"]);
        // \s*[\r\n]+ up to the last newline of the run.
        assert_eq!(split("a\n\n\nb"), ["a", "\n\n\n", "b"]);
        assert_eq!(split("a \n \n  b"), ["a", " \n \n", " ", " b"]);
        assert_eq!(split("a\n "), ["a", "\n", " "]);
        assert_eq!(split("a\n b"), ["a", "\n", " b"]);
        assert_eq!(split("\n\n"), ["\n\n"]);
        assert_eq!(split("a\u{3000}\u{3000}b"), ["a", "\u{3000}", "\u{3000}b"]);
        assert_eq!(split("a \u{0085}b"), ["a", " ", "\u{0085}b"]);
    }

    #[test]
    fn non_latin_and_marks() {
        assert_eq!(split("通义千问。"), ["通义千问", "。"]);
        assert_eq!(split("Привет мир"), ["Привет", " мир"]);
        assert_eq!(split("日本語のテキスト"), ["日本語のテキスト"]);
        // A combining mark is not a letter: it breaks the word.
        assert_eq!(split("e\u{0301}t"), ["e", "\u{0301}t"]);
        // Devanagari: the virama and vowel signs are marks (Mn), not letters.
        assert_eq!(split("नमस्ते"), ["नमस", "\u{094D}त", "\u{0947}"]);
    }

    #[test]
    fn tiles_the_text() {
        let texts = [
            "def fib(n):\n    return n if n < 2 else fib(n-1) + fib(n-2)\n",
            " \u{a0}\u{2003}x\r\n\t\u{0}\u{1c} 'LL'ſT 😀\u{200d}👍 1e-6",
        ];
        for t in texts {
            let parts = split(t);
            assert_eq!(parts.concat(), t);
            assert!(parts.iter().all(|p| !p.is_empty()));
        }
    }

    #[test]
    fn linear_on_long_runs() {
        let spaces = " ".repeat(100_000) + "x";
        let parts = split(&spaces);
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[1], " x");
        let mixed = " \n".repeat(50_000);
        assert_eq!(split(&mixed).len(), 1);
        let letters = "a".repeat(1 << 20);
        assert_eq!(split(&letters).len(), 1);
    }
}
