//! The safetensors header validator on arbitrary bytes: never panics, and every range it
//! accepts lies inside the file with the size its dtype and shape say.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use qwenc_codegen::model_io::safetensors_header::parse_header;

fuzz_target!(|data: &[u8]| {
    let dtype = |name: &str| match name {
        "F32" => Some((4usize, 4usize)),
        "F16" | "BF16" => Some((2, 2)),
        "I8" | "U8" => Some((1, 1)),
        _ => None,
    };
    if let Ok((entries, data_len)) = parse_header(
        Path::new("fuzz.safetensors"),
        data,
        dtype,
        "F32, F16, BF16, I8, U8",
    ) {
        assert!(data_len <= data.len());
        for e in entries {
            assert!(
                e.start <= e.end && e.end <= data.len(),
                "{}: {}..{} of {}",
                e.name,
                e.start,
                e.end,
                data.len()
            );
            let elems = e
                .shape
                .iter()
                .try_fold(1usize, |a, &d| a.checked_mul(d))
                .expect("accepted shapes do not overflow");
            assert_eq!(
                elems.checked_mul(e.dtype),
                Some(e.end - e.start),
                "{}",
                e.name
            );
        }
    }
});
