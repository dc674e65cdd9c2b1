//! The multiple-choice tasks, their data files and their prompts, as lm-evaluation-harness
//! defines them (0-shot).
//!
//! | task | file | context | choices |
//! |---|---|---|---|
//! | `arc_challenge` | `arc_challenge_test.jsonl` | `"Question: {question}\nAnswer:"` | `choices` |
//! | `hellaswag` | `hellaswag_val.jsonl` | `query` | `choices` (already preprocessed) |
//! | `piqa` | `piqa_val.jsonl` | `"Question: {goal}\nAnswer:"` | `[sol1, sol2]` |
//!
//! The continuation of choice `s` is `" " + s` (lm-eval's `target_delimiter`); the gold is
//! `label`. Blank lines are skipped; `doc_id` is the 0-based position of the document in
//! the file (blank lines not counted).

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// lm-eval's default `target_delimiter`: put between the context and each choice.
pub const TARGET_DELIMITER: &str = " ";

/// A multiple-choice task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Task {
    ArcChallenge,
    Hellaswag,
    Piqa,
}

impl Task {
    pub const ALL: [Task; 3] = [Task::ArcChallenge, Task::Hellaswag, Task::Piqa];

    /// lm-eval's task name.
    pub fn name(self) -> &'static str {
        match self {
            Task::ArcChallenge => "arc_challenge",
            Task::Hellaswag => "hellaswag",
            Task::Piqa => "piqa",
        }
    }

    /// The file in the data directory.
    pub fn file_name(self) -> &'static str {
        match self {
            Task::ArcChallenge => "arc_challenge_test.jsonl",
            Task::Hellaswag => "hellaswag_val.jsonl",
            Task::Piqa => "piqa_val.jsonl",
        }
    }

    /// The metric the AICAS challenge reports: acc_norm for ARC and HellaSwag, acc for PIQA.
    pub fn challenge_metric(self) -> &'static str {
        match self {
            Task::ArcChallenge | Task::Hellaswag => "acc_norm",
            Task::Piqa => "acc",
        }
    }

    pub fn from_name(name: &str) -> Option<Task> {
        Task::ALL.into_iter().find(|t| t.name() == name)
    }
}

impl std::fmt::Display for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Task {
    type Err = String;
    fn from_str(s: &str) -> Result<Task, String> {
        Task::from_name(s.trim()).ok_or_else(|| {
            let known: Vec<&str> = Task::ALL.iter().map(|t| t.name()).collect();
            format!("unknown task `{s}` (known: {})", known.join(", "))
        })
    }
}

/// One multiple-choice question.
#[derive(Clone, Debug, PartialEq)]
pub struct Doc {
    /// 0-based position in the file (blank lines not counted).
    pub doc_id: usize,
    /// The context, before any whitespace moving.
    pub context: String,
    /// The choice texts, without the target delimiter (as lm-eval's `doc_to_choice`).
    pub choices: Vec<String>,
    /// Index of the right choice.
    pub target: usize,
    /// HellaSwag's `exact_lmeval` flag (`None` for the other tasks).
    pub exact_lmeval: Option<bool>,
}

impl Doc {
    /// The continuation of choice `i`: `" " + choice`.
    pub fn continuation(&self, i: usize) -> String {
        format!("{TARGET_DELIMITER}{}", self.choices[i])
    }
}

/// A data file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}: {message}", path.display())]
    Line {
        path: PathBuf,
        /// 1-based.
        line: usize,
        message: String,
    },
    #[error("{}: no documents", path.display())]
    Empty { path: PathBuf },
}

#[derive(Deserialize)]
struct ArcRow {
    question: String,
    choices: Vec<String>,
    label: usize,
}

#[derive(Deserialize)]
struct PiqaRow {
    goal: String,
    sol1: String,
    sol2: String,
    label: usize,
}

#[derive(Deserialize)]
struct HellaswagRow {
    query: String,
    choices: Vec<String>,
    label: usize,
    #[serde(default)]
    exact_lmeval: bool,
}

/// The document of one JSON line.
fn parse_line(task: Task, line: &str, doc_id: usize) -> Result<Doc, String> {
    let (context, choices, target, exact_lmeval) = match task {
        Task::ArcChallenge => {
            let r: ArcRow = serde_json::from_str(line).map_err(|e| e.to_string())?;
            (
                format!("Question: {}\nAnswer:", r.question),
                r.choices,
                r.label,
                None,
            )
        }
        Task::Piqa => {
            let r: PiqaRow = serde_json::from_str(line).map_err(|e| e.to_string())?;
            (
                format!("Question: {}\nAnswer:", r.goal),
                vec![r.sol1, r.sol2],
                r.label,
                None,
            )
        }
        Task::Hellaswag => {
            let r: HellaswagRow = serde_json::from_str(line).map_err(|e| e.to_string())?;
            (r.query, r.choices, r.label, Some(r.exact_lmeval))
        }
    };
    if choices.len() < 2 {
        return Err(format!(
            "{} choice(s): a multiple-choice question needs at least 2",
            choices.len()
        ));
    }
    if target >= choices.len() {
        return Err(format!(
            "label {target} is out of range for {} choices",
            choices.len()
        ));
    }
    Ok(Doc {
        doc_id,
        context,
        choices,
        target,
        exact_lmeval,
    })
}

/// Parses the JSON lines of `task` (`path` only names the file in errors).
pub fn parse_docs(task: Task, bytes: &[u8], path: &Path) -> Result<Vec<Doc>, DataError> {
    let mut docs = Vec::new();
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let bad = |message: String| DataError::Line {
            path: path.to_path_buf(),
            line: i + 1,
            message,
        };
        let line = std::str::from_utf8(raw).map_err(|e| bad(format!("not UTF-8 ({e})")))?;
        if line.trim().is_empty() {
            continue;
        }
        docs.push(parse_line(task, line, docs.len()).map_err(bad)?);
    }
    if docs.is_empty() {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(docs)
}

/// Which documents of a file to evaluate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Selection {
    /// HellaSwag only: keep the rows with `exact_lmeval: true` (the 1000 rows whose text
    /// is exactly lm-eval's).
    pub hellaswag_exact: bool,
    /// Keep the first N documents in file order (after the filter above).
    pub limit: Option<usize>,
}

/// The documents of a task, and how many the file holds.
#[derive(Clone, Debug)]
pub struct TaskDocs {
    pub task: Task,
    pub path: PathBuf,
    /// Documents in the file.
    pub in_file: usize,
    /// The selected documents, in file order.
    pub docs: Vec<Doc>,
}

/// Reads `data_dir/<task file>` and selects documents.
pub fn load_task(task: Task, data_dir: &Path, selection: Selection) -> Result<TaskDocs, DataError> {
    let path = data_dir.join(task.file_name());
    let bytes = std::fs::read(&path).map_err(|source| DataError::Read {
        path: path.clone(),
        source,
    })?;
    let all = parse_docs(task, &bytes, &path)?;
    let in_file = all.len();
    let mut docs: Vec<Doc> = all
        .into_iter()
        .filter(|d| !(selection.hellaswag_exact && d.exact_lmeval == Some(false)))
        .collect();
    if let Some(n) = selection.limit {
        docs.truncate(n);
    }
    if docs.is_empty() {
        return Err(DataError::Empty { path });
    }
    Ok(TaskDocs {
        task,
        path,
        in_file,
        docs,
    })
}
