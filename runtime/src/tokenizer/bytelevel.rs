//! The GPT-2 byte-level alphabet: every byte is shown as one printable character, so a
//! vocabulary of strings can hold arbitrary byte sequences.
//!
//! Printable bytes `!`..=`~`, `¡`..=`¬`, `®`..=`ÿ` stand for themselves; the other 68 bytes
//! map, in increasing order, to U+0100, U+0101, ... (so the space 0x20 is `Ġ` U+0120 and
//! the newline 0x0A is `Ċ` U+010A).

/// The highest code point of the alphabet is U+0143 (256 + 67).
const CHAR_LIMIT: usize = 0x144;

const fn is_self_mapped(b: u8) -> bool {
    matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF)
}

const fn build_tables() -> ([char; 256], [i16; CHAR_LIMIT]) {
    let mut to_char = ['\0'; 256];
    let mut to_byte = [-1i16; CHAR_LIMIT];
    let mut n = 0u32;
    let mut b = 0usize;
    while b < 256 {
        let cp = if is_self_mapped(b as u8) {
            b as u32
        } else {
            n += 1;
            255 + n
        };
        // All code points here are < 0x144, valid scalar values.
        to_char[b] = match char::from_u32(cp) {
            Some(c) => c,
            None => '\0',
        };
        to_byte[cp as usize] = b as i16;
        b += 1;
    }
    (to_char, to_byte)
}

const TABLES: ([char; 256], [i16; CHAR_LIMIT]) = build_tables();

/// The character that stands for byte `b`.
#[inline]
pub fn byte_to_char(b: u8) -> char {
    TABLES.0[b as usize]
}

/// The byte that character `c` stands for, if `c` is in the alphabet.
#[inline]
pub fn char_to_byte(c: char) -> Option<u8> {
    let i = c as usize;
    if i < CHAR_LIMIT {
        let b = TABLES.1[i];
        if b >= 0 {
            return Some(b as u8);
        }
    }
    None
}

/// Bytes in byte-level form (`" hi"` -> `"Ġhi"`).
pub fn bytes_to_token(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| byte_to_char(b)).collect()
}

/// The bytes a token stands for, as Hugging Face's ByteLevel decoder does it: if every
/// character is in the alphabet, the bytes they stand for; otherwise (an added token such as
/// `<|im_start|>` with characters outside the alphabet) the token's own UTF-8 bytes.
pub fn token_to_bytes(token: &str) -> Vec<u8> {
    let mapped: Option<Vec<u8>> = token.chars().map(char_to_byte).collect();
    mapped.unwrap_or_else(|| token.as_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alphabet_is_a_bijection() {
        let mut seen = std::collections::HashSet::new();
        for b in 0..=255u8 {
            let c = byte_to_char(b);
            assert!(seen.insert(c));
            assert_eq!(char_to_byte(c), Some(b));
        }
        assert_eq!(byte_to_char(b' '), 'Ġ');
        assert_eq!(byte_to_char(b'\n'), 'Ċ');
        assert_eq!(byte_to_char(b'\t'), 'ĉ');
        assert_eq!(byte_to_char(0xAD), 'Ń');
        assert_eq!(byte_to_char(b'a'), 'a');
        assert_eq!(char_to_byte(' '), None);
        assert_eq!(char_to_byte('Ō'), None);
    }

    #[test]
    fn token_bytes() {
        assert_eq!(token_to_bytes("Ġhi"), b" hi");
        assert_eq!(token_to_bytes("<|im_start|>"), b"<|im_start|>");
        // A character outside the alphabet: the raw text.
        assert_eq!(token_to_bytes("a b"), b"a b");
        assert_eq!(bytes_to_token("é".as_bytes()), "Ã©");
    }
}
