//! The training loop's checkpoint in a run folder: `checkpoint/` holds the model's trained
//! parameters (`trained.safetensors`: those that require gradients; the frozen rest of a LoRA
//! cell's decoder comes from its pretrained checkpoint), the optimiser state, the best model so
//! far (`best.mpk`) and, written last, `state.json` ([`ResumeState`]).
//!
//! [`save`] writes a new checkpoint into `checkpoint.PID.tmp/` and swaps it in by two renames
//! (`checkpoint/` → `checkpoint.old/`, then the staging folder → `checkpoint/`). A kill can leave
//! three states, and each resumes ([`restore`], run before a cell continues):
//! - before the first rename: `checkpoint/` and a staging folder (removed by the harness at the
//!   next start, as every `*.PID.tmp` of a dead process);
//! - between the renames: only `checkpoint.old/` (and the staging folder): it is moved back to
//!   `checkpoint/`, so that the next checkpoint finds the best model where it links it from;
//! - after the second rename: `checkpoint/` and a leftover `checkpoint.old/`, which goes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::module::{AutodiffModule, Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::Optimizer;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

/// The checkpoint folder inside a run folder.
pub const CHECKPOINT: &str = "checkpoint";

/// The previous checkpoint while a new one is swapped in.
const OLD: &str = "checkpoint.old";

/// Burn's recorder for the checkpoint's files (named MessagePack, full precision).
pub fn recorder() -> burn::record::NamedMpkFileRecorder<burn::record::FullPrecisionSettings> {
    burn::record::NamedMpkFileRecorder::new()
}

/// Where a run stands at a checkpoint (`checkpoint/state.json`, written last); the default is
/// a run that has not started.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ResumeState {
    /// Optimiser steps done.
    pub step: usize,
    /// The epoch being read and the position in its order.
    pub epoch: usize,
    /// Position in the epoch's order.
    pub cursor: usize,
    /// Seconds of training so far.
    pub seconds: f64,
    /// The best evaluation so far: (main metric, step, metrics).
    #[serde(with = "exact::best")]
    pub best: Option<(f64, usize, BTreeMap<String, f64>)>,
    /// The last evaluation's metrics.
    #[serde(with = "exact::map")]
    pub last_metrics: BTreeMap<String, f64>,
    /// The sum and count of the step losses since the last evaluation (a learner that does not
    /// evaluate during training checkpoints between evaluations).
    #[serde(default, with = "exact::pair")]
    pub loss_since_eval: (f64, usize),
    /// The sum of every step's loss so far (the run's mean training loss).
    #[serde(default, with = "exact::number")]
    pub loss_total: f64,
}

/// The numbers a resumed run continues from, written as text and read back bit for bit:
/// serde_json (without its `float_roundtrip` feature) may read a number one unit in the last
/// place off, which moved a resumed run's mean training loss in its last digit. Plain numbers
/// (checkpoints written before) still read.
mod exact {
    use std::collections::BTreeMap;

    use serde::de::Error;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    /// A number as written: text (exact) or a JSON number (earlier checkpoints).
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Written {
        Text(String),
        Number(f64),
    }

    fn text(x: f64) -> String {
        // Debug prints the shortest text that parses back to the same f64.
        format!("{x:?}")
    }

    fn value<E: Error>(w: Written) -> Result<f64, E> {
        match w {
            Written::Text(t) => t
                .parse()
                .map_err(|_| E::custom(format!("not a number: {t:?}"))),
            Written::Number(x) => Ok(x),
        }
    }

    fn texts(m: &BTreeMap<String, f64>) -> BTreeMap<&str, String> {
        m.iter().map(|(k, &v)| (k.as_str(), text(v))).collect()
    }

    fn values<E: Error>(m: BTreeMap<String, Written>) -> Result<BTreeMap<String, f64>, E> {
        m.into_iter().map(|(k, w)| Ok((k, value(w)?))).collect()
    }

    pub mod number {
        use super::*;

        pub fn serialize<S: Serializer>(x: &f64, s: S) -> Result<S::Ok, S::Error> {
            text(*x).serialize(s)
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
            value(Written::deserialize(d)?)
        }
    }

    pub mod pair {
        use super::*;

        pub fn serialize<S: Serializer>(p: &(f64, usize), s: S) -> Result<S::Ok, S::Error> {
            (text(p.0), p.1).serialize(s)
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<(f64, usize), D::Error> {
            let (w, n) = <(Written, usize)>::deserialize(d)?;
            Ok((value(w)?, n))
        }
    }

    pub mod map {
        use super::*;

        pub fn serialize<S: Serializer>(
            m: &BTreeMap<String, f64>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            texts(m).serialize(s)
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<BTreeMap<String, f64>, D::Error> {
            values(BTreeMap::<String, Written>::deserialize(d)?)
        }
    }

    pub mod best {
        use super::*;

        type Best = Option<(f64, usize, BTreeMap<String, f64>)>;

        pub fn serialize<S: Serializer>(b: &Best, s: S) -> Result<S::Ok, S::Error> {
            b.as_ref()
                .map(|(v, step, m)| (text(*v), *step, texts(m)))
                .serialize(s)
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Best, D::Error> {
            match Option::<(Written, usize, BTreeMap<String, Written>)>::deserialize(d)? {
                Some((v, step, m)) => Ok(Some((value(v)?, step, values(m)?))),
                None => Ok(None),
            }
        }
    }
}

/// Whether `folder` holds a complete checkpoint (its `state.json` is written last).
fn complete(folder: &Path) -> bool {
    folder.join("state.json").is_file()
}

/// Bring an interrupted run's checkpoint back to `dir/checkpoint/` (see the module docs):
/// after a kill between the two renames the previous checkpoint is moved back; after the second
/// the leftover previous one is removed.
pub fn restore(dir: &Path) -> Result<()> {
    let (current, old) = (dir.join(CHECKPOINT), dir.join(OLD));
    let ctx = || format!("restoring the checkpoint {}", old.display());
    if complete(&current) {
        if old.exists() {
            std::fs::remove_dir_all(&old).with_context(ctx)?;
        }
    } else if complete(&old) {
        if current.exists() {
            std::fs::remove_dir_all(&current).with_context(ctx)?;
        }
        std::fs::rename(&old, &current).with_context(ctx)?;
    }
    Ok(())
}

/// Remove a run's checkpoint (once its result is recorded).
pub fn remove(dir: &Path) {
    for name in [CHECKPOINT, OLD] {
        let _ = std::fs::remove_dir_all(dir.join(name));
    }
}

impl ResumeState {
    /// The checkpoint of a run folder and its folder, after [`restore`]; `None` when there is
    /// none (or its state does not parse: the run starts again).
    pub fn find(dir: &Path) -> Result<Option<(Self, PathBuf)>> {
        restore(dir)?;
        let folder = dir.join(CHECKPOINT);
        let Ok(text) = std::fs::read_to_string(folder.join("state.json")) else {
            return Ok(None);
        };
        Ok(serde_json::from_str(&text).ok().map(|s| (s, folder)))
    }

    /// Prepare a run folder for a resumed run: restore its checkpoint and keep the evaluations
    /// up to the checkpoint's step in `metrics.jsonl` (later ones belong to the lost work).
    /// Returns the step, or `None` when there is no checkpoint.
    pub fn prepare(dir: &Path) -> Result<Option<usize>> {
        let Some((state, _)) = Self::find(dir)? else {
            return Ok(None);
        };
        let path = dir.join("metrics.jsonl");
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let kept: String = text
            .lines()
            .filter(|l| {
                serde_json::from_str::<serde_json::Value>(l)
                    .ok()
                    .and_then(|v| v["step"].as_u64())
                    .is_some_and(|s| s as usize <= state.step)
            })
            .map(|l| format!("{l}\n"))
            .collect();
        crate::harness::results::write_atomic(&path, kept.as_bytes())?;
        Ok(Some(state.step))
    }
}

/// Write `record` to `path.mpk` in the format of Burn's `NamedMpkFileRecorder` (named
/// MessagePack, full precision), which [`recorder`] reads back. Written here rather than by the
/// recorder, whose error drops the I/O cause (a full disk reads "error while writing multi-byte
/// MessagePack value"); this one names the file and the cause.
fn write_record<B: Backend, R: burn::record::Record<B>>(record: R, path: &Path) -> Result<()> {
    use std::io::Write;
    let path = path.with_extension("mpk");
    let ctx = || format!("cannot write the checkpoint file {}", path.display());
    let file = std::fs::File::create(&path).with_context(ctx)?;
    let mut writer = std::io::BufWriter::new(file);
    let item = record.into_item::<burn::record::FullPrecisionSettings>();
    let record = burn::record::BurnRecord::<_, B>::new::<
        burn::record::NamedMpkFileRecorder<burn::record::FullPrecisionSettings>,
    >(item);
    rmp_serde::encode::write_named(&mut writer, &record)
        .map_err(|e| match io_cause(&e) {
            Some(io) => anyhow::anyhow!("{io}"),
            None => anyhow::anyhow!("{e}"),
        })
        .with_context(ctx)?;
    writer.flush().with_context(ctx)?;
    Ok(())
}

/// The I/O error behind `e`, if any.
fn io_cause<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a std::io::Error> {
    let mut cause = Some(e);
    while let Some(err) = cause {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        cause = err.source();
    }
    None
}

/// The file of a checkpoint's trained parameters.
const TRAINED: &str = "trained.safetensors";

/// `(parameter id, shape)` of the parameters that require gradients, in the module's visiting
/// order.
struct TrainedParams {
    shapes: Vec<(u64, Vec<usize>)>,
}

impl<B: Backend> ModuleVisitor<B> for TrainedParams {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let value = param.val();
        if !value.is_require_grad() {
            return;
        }
        self.shapes.push((param.id.val(), value.dims().to_vec()));
    }
}

/// Write the parameters of `model` that require gradients (what training changes: all of an
/// encoder's, a LoRA cell's adapters and head) to `path` as f32 safetensors, named by their
/// order in the module with their parameter ids in the metadata (the optimiser state is keyed
/// by them). The frozen rest comes from the pretrained checkpoint when the run resumes, so a
/// LoRA checkpoint of an 8B decoder holds megabytes, not its 16 GB.
fn write_trained<B: Backend, M: Module<B>>(model: &M, path: &Path) -> Result<()> {
    use std::io::Write;
    let ctx = || format!("cannot write the checkpoint file {}", path.display());
    let mut params = TrainedParams { shapes: Vec::new() };
    model.visit(&mut params);
    let mut header = serde_json::Map::new();
    let mut ids = serde_json::Map::new();
    let mut offset = 0usize;
    for (k, (id, shape)) in params.shapes.iter().enumerate() {
        let bytes = 4 * shape.iter().product::<usize>();
        header.insert(
            format!("{k:06}"),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + bytes]}),
        );
        ids.insert(format!("{k:06}"), id.to_string().into());
        offset += bytes;
    }
    header.insert("__metadata__".into(), ids.into());
    let mut header = serde_json::to_vec(&serde_json::Value::Object(header))?;
    header.resize(header.len().next_multiple_of(8), b' ');
    let file = std::fs::File::create(path).with_context(ctx)?;
    let mut writer = std::io::BufWriter::new(file);
    writer
        .write_all(&(header.len() as u64).to_le_bytes())
        .and_then(|()| writer.write_all(&header))
        .with_context(ctx)?;
    // One parameter's values at a time.
    struct StreamValues<'a, W: std::io::Write> {
        writer: &'a mut W,
        error: Option<std::io::Error>,
    }
    impl<B: Backend, W: std::io::Write> ModuleVisitor<B> for StreamValues<'_, W> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let value = param.val();
            if !value.is_require_grad() || self.error.is_some() {
                return;
            }
            let data = value.into_data().convert::<f32>();
            let bytes: Vec<u8> = data
                .as_slice::<f32>()
                .expect("f32 after convert")
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect();
            if let Err(e) = self.writer.write_all(&bytes) {
                self.error = Some(e);
            }
        }
    }
    let mut write = StreamValues {
        writer: &mut writer,
        error: None,
    };
    model.visit(&mut write);
    if let Some(e) = write.error {
        return Err(e).with_context(ctx);
    }
    writer.flush().with_context(ctx)?;
    Ok(())
}

/// Put the parameters [`write_trained`] wrote back into `model`, with their ids.
fn read_trained<B: Backend, M: Module<B>>(model: M, path: &Path) -> Result<M> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let file = safetensors::SafeTensors::deserialize(&bytes)
        .with_context(|| format!("{} is not a safetensors file", path.display()))?;
    let (_, metadata) = safetensors::SafeTensors::read_metadata(&bytes)?;
    let ids = metadata.metadata().clone().unwrap_or_default();
    let mut saved = Vec::new();
    for k in 0..file.len() {
        let name = format!("{k:06}");
        let view = file
            .tensor(&name)
            .with_context(|| format!("{}: no tensor {name}", path.display()))?;
        let id: u64 = ids
            .get(&name)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("{}: no parameter id for {name}", path.display()))?;
        let values: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        saved.push((id, view.shape().to_vec(), values));
    }
    struct Load {
        saved: std::vec::IntoIter<(u64, Vec<usize>, Vec<f32>)>,
        error: Option<String>,
    }
    impl<B: Backend> ModuleMapper<B> for Load {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            let (id, value, mapper) = param.consume();
            if !value.is_require_grad() || self.error.is_some() {
                return Param::from_mapped_value(id, value, mapper);
            }
            let Some((saved_id, shape, values)) = self.saved.next() else {
                self.error = Some("it holds fewer trained parameters than the model".into());
                return Param::from_mapped_value(id, value, mapper);
            };
            if shape != value.dims() {
                self.error = Some(format!(
                    "a trained parameter has shape {shape:?}, the model's {:?}",
                    value.dims()
                ));
                return Param::from_mapped_value(id, value, mapper);
            }
            let loaded = Tensor::<B, D>::from_data(
                TensorData::new(values, shape).convert_dtype(value.dtype()),
                &value.device(),
            )
            .require_grad();
            Param::from_mapped_value(ParamId::from(saved_id), loaded, mapper)
        }
    }
    let mut load = Load {
        saved: saved.into_iter(),
        error: None,
    };
    let model = model.map(&mut load);
    if load.saved.next().is_some() && load.error.is_none() {
        load.error = Some("it holds more trained parameters than the model".into());
    }
    match load.error {
        Some(e) => bail!("{}: {e}", path.display()),
        None => Ok(model),
    }
}

/// The model of the checkpoint in `folder`: `model` (fresh from its pretrained checkpoint) with
/// its trained parameters replaced by the checkpoint's. A checkpoint written before the trained
/// parameters were kept alone (its whole model in `model.mpk`) is read as Burn's record.
pub fn load_model<B: AutodiffBackend, M: AutodiffModule<B>>(model: M, folder: &Path) -> Result<M> {
    let trained = folder.join(TRAINED);
    let whole = folder.join("model.mpk");
    if !trained.exists() && whole.exists() {
        let device = model_device(&model);
        return Ok(model.load_file(folder.join("model"), &recorder(), &device)?);
    }
    read_trained(model, &trained)
}

/// The device of a module's first parameter (the default device for a module without any).
fn model_device<B: Backend, M: Module<B>>(model: &M) -> B::Device {
    model.devices().into_iter().next().unwrap_or_default()
}

/// Write a checkpoint into `dir/checkpoint/`: the model's trained parameters, the optimiser state, the best model
/// when it changed (carried over from the previous checkpoint otherwise), and `state.json`,
/// through a staging folder and two renames (see the module docs).
pub fn save<B: AutodiffBackend, M: AutodiffModule<B>>(
    dir: &Path,
    state: &ResumeState,
    model: &M,
    optimizer: &impl Optimizer<M, B>,
    best_model: Option<&M::InnerModule>,
) -> Result<()> {
    let tmp = dir.join(format!("checkpoint.{}.tmp", std::process::id()));
    let current = dir.join(CHECKPOINT);
    let old = dir.join(OLD);
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    write_trained::<B, M>(model, &tmp.join(TRAINED))?;
    write_record::<B, _>(optimizer.to_record(), &tmp.join("optimizer"))?;
    let ctx = || format!("writing a checkpoint into {}", tmp.display());
    match best_model {
        Some(best) => {
            write_record::<B::InnerBackend, _>(best.clone().into_record(), &tmp.join("best"))?
        }
        None if state.best.is_some() => {
            // The previous checkpoint's file, linked rather than copied where the file system
            // allows (the old folder is removed below; the link keeps the data).
            let (from, to) = (current.join("best.mpk"), tmp.join("best.mpk"));
            std::fs::hard_link(&from, &to)
                .or_else(|_| std::fs::copy(&from, &to).map(drop))
                .with_context(|| format!("carrying the best model over from {}", from.display()))
                .with_context(ctx)?;
        }
        None => {}
    }
    std::fs::write(tmp.join("state.json"), serde_json::to_string_pretty(state)?)
        .with_context(ctx)?;
    let _ = std::fs::remove_dir_all(&old);
    if current.exists() {
        std::fs::rename(&current, &old).with_context(ctx)?;
    }
    std::fs::rename(&tmp, &current).with_context(ctx)?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_reads_back_bit_for_bit_and_earlier_plain_numbers_still_read() {
        // Sums of many f32 losses, as the loop keeps them: every value must come back exactly.
        let mut bits = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            bits ^= bits << 13;
            bits ^= bits >> 7;
            bits ^= bits << 17;
            (bits >> 11) as f64 / (1u64 << 53) as f64 * 1000.0
        };
        for _ in 0..2000 {
            let metrics: BTreeMap<String, f64> = [("a".to_string(), next())].into();
            let state = ResumeState {
                best: Some((next(), 3, metrics.clone())),
                last_metrics: metrics,
                loss_since_eval: (next(), 7),
                loss_total: next(),
                ..ResumeState::default()
            };
            let back: ResumeState =
                serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();
            let b = back.best.as_ref().unwrap();
            let want = state.best.as_ref().unwrap();
            assert_eq!(b.0.to_bits(), want.0.to_bits());
            assert_eq!(b.2["a"].to_bits(), want.2["a"].to_bits());
            assert_eq!(
                back.last_metrics["a"].to_bits(),
                state.last_metrics["a"].to_bits()
            );
            assert_eq!(
                back.loss_since_eval.0.to_bits(),
                state.loss_since_eval.0.to_bits()
            );
            assert_eq!(back.loss_total.to_bits(), state.loss_total.to_bits());
        }
        let earlier = r#"{"step": 4, "epoch": 0, "cursor": 8, "seconds": 1.5,
            "best": [0.5, 4, {"accuracy": 0.5}], "last_metrics": {"accuracy": 0.5},
            "loss_since_eval": [2.25, 4], "loss_total": 3.5}"#;
        let old: ResumeState = serde_json::from_str(earlier).unwrap();
        assert_eq!((old.loss_since_eval, old.loss_total), ((2.25, 4), 3.5));
        assert_eq!(old.best.unwrap().2["accuracy"], 0.5);
    }

    fn checkpoint(folder: &Path, step: usize) {
        std::fs::create_dir_all(folder).unwrap();
        std::fs::write(folder.join("best.mpk"), format!("best {step}")).unwrap();
        let state = ResumeState {
            step,
            epoch: 0,
            cursor: 0,
            seconds: 0.0,
            best: None,
            last_metrics: BTreeMap::new(),
            loss_since_eval: (0.0, 0),
            loss_total: 0.0,
        };
        std::fs::write(
            folder.join("state.json"),
            serde_json::to_string(&state).unwrap(),
        )
        .unwrap();
    }

    type Ad = burn::backend::Autodiff<burn::backend::NdArray<f32>>;

    /// A linear layer whose weight trains and whose bias is frozen.
    fn linear(seed: u64) -> burn::nn::Linear<Ad> {
        let device = Default::default();
        <Ad as Backend>::seed(&device, seed);
        let mut layer = burn::nn::LinearConfig::new(3, 2).init::<Ad>(&device);
        layer.bias = layer.bias.map(|b| b.map(|t| t.set_require_grad(false)));
        layer
    }

    fn values(t: Tensor<Ad, 2>) -> Vec<f32> {
        t.into_data().to_vec().unwrap()
    }

    #[test]
    fn trained_parameters_round_trip_with_their_ids_and_an_old_whole_model_still_loads() {
        let tmp = tempfile::tempdir().unwrap();
        let saved = linear(1);
        write_trained::<Ad, _>(&saved, &tmp.path().join(TRAINED)).unwrap();
        let fresh = linear(2);
        assert_ne!(values(fresh.weight.val()), values(saved.weight.val()));
        let loaded = load_model(fresh.clone(), tmp.path()).unwrap();
        assert_eq!(values(loaded.weight.val()), values(saved.weight.val()));
        assert_eq!(
            loaded.weight.id, saved.weight.id,
            "the optimiser state is keyed by it"
        );
        assert!(loaded.weight.val().is_require_grad());
        // The frozen bias is not in the file: it stays the fresh model's.
        let bias = |l: &burn::nn::Linear<Ad>| l.bias.as_ref().unwrap().val().into_data();
        assert_eq!(bias(&loaded), bias(&fresh));
        // A model of another shape is refused, naming the file.
        let other = burn::nn::LinearConfig::new(4, 2).init::<Ad>(&Default::default());
        let err = load_model(other, tmp.path()).unwrap_err().to_string();
        assert!(err.contains(TRAINED) && err.contains("shape"), "{err}");

        // A checkpoint of an earlier version: the whole model as Burn's record.
        let old = tmp.path().join("old");
        std::fs::create_dir_all(&old).unwrap();
        write_record::<Ad, _>(saved.clone().into_record(), &old.join("model")).unwrap();
        let loaded = load_model(linear(3), &old).unwrap();
        assert_eq!(values(loaded.weight.val()), values(saved.weight.val()));
    }

    fn step_found(dir: &Path) -> Option<usize> {
        ResumeState::find(dir).unwrap().map(|(s, _)| s.step)
    }

    #[test]
    fn every_state_of_the_swap_resumes_from_checkpoint_with_its_best_model() {
        let tmp = tempfile::tempdir().unwrap();
        // Between the renames: only the previous checkpoint (and a staging folder).
        let between = tmp.path().join("between");
        checkpoint(&between.join(OLD), 10);
        checkpoint(&between.join("checkpoint.77.tmp"), 20);
        assert_eq!(step_found(&between), Some(10));
        assert!(between.join("checkpoint/best.mpk").is_file());
        assert!(!between.join(OLD).exists());
        // After the second rename: the new one and the leftover previous one.
        let after = tmp.path().join("after");
        checkpoint(&after.join(OLD), 10);
        checkpoint(&after.join(CHECKPOINT), 20);
        assert_eq!(step_found(&after), Some(20));
        assert!(!after.join(OLD).exists());
        // Before the first rename: the current one; an incomplete previous one is not taken.
        let before = tmp.path().join("before");
        checkpoint(&before.join(CHECKPOINT), 10);
        std::fs::create_dir_all(before.join(OLD)).unwrap();
        assert_eq!(step_found(&before), Some(10));
        // No checkpoint at all.
        assert_eq!(step_found(&tmp.path().join("none")), None);
    }
}
