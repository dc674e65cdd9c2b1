//! The per-tensor quantize step of the compressor: a [`Quantizer`] turns one f32 matrix into a
//! [`QuantizedMatrix`]. [`Rtn`] rounds to nearest; the calibrated one (AWQ, GPTQ) is
//! [`crate::compress::calibrate::CalibratedQuantizer`].

use super::{quantize_rtn, QuantizedMatrix, Scheme};

/// Turns one f32 matrix into a [`QuantizedMatrix`] in the requested scheme.
pub trait Quantizer: Sync {
    /// Recorded in the manifest (`rtn`).
    fn name(&self) -> &str;
    /// Quantize `w` (`[rows, cols]`, row-major, Hugging Face tensor `name`). The driver has
    /// checked `scheme.check_cols(cols)`; the result must have the same rows, cols and scheme.
    fn quantize(
        &self,
        name: &str,
        w: &[f32],
        rows: usize,
        cols: usize,
        scheme: Scheme,
    ) -> QuantizedMatrix;
    /// Change tensor `name` (any tensor, vectors included) before it is quantized or stored,
    /// e.g. AWQ folding its scales into a norm weight. The default changes nothing.
    fn transform(&self, _name: &str, _w: &mut [f32]) {}
}

/// Round to nearest: [`quantize_rtn`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Rtn;

impl Quantizer for Rtn {
    fn name(&self) -> &str {
        "rtn"
    }
    fn quantize(
        &self,
        _name: &str,
        w: &[f32],
        rows: usize,
        cols: usize,
        scheme: Scheme,
    ) -> QuantizedMatrix {
        quantize_rtn(w, rows, cols, scheme)
    }
}
