//! `onnx`: any ONNX model, declared in settings.yaml, no Rust code.
//!
//! ```yaml
//! Models:
//!   scorer:
//!     Kind: onnx
//!     ApiPath: /api/scorer
//!     Model: models/scorer.onnx          # relative to the settings file
//!     IntraThreads: 1                     # 0: one per core
//!     Inputs:
//!       - {Name: x, Dtype: float32, Shape: [-1, 4]}   # -1: any size
//!     Outputs: [y]                        # empty: every output
//! ```
//!
//! The request's `data` carries each input by name, either as nested JSON
//! arrays (`"x": [[1, 2, 3, 4]]`) or as little-endian bytes in base64 with a
//! shape (`"x": {"base64": "...", "shape": [1, 4]}`). The gateway checks names,
//! dtypes and shapes against the declaration before anything is queued (a
//! mismatch is an ApiEntry error naming the input). The answer carries each
//! output by name as nested arrays.

use std::borrow::Cow;

use crate::config::models::{Dtype, InputSpec, OnnxSettings};
use base64::Engine;
use ort::session::{Session, SessionInputValue};
use ort::value::{DynValue, Tensor, TensorElementType, ValueType};
use parking_lot::Mutex;
use serde_json::{Number, Value};

use super::model::{InitContext, Model, ModelError, Params};
use super::onnx_runtime;

impl Dtype {
    fn width(self) -> usize {
        match self {
            Dtype::Float32 | Dtype::Int32 => 4,
            Dtype::Float64 | Dtype::Int64 => 8,
        }
    }

    fn element_type(self) -> TensorElementType {
        match self {
            Dtype::Float32 => TensorElementType::Float32,
            Dtype::Float64 => TensorElementType::Float64,
            Dtype::Int32 => TensorElementType::Int32,
            Dtype::Int64 => TensorElementType::Int64,
        }
    }
}

/// An input's values, flattened, with its shape.
enum Values {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I32(Vec<i32>),
    I64(Vec<i64>),
}

struct Parsed {
    shape: Vec<usize>,
    values: Values,
}

pub struct OnnxModel {
    settings: OnnxSettings,
    session: Option<Mutex<Session>>,
    output_names: Vec<String>,
}

fn input_error(input: &str, message: impl std::fmt::Display) -> ModelError {
    ModelError::new(format!("input `{input}`: {message}"))
}

impl OnnxModel {
    pub fn new(name: &str, settings: OnnxSettings) -> Result<Self, ModelError> {
        if settings.inputs.is_empty() {
            return Err(ModelError::new(format!(
                "Models.{name}.Inputs: declare at least one input"
            )));
        }
        for i in &settings.inputs {
            if i.shape.iter().any(|&d| d == 0 || d < -1) {
                return Err(ModelError::new(format!(
                    "Models.{name}.Inputs.{}.Shape: dimensions are positive or -1",
                    i.name
                )));
            }
        }
        if settings.model.is_empty() {
            return Err(ModelError::new(format!(
                "Models.{name}.Model: a path is required"
            )));
        }
        Ok(OnnxModel {
            output_names: settings.outputs.clone(),
            settings,
            session: None,
        })
    }

    fn parse_input(spec: &InputSpec, v: &Value) -> Result<Parsed, ModelError> {
        let parsed = match v {
            Value::Object(o) => Self::parse_base64(spec, o)?,
            Value::Array(_) | Value::Number(_) => Self::parse_nested(spec, v)?,
            other => {
                return Err(input_error(
                    &spec.name,
                    format!(
                        "expected nested arrays or {{\"base64\", \"shape\"}}, got {}",
                        short(other)
                    ),
                ))
            }
        };
        if parsed.shape.len() != spec.shape.len() {
            return Err(input_error(
                &spec.name,
                format!(
                    "has {} dimensions {:?}, the model takes {} {:?}",
                    parsed.shape.len(),
                    parsed.shape,
                    spec.shape.len(),
                    spec.shape
                ),
            ));
        }
        for (k, (&got, &want)) in parsed.shape.iter().zip(&spec.shape).enumerate() {
            if want != -1 && got as i64 != want {
                return Err(input_error(
                    &spec.name,
                    format!(
                        "dimension {k} is {got}, the model takes {want} (shape {:?})",
                        spec.shape
                    ),
                ));
            }
        }
        Ok(parsed)
    }

    fn parse_nested(spec: &InputSpec, v: &Value) -> Result<Parsed, ModelError> {
        let mut shape = Vec::new();
        let mut probe = v;
        while let Value::Array(a) = probe {
            shape.push(a.len());
            match a.first() {
                Some(x) => probe = x,
                None => break,
            }
        }
        let mut flat: Vec<&Number> = Vec::new();
        collect(v, &shape, 0, &mut flat).map_err(|m| input_error(&spec.name, m))?;
        let values = match spec.dtype {
            Dtype::Float32 => Values::F32(
                floats(&flat, &spec.name)?
                    .into_iter()
                    .map(|x| x as f32)
                    .collect(),
            ),
            Dtype::Float64 => Values::F64(floats(&flat, &spec.name)?),
            Dtype::Int32 => Values::I32(
                ints(&flat, &spec.name)?
                    .into_iter()
                    .map(|x| {
                        i32::try_from(x).map_err(|_| {
                            input_error(&spec.name, format!("{x} is out of int32 range"))
                        })
                    })
                    .collect::<Result<_, _>>()?,
            ),
            Dtype::Int64 => Values::I64(ints(&flat, &spec.name)?),
        };
        Ok(Parsed { shape, values })
    }

    fn parse_base64(
        spec: &InputSpec,
        o: &serde_json::Map<String, Value>,
    ) -> Result<Parsed, ModelError> {
        let data = o
            .get("base64")
            .and_then(Value::as_str)
            .ok_or_else(|| input_error(&spec.name, "an object input needs `base64` (a string)"))?;
        let shape: Vec<usize> = o
            .get("shape")
            .and_then(Value::as_array)
            .ok_or_else(|| input_error(&spec.name, "an object input needs `shape` (a list)"))?
            .iter()
            .map(|d| d.as_u64().map(|d| d as usize))
            .collect::<Option<_>>()
            .ok_or_else(|| input_error(&spec.name, "`shape` holds non-negative integers"))?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data)
            .map_err(|e| input_error(&spec.name, format!("bad base64: {e}")))?;
        let count: usize = shape.iter().product();
        if bytes.len() != count * spec.dtype.width() {
            return Err(input_error(
                &spec.name,
                format!(
                    "{} bytes, but shape {shape:?} of {:?} needs {}",
                    bytes.len(),
                    spec.dtype,
                    count * spec.dtype.width()
                ),
            ));
        }
        let values = match spec.dtype {
            Dtype::Float32 => Values::F32(
                bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
            ),
            Dtype::Int32 => Values::I32(
                bytes
                    .chunks_exact(4)
                    .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
            ),
            Dtype::Float64 => Values::F64(
                bytes
                    .chunks_exact(8)
                    .map(|b| f64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
                    .collect(),
            ),
            Dtype::Int64 => Values::I64(
                bytes
                    .chunks_exact(8)
                    .map(|b| i64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
                    .collect(),
            ),
        };
        Ok(Parsed { shape, values })
    }

    fn parse_all(&self, params: &Params) -> Result<Vec<(String, Parsed)>, ModelError> {
        for key in params.keys() {
            if !self.settings.inputs.iter().any(|i| &i.name == key) {
                let names: Vec<&str> = self
                    .settings
                    .inputs
                    .iter()
                    .map(|i| i.name.as_str())
                    .collect();
                return Err(input_error(
                    key,
                    format!("unknown; the model takes {names:?}"),
                ));
            }
        }
        self.settings
            .inputs
            .iter()
            .map(|spec| {
                let v = params
                    .get(&spec.name)
                    .ok_or_else(|| input_error(&spec.name, "missing"))?;
                Ok((spec.name.clone(), Self::parse_input(spec, v)?))
            })
            .collect()
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 40 {
        format!(
            "{}...",
            &s[..s.char_indices().nth(40).map(|(i, _)| i).unwrap_or(s.len())]
        )
    } else {
        s
    }
}

/// A nested array that is not of the declared shape.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct ShapeError(String);

/// Walks a nested array that must be rectangular with `shape`.
fn collect<'a>(
    v: &'a Value,
    shape: &[usize],
    depth: usize,
    out: &mut Vec<&'a Number>,
) -> Result<(), ShapeError> {
    if depth == shape.len() {
        return match v {
            Value::Number(n) => {
                out.push(n);
                Ok(())
            }
            other => Err(ShapeError(format!(
                "expected a number, got {}",
                short(other)
            ))),
        };
    }
    match v {
        Value::Array(a) if a.len() == shape[depth] => {
            for x in a {
                collect(x, shape, depth + 1, out)?;
            }
            Ok(())
        }
        Value::Array(a) => Err(ShapeError(format!(
            "not rectangular: a list of {} where {} was expected at depth {depth}",
            a.len(),
            shape[depth]
        ))),
        other => Err(ShapeError(format!(
            "expected a list at depth {depth}, got {}",
            short(other)
        ))),
    }
}

fn floats(flat: &[&Number], name: &str) -> Result<Vec<f64>, ModelError> {
    flat.iter()
        .map(|n| {
            n.as_f64()
                .ok_or_else(|| input_error(name, format!("{n} is not a number")))
        })
        .collect()
}

fn ints(flat: &[&Number], name: &str) -> Result<Vec<i64>, ModelError> {
    flat.iter()
        .map(|n| {
            n.as_i64().ok_or_else(|| {
                input_error(name, format!("{n} is not an integer (dtype is integer)"))
            })
        })
        .collect()
}

/// Flat values with a shape → nested JSON arrays.
fn nest<T: Copy>(shape: &[usize], data: &[T], to_json: &dyn Fn(T) -> Value) -> Value {
    match shape.split_first() {
        None => data.first().map(|&x| to_json(x)).unwrap_or(Value::Null),
        Some((&n, rest)) => {
            let step: usize = rest.iter().product();
            Value::Array(
                (0..n)
                    .map(|i| nest(rest, &data[i * step..(i + 1) * step], to_json))
                    .collect(),
            )
        }
    }
}

fn output_json(name: &str, v: &DynValue) -> Result<Value, ModelError> {
    let fail = |e: ort::Error| ModelError::new(format!("output {name}: {e}"));
    let ty = match v.dtype() {
        ValueType::Tensor { ty, .. } => *ty,
        other => {
            return Err(ModelError::new(format!(
                "output {name} is {other:?}, not a tensor"
            )))
        }
    };
    let f = |x: f64| {
        Number::from_f64(x)
            .map(Value::Number)
            .unwrap_or(Value::Null)
    };
    Ok(match ty {
        TensorElementType::Float32 => {
            let (s, d) = v.try_extract_tensor::<f32>().map_err(fail)?;
            let shape: Vec<usize> = s.iter().map(|&x| x as usize).collect();
            nest(&shape, d, &|x| f(x as f64))
        }
        TensorElementType::Float64 => {
            let (s, d) = v.try_extract_tensor::<f64>().map_err(fail)?;
            let shape: Vec<usize> = s.iter().map(|&x| x as usize).collect();
            nest(&shape, d, &f)
        }
        TensorElementType::Int64 => {
            let (s, d) = v.try_extract_tensor::<i64>().map_err(fail)?;
            let shape: Vec<usize> = s.iter().map(|&x| x as usize).collect();
            nest(&shape, d, &|x| Value::from(x))
        }
        TensorElementType::Int32 => {
            let (s, d) = v.try_extract_tensor::<i32>().map_err(fail)?;
            let shape: Vec<usize> = s.iter().map(|&x| x as usize).collect();
            nest(&shape, d, &|x| Value::from(x))
        }
        other => {
            return Err(ModelError::new(format!(
                "output {name} has element type {other:?}, which is not supported"
            )))
        }
    })
}

impl Model for OnnxModel {
    fn api_path(&self) -> &str {
        &self.settings.api_path
    }

    fn check(&self, params: Params) -> Result<Params, ModelError> {
        self.parse_all(&params)?;
        Ok(params)
    }

    fn init(&mut self, ctx: &InitContext<'_>) -> Result<(), ModelError> {
        let path = ctx.resolve(&self.settings.model);
        let session = onnx_runtime::session(ctx, &path, self.settings.intra_threads)?;
        for spec in &self.settings.inputs {
            let found = session.inputs().iter().find(|i| i.name() == spec.name);
            match found.map(|i| i.dtype()) {
                None => {
                    let names: Vec<&str> = session.inputs().iter().map(|i| i.name()).collect();
                    return Err(ModelError::new(format!(
                        "{}: the model has no input {} (inputs: {names:?})",
                        path.display(),
                        spec.name
                    )));
                }
                Some(ValueType::Tensor { ty, .. }) if *ty != spec.dtype.element_type() => {
                    return Err(ModelError::new(format!(
                        "{}: input {} is {ty:?} in the model, {:?} in the settings",
                        path.display(),
                        spec.name,
                        spec.dtype
                    )));
                }
                Some(_) => {}
            }
        }
        let all: Vec<String> = session
            .outputs()
            .iter()
            .map(|o| o.name().to_string())
            .collect();
        for o in &self.output_names {
            if !all.contains(o) {
                return Err(ModelError::new(format!(
                    "{}: the model has no output {o} (outputs: {all:?})",
                    path.display()
                )));
            }
        }
        if self.output_names.is_empty() {
            self.output_names = all;
        }
        tracing::info!(model = %path.display(), outputs = ?self.output_names, "ONNX model loaded");
        self.session = Some(Mutex::new(session));
        Ok(())
    }

    fn infer(&self, _request_id: &str, params: Params) -> Result<Params, ModelError> {
        let session = self
            .session
            .as_ref()
            .ok_or_else(|| ModelError::new("the ONNX model is not initialised"))?;
        let parsed = self.parse_all(&params)?;
        let fail = |e: ort::Error| ModelError::new(format!("inference: {e}"));
        let mut inputs: Vec<(Cow<'_, str>, SessionInputValue<'_>)> = Vec::new();
        for (name, p) in parsed {
            let shape: Vec<i64> = p.shape.iter().map(|&d| d as i64).collect();
            let value: SessionInputValue<'_> = match p.values {
                Values::F32(v) => Tensor::from_array((shape, v)).map_err(fail)?.into(),
                Values::F64(v) => Tensor::from_array((shape, v)).map_err(fail)?.into(),
                Values::I32(v) => Tensor::from_array((shape, v)).map_err(fail)?.into(),
                Values::I64(v) => Tensor::from_array((shape, v)).map_err(fail)?.into(),
            };
            inputs.push((name.into(), value));
        }
        let mut session = session.lock();
        let outputs = session.run(inputs).map_err(fail)?;
        let mut out = Params::new();
        for name in &self.output_names {
            let v = outputs
                .get(name.as_str())
                .ok_or_else(|| ModelError::new(format!("the model gave no output {name}")))?;
            out.insert(name.clone(), output_json(name, v)?);
        }
        Ok(out)
    }
}
