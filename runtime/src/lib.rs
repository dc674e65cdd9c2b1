//! qwenc runtime: what every per-model executable links besides its generated kernels.

pub mod tokenizer;
