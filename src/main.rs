//! `qwen`: one compiled model and the runtime's command line.

use std::process::ExitCode;

use qwenc_runtime::model::Model;

fn main() -> ExitCode {
    match qwenc::CompiledModel::load() {
        Ok(model) => {
            println!("{:?}", model.info());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
