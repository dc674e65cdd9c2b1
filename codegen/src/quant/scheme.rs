//! The names users write (`--scheme w4g32`) and what they mean.

use std::fmt;
use std::str::FromStr;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scheme {
    F32,
    Bf16,
    /// int8, symmetric, one scale per output row.
    W8,
    /// int4 in groups of `group` inputs; `asymmetric` adds a per-group minimum.
    W4 {
        group: usize,
        asymmetric: bool,
    },
    /// int8 in groups of `group` inputs, symmetric, an f16 scale per group (codes stand for
    /// `q − 128`). Finer than `W8` where weights sit on a grid with per-group scales.
    W8Grouped {
        group: usize,
    },
    /// 2- or 3-bit codes in groups of `group` inputs, like `W4` (symmetric codes stand for
    /// `q − 2^(bits−1)`). The tiled kernels expand them to w4 codes tile by tile.
    Narrow {
        bits: u8,
        group: usize,
        asymmetric: bool,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "unknown scheme `{0}` (expected f32, bf16, w8, or wBgN with B bits (2, 3, 4, 8) in groups of \
     N (32, 64, 128, 256), e.g. w4g32; a trailing `a` for asymmetric with 2-4 bits, e.g. w3g64a)"
)]
pub struct SchemeError(pub String);

impl Scheme {
    /// Storage bits per weight, scales and minimums included.
    pub fn bits_per_weight(self, cols: usize) -> f64 {
        match self {
            Scheme::F32 => 32.0,
            Scheme::Bf16 => 16.0,
            Scheme::W8 => 8.0 + 32.0 / cols as f64,
            Scheme::W4 { group, asymmetric } => {
                4.0 + if asymmetric { 32.0 } else { 16.0 } / group as f64
            }
            Scheme::W8Grouped { group } => 8.0 + 16.0 / group as f64,
            Scheme::Narrow {
                bits,
                group,
                asymmetric,
            } => bits as f64 + if asymmetric { 32.0 } else { 16.0 } / group as f64,
        }
    }

    /// Inputs per scale of the group-wise schemes.
    pub fn group(self) -> Option<usize> {
        match self {
            Scheme::W4 { group, .. }
            | Scheme::W8Grouped { group }
            | Scheme::Narrow { group, .. } => Some(group),
            _ => None,
        }
    }

    /// Whether a group-wise scheme stores a minimum per group.
    pub fn asymmetric(self) -> bool {
        matches!(
            self,
            Scheme::W4 {
                asymmetric: true,
                ..
            } | Scheme::Narrow {
                asymmetric: true,
                ..
            }
        )
    }

    /// Bits per stored code of the group-wise schemes (`w4`, `w2`, `w3`, `w8g`).
    pub fn code_bits(self) -> Option<u8> {
        match self {
            Scheme::W4 { .. } => Some(4),
            Scheme::W8Grouped { .. } => Some(8),
            Scheme::Narrow { bits, .. } => Some(bits),
            _ => None,
        }
    }

    /// Whether a matrix with `cols` inputs can use this scheme.
    pub fn check_cols(self, cols: usize) -> Result<(), String> {
        match self.group() {
            Some(group) if !cols.is_multiple_of(group) => Err(format!(
                "{cols} inputs are not a multiple of the group size {group}"
            )),
            _ => Ok(()),
        }
    }
}

impl FromStr for Scheme {
    type Err = SchemeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || SchemeError(s.to_string());
        match s {
            "f32" => return Ok(Scheme::F32),
            "bf16" => return Ok(Scheme::Bf16),
            "w8" => return Ok(Scheme::W8),
            _ => {}
        }
        let (bits, rest) = [8u8, 4, 3, 2]
            .into_iter()
            .find_map(|b| s.strip_prefix(&format!("w{b}g")).map(|rest| (b, rest)))
            .ok_or_else(bad)?;
        let (digits, asymmetric) = match rest.strip_suffix('a') {
            Some(d) => (d, true),
            None => (rest, false),
        };
        if digits.starts_with('0') {
            return Err(bad());
        }
        let group: usize = digits.parse().map_err(|_| bad())?;
        if !matches!(group, 32 | 64 | 128 | 256) {
            return Err(bad());
        }
        Ok(if bits == 8 {
            if asymmetric {
                return Err(bad());
            }
            Scheme::W8Grouped { group }
        } else if bits == 4 {
            Scheme::W4 { group, asymmetric }
        } else {
            Scheme::Narrow {
                bits,
                group,
                asymmetric,
            }
        })
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scheme::F32 => write!(f, "f32"),
            Scheme::Bf16 => write!(f, "bf16"),
            Scheme::W8 => write!(f, "w8"),
            Scheme::W4 { group, asymmetric } => {
                write!(f, "w4g{group}{}", if *asymmetric { "a" } else { "" })
            }
            Scheme::W8Grouped { group } => write!(f, "w8g{group}"),
            Scheme::Narrow {
                bits,
                group,
                asymmetric,
            } => write!(f, "w{bits}g{group}{}", if *asymmetric { "a" } else { "" }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for name in [
            "f32", "bf16", "w8", "w4g32", "w4g64", "w4g128", "w4g32a", "w4g128a", "w2g64a",
            "w3g32", "w3g128a", "w2g256", "w8g32", "w8g128",
        ] {
            assert_eq!(name.parse::<Scheme>().unwrap().to_string(), name);
        }
        for bad in [
            "w4", "w4g", "w4g33", "w4gxa", "int8", "", "w4g32b", "w5g32", "w1g32", "w2g16",
            "w8g128a", "w3g064",
        ] {
            assert_eq!(bad.parse::<Scheme>(), Err(SchemeError(bad.into())));
        }
    }

    #[test]
    fn bits_per_weight() {
        assert_eq!(
            Scheme::W4 {
                group: 32,
                asymmetric: false
            }
            .bits_per_weight(896),
            4.5
        );
        assert_eq!(
            Scheme::W4 {
                group: 32,
                asymmetric: true
            }
            .bits_per_weight(896),
            5.0
        );
        assert_eq!(Scheme::Bf16.bits_per_weight(896), 16.0);
        assert_eq!(
            "w2g64a".parse::<Scheme>().unwrap().bits_per_weight(896),
            2.5
        );
        assert_eq!(
            "w3g128".parse::<Scheme>().unwrap().bits_per_weight(896),
            3.125
        );
    }
}
