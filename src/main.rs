//! `qwen`: one compiled model and the runtime's command line (generate, chat, info, ...).

use std::process::ExitCode;

fn main() -> ExitCode {
    match qwenc::CompiledModel::load() {
        Ok(model) => qwenc_runtime::cli::main_with(&model),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
