//! Weight quantization schemes and their exact numeric definitions.
//!
//! Every scheme defines `dequantize`, the value a kernel must reproduce; the packers and the
//! kernels only change the layout, never the numbers.
//!
//! | scheme          | stored per weight            | per group / row                 | value                      |
//! |-----------------|------------------------------|---------------------------------|----------------------------|
//! | `f32`           | f32                          | —                               | w                          |
//! | `bf16`          | bf16                         | —                               | w                          |
//! | `w8`            | i8 q ∈ [-127, 127]           | f32 scale per output row        | scale · q                  |
//! | `w8g{G}`        | u8 q ∈ [0, 255]              | f16 scale per G inputs          | scale · (q − 128)          |
//! | `w4g{G}`        | u4 q ∈ [0, 15] (2 per byte)  | f16 scale per G inputs          | scale · (q − 8)            |
//! | `w4g{G}a`       | u4 q ∈ [0, 15] (2 per byte)  | f16 scale and f16 min per G     | scale · q + min            |
//! | `w{b}g{G}`      | b-bit q ∈ [0, 2^b − 1]       | f16 scale per G inputs          | scale · (q − 2^(b−1))      |
//! | `w{b}g{G}a`     | b-bit q ∈ [0, 2^b − 1]       | f16 scale and f16 min per G     | scale · q + min            |
//!
//! Group-wise codes form one little-endian bit stream: column `c` at bits `b·c .. b·c + b`,
//! so in `w4` the low nibble of byte `i` holds column `2i`, the high nibble column `2i + 1`.
//! `b` is 4, 8 (`Scheme::W8Grouped`, one code per byte), or 2 and 3 (`Scheme::Narrow`), which
//! the tiled kernels expand to w4 codes.

pub mod awq;
pub mod gptq;
mod quantizer;
mod rtn;
mod scheme;

pub use quantizer::{Quantizer, Rtn};
pub use rtn::{code_at, dequantize, quantize_rtn, QuantizedData, QuantizedMatrix};
pub use scheme::{Scheme, SchemeError};
