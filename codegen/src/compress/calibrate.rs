//! Calibration activations for AWQ and GPTQ: the input of every linear layer, captured from
//! the f32 reference forward over a calibration text.
//!
//! The text must not be evaluation data: the default is `war_and_peace.txt`, never WikiText
//! (perplexity and KL) or the lm-eval tasks. It is tokenized whole, the first `tokens`
//! tokens are kept and cut into sequences of `seq_len` tokens, each run from an empty
//! cache. All activations are those of the unquantized model (no sequential re-capture
//! after quantizing earlier layers).
//!
//! [`CalibratedQuantizer`] is the compressor's quantizer built from them: per tensor class
//! (attention, MLP) RTN, AWQ ([`crate::quant::awq`]) or GPTQ ([`crate::quant::gptq`]).

use crate::compress::format::ClassSchemes;
use crate::model_io::checkpoint::{LayerTensor, LM_HEAD};
use crate::quant::awq::{self, AwqOptions, AwqSearch};
use crate::quant::gptq::{hessian, quantize_gptq, GptqOptions};
use crate::quant::{quantize_rtn, QuantizedMatrix, Quantizer, Scheme};
use crate::reference::{KvCache, ReferenceWeights, Tap};
use qwenc_runtime::model::LogitsFor;

/// The inputs of one layer's linear projections over all calibration tokens.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LayerActivations {
    /// q/k/v_proj input `[n, hidden]`.
    pub attn: Vec<f32>,
    /// o_proj input `[n, q_dim]`.
    pub o_proj: Vec<f32>,
    /// gate/up_proj input `[n, hidden]`.
    pub mlp: Vec<f32>,
    /// down_proj input `[n, ffn]`.
    pub down: Vec<f32>,
}

impl LayerActivations {
    /// The activations of a layer's `tap` (none for [`Tap::Head`], which is not a layer's).
    pub fn get(&self, tap: Tap) -> &[f32] {
        match tap {
            Tap::Attn => &self.attn,
            Tap::OProj => &self.o_proj,
            Tap::Mlp => &self.mlp,
            Tap::Down => &self.down,
            Tap::Head => &[],
        }
    }
    fn get_mut(&mut self, tap: Tap) -> &mut Vec<f32> {
        match tap {
            Tap::Attn => &mut self.attn,
            Tap::OProj => &mut self.o_proj,
            Tap::Mlp => &mut self.mlp,
            Tap::Down => &mut self.down,
            Tap::Head => unreachable!("the lm_head's input is Calibration::head"),
        }
    }
}

/// Activations of every layer over `tokens` calibration tokens.
#[derive(Clone, Debug, PartialEq)]
pub struct Calibration {
    pub tokens: usize,
    pub layers: Vec<LayerActivations>,
    /// lm_head input `[n, hidden]` (the final RMSNorm's output at every position).
    pub head: Vec<f32>,
}

impl Calibration {
    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.layers
            .iter()
            .map(|l| 4 * (l.attn.len() + l.o_proj.len() + l.mlp.len() + l.down.len()))
            .sum::<usize>()
            + 4 * self.head.len()
    }

    /// The input activations `[n, cols]` of the Hugging Face matrix `name`
    /// (`model.layers.L.{self_attn,mlp}.*_proj.weight`, or an untied `lm_head.weight`), or
    /// `None` for other tensors.
    pub fn inputs_of(&self, name: &str) -> Option<&[f32]> {
        if name == LM_HEAD {
            return Some(&self.head);
        }
        let (layer, tap) = tap_of(name)?;
        Some(self.layers.get(layer)?.get(tap))
    }
}

/// The layer and tap whose activations feed the matrix `name`.
pub fn tap_of(name: &str) -> Option<(usize, Tap)> {
    let (layer, t) = LayerTensor::parse(name)?;
    Some((layer, tap(t)))
}

/// The tap whose activations feed a layer's matrix `t`.
pub fn tap(t: LayerTensor) -> Tap {
    match t {
        LayerTensor::QProj | LayerTensor::KProj | LayerTensor::VProj => Tap::Attn,
        LayerTensor::OProj => Tap::OProj,
        LayerTensor::GateProj | LayerTensor::UpProj => Tap::Mlp,
        LayerTensor::DownProj => Tap::Down,
    }
}

/// The first of the matrices that a layer tap feeds (they share one scheme and input).
pub fn first_fed_by(tap: Tap) -> Option<LayerTensor> {
    match tap {
        Tap::Attn => Some(LayerTensor::QProj),
        Tap::OProj => Some(LayerTensor::OProj),
        Tap::Mlp => Some(LayerTensor::GateProj),
        Tap::Down => Some(LayerTensor::DownProj),
        Tap::Head => None,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CalibrateError {
    #[error(
        "the calibration text has {have} tokens, fewer than the {want} asked for (--calib-tokens)"
    )]
    TooFewTokens { have: usize, want: usize },
    #[error("calibration needs at least 1 token and a sequence length of at least 1")]
    Empty,
    #[error(transparent)]
    Forward(#[from] qwenc_runtime::model::ForwardError),
}

/// Run the reference over the first `n_tokens` of `tokens` in sequences of `seq_len` and
/// keep every linear layer's input; `progress(done, total)` after each sequence.
pub fn capture(
    weights: &ReferenceWeights,
    tokens: &[u32],
    n_tokens: usize,
    seq_len: usize,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Calibration, CalibrateError> {
    if n_tokens == 0 || seq_len == 0 {
        return Err(CalibrateError::Empty);
    }
    if tokens.len() < n_tokens {
        return Err(CalibrateError::TooFewTokens {
            have: tokens.len(),
            want: n_tokens,
        });
    }
    let layers = weights.config.num_hidden_layers;
    let mut acts = vec![LayerActivations::default(); layers];
    let mut head = Vec::new();
    let sequences: Vec<&[u32]> = tokens[..n_tokens].chunks(seq_len).collect();
    for (i, seq) in sequences.iter().enumerate() {
        let mut cache = KvCache::new(layers);
        weights.forward_observed(
            seq,
            &mut cache,
            LogitsFor::Last,
            &mut |l, tap, x| match tap {
                Tap::Head => head.extend_from_slice(x),
                _ => acts[l].get_mut(tap).extend_from_slice(x),
            },
        )?;
        progress(i + 1, sequences.len());
    }
    Ok(Calibration {
        tokens: n_tokens,
        layers: acts,
        head,
    })
}

// ---- Calibrated methods per tensor class ---------------------------------------------------

/// How the matrices of one class are quantized.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Method {
    /// Round to nearest.
    #[default]
    Rtn,
    /// AWQ scales (folded into the op before), then round to nearest.
    Awq,
    /// GPTQ error compensation.
    Gptq,
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Method::Rtn => "rtn",
            Method::Awq => "awq",
            Method::Gptq => "gptq",
        })
    }
}

impl std::str::FromStr for Method {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "rtn" => Ok(Method::Rtn),
            "awq" => Ok(Method::Awq),
            "gptq" => Ok(Method::Gptq),
            _ => Err(format!("unknown method `{s}` (expected rtn, awq or gptq)")),
        }
    }
}

/// The method of the attention and MLP matrices, and of an untied lm_head (RTN or GPTQ). The
/// embedding (and a tied lm_head, which is the embedding) is always RTN.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Methods {
    pub attn: Method,
    pub mlp: Method,
    pub lm_head: Method,
}

impl Methods {
    pub fn needs_calibration(&self) -> bool {
        self.attn != Method::Rtn || self.mlp != Method::Rtn || self.lm_head != Method::Rtn
    }
    /// Whether a class uses GPTQ (which needs the captured activations kept).
    pub fn uses_gptq(&self) -> bool {
        [self.attn, self.mlp, self.lm_head].contains(&Method::Gptq)
    }
    fn of(&self, tap: Tap) -> Method {
        match tap {
            Tap::Attn | Tap::OProj => self.attn,
            Tap::Mlp | Tap::Down => self.mlp,
            Tap::Head => self.lm_head,
        }
    }
}

impl std::fmt::Display for Methods {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.attn == self.mlp {
            write!(f, "{}", self.attn)?;
        } else {
            write!(f, "attn={},mlp={}", self.attn, self.mlp)?;
        }
        if self.lm_head != Method::Rtn {
            write!(f, ",lm_head={}", self.lm_head)?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Methods {
    type Err = String;
    /// `gptq` (attention and MLP), or per class: `attn=awq,mlp=gptq,lm_head=gptq`.
    fn from_str(s: &str) -> Result<Self, String> {
        let mut m = Methods::default();
        for part in s.split(',') {
            match part.split_once('=') {
                None => {
                    let v: Method = part.parse()?;
                    (m.attn, m.mlp) = (v, v);
                }
                Some(("attn", v)) => m.attn = v.parse()?,
                Some(("mlp", v)) => m.mlp = v.parse()?,
                Some(("lm_head", v)) => {
                    m.lm_head = v.parse()?;
                    if m.lm_head == Method::Awq {
                        return Err(
                            "lm_head=awq: the lm_head takes rtn or gptq (no op before it to fold AWQ scales into)".into()
                        );
                    }
                }
                Some((k, _)) => {
                    return Err(format!(
                        "unknown class `{k}` in --method (expected attn, mlp or lm_head)"
                    ))
                }
            }
        }
        Ok(m)
    }
}

/// The AWQ scales of one layer (`None`: the class is not AWQ).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LayerScales {
    /// q/k/v input; folded into input_layernorm.
    pub attn: Option<AwqSearch>,
    /// gate/up input; folded into post_attention_layernorm.
    pub mlp: Option<AwqSearch>,
    /// down input; folded into up_proj's rows.
    pub down: Option<AwqSearch>,
}

/// Search the AWQ scales of every layer whose class uses AWQ; `progress(done, total)` after
/// each layer.
pub fn search_awq(
    weights: &ReferenceWeights,
    calib: &Calibration,
    methods: &Methods,
    schemes: &ClassSchemes,
    opts: &AwqOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Vec<LayerScales> {
    let scheme_of = |_layer: usize, tap: Tap| match tap {
        Tap::Attn | Tap::OProj => schemes.attn,
        Tap::Mlp | Tap::Down => schemes.mlp,
        Tap::Head => schemes.lm_head,
    };
    search_awq_per_layer(weights, calib, methods, &scheme_of, opts, progress)
}

/// [`search_awq`] with the scheme of each layer's matrices given per (layer, tap), as
/// `--budget-mb` chooses them (q/k/v share one; gate/up share one).
pub fn search_awq_per_layer(
    weights: &ReferenceWeights,
    calib: &Calibration,
    methods: &Methods,
    scheme_of: &dyn Fn(usize, Tap) -> Scheme,
    opts: &AwqOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Vec<LayerScales> {
    let c = &weights.config;
    let (h, q, kv, f) = (c.hidden_size, c.q_dim(), c.kv_dim(), c.intermediate_size);
    let total = weights.layers.len();
    let mut out = Vec::with_capacity(total);
    for (l, (w, a)) in weights.layers.iter().zip(&calib.layers).enumerate() {
        let mut s = LayerScales::default();
        if methods.attn == Method::Awq {
            let mats = [(&w.q_proj[..], q), (&w.k_proj[..], kv), (&w.v_proj[..], kv)];
            s.attn = Some(awq::search(
                &mats,
                h,
                &a.attn,
                scheme_of(l, Tap::Attn),
                opts,
            ));
        }
        if methods.mlp == Method::Awq {
            let mats = [(&w.gate_proj[..], f), (&w.up_proj[..], f)];
            s.mlp = Some(awq::search(&mats, h, &a.mlp, scheme_of(l, Tap::Mlp), opts));
            s.down = Some(awq::search(
                &[(&w.down_proj[..], h)],
                f,
                &a.down,
                scheme_of(l, Tap::Down),
                opts,
            ));
        }
        out.push(s);
        progress(l + 1, total);
    }
    out
}

/// The quantizer of `qwenc compress --method ...`: AWQ folding for AWQ classes, GPTQ for
/// GPTQ classes, RTN for the rest.
pub struct CalibratedQuantizer {
    pub methods: Methods,
    /// Per layer; empty when no class uses AWQ.
    pub scales: Vec<LayerScales>,
    /// Needed when a class uses GPTQ.
    pub calibration: Option<Calibration>,
    pub gptq: GptqOptions,
    name: String,
}

impl CalibratedQuantizer {
    /// `calib_tokens`: how many tokens the scales and `calibration` came from (recorded in
    /// the manifest's quantizer name).
    pub fn new(
        methods: Methods,
        scales: Vec<LayerScales>,
        calibration: Option<Calibration>,
        calib_tokens: usize,
        gptq: GptqOptions,
    ) -> Self {
        let name = if methods.needs_calibration() {
            format!(
                "{methods} (calibration: {calib_tokens} tokens{})",
                if methods.uses_gptq() {
                    format!(", gptq damp {} act_order {}", gptq.damp, gptq.act_order)
                } else {
                    String::new()
                }
            )
        } else {
            "rtn".to_string()
        };
        CalibratedQuantizer {
            methods,
            scales,
            calibration,
            gptq,
            name,
        }
    }
}

fn scale_slice(w: &mut [f32], s: &[f32], divide: bool) {
    for (v, s) in w.iter_mut().zip(s) {
        if divide {
            *v /= s;
        } else {
            *v *= s;
        }
    }
}

impl Quantizer for CalibratedQuantizer {
    fn name(&self) -> &str {
        &self.name
    }

    fn transform(&self, name: &str, w: &mut [f32]) {
        let Some(rest) = name.strip_prefix("model.layers.") else {
            return;
        };
        let Some((layer, rest)) = rest.split_once('.') else {
            return;
        };
        let Some(s) = layer.parse::<usize>().ok().and_then(|l| self.scales.get(l)) else {
            return;
        };
        let get = |x: &Option<AwqSearch>| x.as_ref().map(|x| x.scales.clone());
        match rest {
            "input_layernorm.weight" => {
                if let Some(a) = get(&s.attn) {
                    scale_slice(w, &a, true);
                }
            }
            "post_attention_layernorm.weight" => {
                if let Some(m) = get(&s.mlp) {
                    scale_slice(w, &m, true);
                }
            }
            "self_attn.q_proj.weight" | "self_attn.k_proj.weight" | "self_attn.v_proj.weight" => {
                if let Some(a) = get(&s.attn) {
                    awq::scale_columns(w, &a);
                }
            }
            "mlp.gate_proj.weight" => {
                if let Some(m) = get(&s.mlp) {
                    awq::scale_columns(w, &m);
                }
            }
            "mlp.up_proj.weight" => {
                if let Some(m) = get(&s.mlp) {
                    awq::scale_columns(w, &m);
                }
                if let Some(d) = get(&s.down) {
                    awq::unscale_rows(w, &d);
                }
            }
            "mlp.down_proj.weight" => {
                if let Some(d) = get(&s.down) {
                    awq::scale_columns(w, &d);
                }
            }
            _ => {}
        }
    }

    fn quantize(
        &self,
        name: &str,
        w: &[f32],
        rows: usize,
        cols: usize,
        scheme: Scheme,
    ) -> QuantizedMatrix {
        let integer = !matches!(scheme, Scheme::F32 | Scheme::Bf16);
        let tap = match name {
            LM_HEAD => Some(Tap::Head),
            _ => tap_of(name).map(|(_, tap)| tap),
        };
        if let (Some(tap), Some(calib), true) = (tap, &self.calibration, integer) {
            if self.methods.of(tap) == Method::Gptq {
                if let Some(x) = calib.inputs_of(name) {
                    let h = hessian(x, cols);
                    match quantize_gptq(w, rows, cols, &h, scheme, &self.gptq) {
                        Ok(m) => return m,
                        // Never silent: say so, and store the RTN result instead.
                        Err(e) => {
                            eprintln!("warning: {name}: GPTQ failed ({e}); round-to-nearest used")
                        }
                    }
                }
            }
        }
        quantize_rtn(w, rows, cols, scheme)
    }
}
