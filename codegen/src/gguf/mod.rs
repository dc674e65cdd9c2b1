//! GGUF v3 reader (being written).
