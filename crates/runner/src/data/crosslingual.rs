//! Readers for the cross-lingual evaluation sets, from their distribution files: XNLI
//! (`xnli.dev.tsv` / `xnli.test.tsv` of XNLI-1.0 with a `language` column, the XNLI-MT training
//! files `multinli.train.{lang}.tsv`, or JSON lines with `premise`, `hypothesis`, `label`) and
//! SQuAD-format JSON (XQuAD's `xquad.{lang}.json`, SQuAD v1.1).
//!
//! Labels follow HF `datasets`' `xnli`: 0 entailment, 1 neutral, 2 contradiction (XNLI-MT writes
//! `contradictory`). Every error names the file and the line (TSV, JSONL) or the question id
//! (JSON).

use std::path::Path;

use anyhow::{Context, Result, bail};

/// XNLI's classes, in label order.
pub const XNLI_LABELS: [&str; 3] = ["entailment", "neutral", "contradiction"];

/// One premise–hypothesis pair.
#[derive(Debug, Clone, PartialEq)]
pub struct NliExample {
    /// The language, when the file says (XNLI-1.0's `language` column).
    pub language: Option<String>,
    /// The premise.
    pub premise: String,
    /// The hypothesis.
    pub hypothesis: String,
    /// Index into [`XNLI_LABELS`].
    pub label: usize,
}

fn nli_label(raw: &str) -> Option<usize> {
    match raw.trim() {
        "entailment" | "0" => Some(0),
        "neutral" | "1" => Some(1),
        "contradiction" | "contradictory" | "2" => Some(2),
        _ => None,
    }
}

/// Read XNLI pairs from a `.tsv` (XNLI-1.0 or XNLI-MT layout, by its header) or a `.jsonl` file;
/// with `language`, only that language's rows of a file that has a `language` column.
pub fn read_xnli(path: &Path, language: Option<&str>) -> Result<Vec<NliExample>> {
    let text = crate::data::read_text(path)?;
    let bad_label = |line: usize, raw: &str| {
        anyhow::anyhow!(
            "{}, line {line}: label {raw:?} is not one of entailment, neutral, contradiction (or \
             0, 1, 2)",
            path.display()
        )
    };
    let mut out = Vec::new();
    if path.extension().is_some_and(|e| e == "jsonl") {
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let at = || format!("{}, line {}", path.display(), i + 1);
            let v: serde_json::Value =
                serde_json::from_str(line).with_context(|| format!("{}: invalid JSON", at()))?;
            let field = |k: &str| -> Result<String> {
                match &v[k] {
                    serde_json::Value::String(s) => Ok(s.clone()),
                    serde_json::Value::Number(n) => Ok(n.to_string()),
                    _ => bail!("{}: no field `{k}`", at()),
                }
            };
            let raw = field("label")?;
            out.push(NliExample {
                language: v["language"].as_str().map(str::to_string),
                premise: field("premise")?,
                hypothesis: field("hypothesis")?,
                label: nli_label(&raw).ok_or_else(|| bad_label(i + 1, &raw))?,
            });
        }
    } else {
        let mut lines = text.lines().enumerate();
        let (_, header) = lines
            .next()
            .with_context(|| format!("{}: empty file", path.display()))?;
        let columns: Vec<&str> = header.split('\t').collect();
        let find = |names: &[&str]| columns.iter().position(|c| names.contains(c));
        let (Some(p), Some(h), Some(l)) = (
            find(&["sentence1", "premise"]),
            find(&["sentence2", "hypo", "hypothesis"]),
            find(&["gold_label", "label"]),
        ) else {
            bail!(
                "{}, line 1: expected the columns sentence1/premise, sentence2/hypo and \
                 gold_label/label, found {}",
                path.display(),
                columns.join(", ")
            );
        };
        let lang = find(&["language"]);
        for (i, line) in lines {
            if line.is_empty() {
                continue;
            }
            let cells: Vec<&str> = line.split('\t').collect();
            if cells.len() < columns.len() {
                bail!(
                    "{}, line {}: {} fields, the header has {}",
                    path.display(),
                    i + 1,
                    cells.len(),
                    columns.len()
                );
            }
            let row_lang = lang.map(|c| cells[c].to_string());
            if let (Some(want), Some(have)) = (language, &row_lang)
                && want != have
            {
                continue;
            }
            out.push(NliExample {
                language: row_lang,
                premise: cells[p].to_string(),
                hypothesis: cells[h].to_string(),
                label: nli_label(cells[l]).ok_or_else(|| bad_label(i + 1, cells[l]))?,
            });
        }
    }
    if out.is_empty() {
        bail!(
            "{}: no examples{}",
            path.display(),
            language.map_or(String::new(), |l| format!(" for language {l}"))
        );
    }
    Ok(out)
}

/// One question of a SQuAD-format file.
#[derive(Debug, Clone, PartialEq)]
pub struct QaExample {
    /// The question id.
    pub id: String,
    /// The article title.
    pub title: String,
    /// The paragraph.
    pub context: String,
    /// The question.
    pub question: String,
    /// The gold answers: character offset into `context` and text.
    pub answers: Vec<(usize, String)>,
}

/// Read every question of a SQuAD v1.1-format JSON file (XQuAD). An answer whose text is not at
/// its `answer_start` (in characters, as Python counts) is an error naming the question.
pub fn read_squad_json(path: &Path) -> Result<Vec<QaExample>> {
    let text = crate::data::read_text(path)?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}: invalid JSON", path.display()))?;
    let str_at = |v: &serde_json::Value, k: &str, at: &str| -> Result<String> {
        v[k].as_str()
            .map(str::to_string)
            .with_context(|| format!("{}: {at}: no string `{k}`", path.display()))
    };
    let array = |v: &serde_json::Value, k: &str, at: &str| -> Result<Vec<serde_json::Value>> {
        v[k].as_array()
            .cloned()
            .with_context(|| format!("{}: {at}: no array `{k}`", path.display()))
    };
    let mut out = Vec::new();
    for (a, article) in array(&v, "data", "top level")?.iter().enumerate() {
        let at = format!("data[{a}]");
        let title = article["title"].as_str().unwrap_or_default().to_string();
        for (p, para) in array(article, "paragraphs", &at)?.iter().enumerate() {
            let at = format!("data[{a}].paragraphs[{p}]");
            let context = str_at(para, "context", &at)?;
            let chars: Vec<char> = context.chars().collect();
            for (q, qa) in array(para, "qas", &at)?.iter().enumerate() {
                let at = format!("data[{a}].paragraphs[{p}].qas[{q}]");
                let id = str_at(qa, "id", &at)?;
                let at = format!("question {id}");
                let mut answers = Vec::new();
                for ans in array(qa, "answers", &at)? {
                    let answer = str_at(&ans, "text", &at)?;
                    let start = ans["answer_start"]
                        .as_u64()
                        .with_context(|| format!("{}: {at}: no `answer_start`", path.display()))?
                        as usize;
                    let n = answer.chars().count();
                    let found: String = chars.iter().skip(start).take(n).collect();
                    if found != answer {
                        bail!(
                            "{}: {at}: answer {answer:?} is not at character {start} of the \
                             context (found {found:?})",
                            path.display()
                        );
                    }
                    answers.push((start, answer));
                }
                if answers.is_empty() {
                    bail!("{}: {at}: no answers", path.display());
                }
                out.push(QaExample {
                    id,
                    title: title.clone(),
                    context: context.clone(),
                    question: str_at(qa, "question", &at)?,
                    answers,
                });
            }
        }
    }
    if out.is_empty() {
        bail!("{}: no questions", path.display());
    }
    Ok(out)
}
