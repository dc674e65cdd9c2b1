//! Scaffolding shared by runtime's integration tests (each takes it with `mod common;`): the
//! `qwen` command line run in-process with captured streams, scratch directories and files
//! removed on drop, an independent log-softmax, and the fake model with a hook on each forward
//! pass.
#![allow(dead_code)]

use std::io::Cursor;
use std::path::PathBuf;

use qwenc_runtime::cli::{run, Io};
use qwenc_runtime::model::{ForwardError, KvCache, LogitsFor, Model, ModelInfo};
use qwenc_runtime::testing::FakeModel;
use qwenc_runtime::tokenizer::Tokenizer;

/// What a `qwen` command returned and wrote.
pub struct Output {
    pub code: u8,
    pub stdout: String,
    pub stderr: String,
}

/// `qwen args…` on `model` through `cli::run`, with `stdin` as its input (not a terminal).
pub fn qwen_with_stdin(model: &dyn Model, args: &[&str], stdin: &str) -> Output {
    let mut input = Cursor::new(stdin.as_bytes().to_vec());
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    let argv = std::iter::once("qwen").chain(args.iter().copied());
    let code = run(
        argv,
        model,
        &mut Io {
            stdin: &mut input,
            stdout: &mut stdout,
            stderr: &mut stderr,
            interactive: false,
        },
    );
    Output {
        code,
        stdout: String::from_utf8(stdout).unwrap(),
        stderr: String::from_utf8(stderr).unwrap(),
    }
}

/// `qwen args…` on `model` with an empty stdin.
pub fn qwen(model: &dyn Model, args: &[&str]) -> Output {
    qwen_with_stdin(model, args, "")
}

/// A fresh directory under the system's temporary directory, removed on drop. Names are
/// per test process, so a name need only be unique within one test file.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("qwenc-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    /// Writes `text` to `file` in the directory; returns its path.
    pub fn write(&self, file: &str, text: &str) -> PathBuf {
        let p = self.join(file);
        std::fs::write(&p, text).unwrap();
        p
    }
    /// The path of `file` in the directory.
    pub fn join(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
    pub fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A file alone in a fresh [`TempDir`], removed (with its directory) on drop.
pub struct TempFile {
    _dir: TempDir,
    path: PathBuf,
}

impl TempFile {
    pub fn new(name: &str, contents: &str) -> TempFile {
        let dir = TempDir::new(name);
        let path = dir.write(name, contents);
        TempFile { _dir: dir, path }
    }
    pub fn path(&self) -> &str {
        self.path.to_str().unwrap()
    }
}

/// log_softmax(logits)[t] in f64, written independently of the library.
pub fn log_softmax_at(logits: &[f32], t: u32) -> f64 {
    let m = logits
        .iter()
        .fold(f64::NEG_INFINITY, |a, &x| a.max(x as f64));
    let lse = m + logits
        .iter()
        .map(|&x| (x as f64 - m).exp())
        .sum::<f64>()
        .ln();
    logits[t as usize] as f64 - lse
}

/// The fake model with `before(tokens)` called before each forward pass: a clock that
/// advances, a pause.
pub struct Hooked<F> {
    pub inner: FakeModel,
    pub before: F,
}

impl<F: Fn(usize) + Sync> Model for Hooked<F> {
    fn info(&self) -> &ModelInfo {
        self.inner.info()
    }
    fn tokenizer(&self) -> &Tokenizer {
        self.inner.tokenizer()
    }
    fn new_cache(&self, capacity: usize) -> KvCache {
        self.inner.new_cache(capacity)
    }
    fn forward(
        &self,
        cache: &mut KvCache,
        tokens: &[u32],
        logits: LogitsFor,
    ) -> Result<Vec<f32>, ForwardError> {
        (self.before)(tokens.len());
        self.inner.forward(cache, tokens, logits)
    }
}
