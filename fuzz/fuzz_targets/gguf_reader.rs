//! The GGUF reader on arbitrary bytes: parsing, tensor slices, dequantization of small
//! tensors, the config and the tokenizer rebuilt from metadata; never a panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use qwenc_codegen::model_io::gguf::GgufFile;
use qwenc_runtime::tokenizer::Tokenizer;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = GgufFile::from_bytes(Path::new("fuzz.gguf"), data.to_vec()) else {
        return;
    };
    for info in file.tensor_infos() {
        if let Ok(bytes) = file.tensor_bytes(info) {
            assert!(bytes.len() <= data.len());
            // Dequantize only what fits in a small buffer: the fuzzer must not allocate GBs.
            if bytes.len() <= 1 << 16 {
                let _ = file.dequantize(info);
            }
        }
    }
    let _ = file.config();
    if let Ok(spec) = file.tokenizer_spec() {
        if let Ok(tok) = Tokenizer::from_spec(spec) {
            let ids = tok.encode("Hello, world! <|im_end|>");
            let _ = tok.decode(&ids);
        }
    }
});
