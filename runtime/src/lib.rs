//! qwenc runtime: what every per-model executable links besides its generated kernels.

pub mod chat;
pub mod model;
pub mod tokenizer;
pub mod weights;
