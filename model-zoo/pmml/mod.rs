//! `pmml`: a PMML 4.x file scored in process, PAI-EAS's `pmml` processor.
//!
//! ```yaml
//! Models:
//!   lr:
//!     Kind: pmml
//!     ApiPath: /api/lr
//!     Model: models/lr.pmml
//! ```
//!
//! Supported, which is what scikit-learn's converters (sklearn2pmml, nyoka)
//! write for linear models and tree ensembles:
//! - `RegressionModel` (regression and classification; `NumericPredictor`
//!   with exponents, `CategoricalPredictor`; normalisation `none`, `softmax`,
//!   `simplemax`, `logit`, `exp`, `cloglog`, `loglog`, `cauchit`);
//! - `TreeModel` (`Node` with `True`, `False`, `SimplePredicate`,
//!   `SimpleSetPredicate`, `CompoundPredicate` and `ScoreDistribution`;
//!   missing-value strategies `none`, `nullPrediction`, `lastPrediction`,
//!   `defaultChild`; both no-true-child strategies);
//! - `MiningModel` segmentations: `sum`, `average`, `weightedAverage`,
//!   `median`, `max`, `majorityVote`, `weightedMajorityVote`, `modelChain`,
//!   `selectFirst`, nested to any depth;
//! - the `DataDictionary`'s types (`double`, `float` — rounded to single
//!   precision as the model was trained —, `integer`, `string`, `boolean`),
//!   `MiningField` `missingValueReplacement` and `invalidValueTreatment`,
//!   `Targets` (rescale, min, max) and `OutputField`s of the
//!   `predictedValue` and `probability` features (what a model chain passes
//!   on).
//!
//! Anything else that bears on the score (derived fields and
//! transformations, other model types, `probit`, `aggregateNodes` …) stops
//! the dispatcher at start with a line naming the element and its line.
//!
//! Input: `{"instances": [{field: value, …}, …]}` (as a PAI-EAS service, a
//! JSON list payload is the instances). A field missing from a row, or null,
//! is a missing value. Output: `{"predictions": [...]}`, one per row: a
//! classifier's `{"p_0": P(0), "p_1": P(1)}` (one key per class, as
//! PAI-EAS's example sink holds), a regression's `{target: value}`; null
//! probabilities or value when the model predicts nothing for the row.

pub mod document;
pub mod read;
pub mod score;

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::config::models::PmmlSettings;

use super::{InitContext, Model, ModelError, Params};
use document::{Document, Function, Method, ModelKind};
use score::{Prediction, Row};

/// The most rows in one request.
pub const MAX_INSTANCES: usize = 10_000;

/// The largest PMML file read.
pub const MAX_FILE_BYTES: u64 = 256 << 20;

pub struct PmmlModel {
    name: String,
    api_path: String,
    file: String,
    /// Read by `init` (dispatchers only).
    model: Option<Loaded>,
}

struct Loaded {
    doc: Document,
    /// The target field's name.
    target: String,
    /// A classifier's classes, in the data dictionary's order.
    classes: Vec<String>,
}

impl PmmlModel {
    pub fn new(name: &str, s: PmmlSettings) -> Result<Self, ModelError> {
        if !s.api_path.starts_with('/') {
            return Err(ModelError::new(format!(
                "Models.{name}.ApiPath: must start with '/'"
            )));
        }
        Ok(PmmlModel {
            name: name.to_string(),
            api_path: s.api_path,
            file: s.model,
            model: None,
        })
    }

    /// Reads a document from text (what `init` does with the file).
    pub fn from_document(api_path: &str, xml: &str) -> Result<Self, ModelError> {
        let mut m = PmmlModel {
            name: api_path.to_string(),
            api_path: api_path.to_string(),
            file: String::new(),
            model: None,
        };
        m.model = Some(load(xml).map_err(ModelError::new)?);
        Ok(m)
    }

    /// One row's answer.
    fn score_row(
        &self,
        loaded: &Loaded,
        instance: &Map<String, Value>,
    ) -> Result<Value, ModelError> {
        let mut row = Row {
            fields: &loaded.doc.fields,
            values: HashMap::with_capacity(instance.len()),
        };
        for (k, v) in instance {
            if loaded.doc.fields.contains_key(k) {
                let typed = row.typed(k, v).map_err(|e| ModelError::new(e.0))?;
                row.values.insert(k.clone(), typed);
            }
        }
        let p = score::score(&loaded.doc.model, &mut row).map_err(|e| ModelError::new(e.0))?;
        let mut out = Map::new();
        match loaded.doc.model.common().function {
            Function::Classification => {
                let probs = match &p {
                    Prediction::Class { probabilities, .. } => probabilities.as_slice(),
                    _ => &[],
                };
                for c in &loaded.classes {
                    let v = probs.iter().find(|(k, _)| k == c).map(|(_, p)| *p);
                    out.insert(
                        format!("p_{c}"),
                        number(v.or(if probs.is_empty() { None } else { Some(0.0) })),
                    );
                }
                for (c, p) in probs {
                    if !loaded.classes.contains(c) {
                        out.insert(format!("p_{c}"), number(Some(*p)));
                    }
                }
            }
            Function::Regression => {
                let v = match p {
                    Prediction::Value(v) => Some(v),
                    _ => None,
                };
                out.insert(loaded.target.clone(), number(v));
            }
        }
        Ok(Value::Object(out))
    }
}

fn number(v: Option<f64>) -> Value {
    v.and_then(serde_json::Number::from_f64)
        .map_or(Value::Null, Value::Number)
}

/// Reads and checks a document.
fn load(xml: &str) -> Result<Loaded, String> {
    let doc = read::read(xml).map_err(|e| e.0)?;
    check_combinations(&doc.model)?;
    let target = doc
        .model
        .common()
        .schema
        .iter()
        .find(|f| f.target)
        .map(|f| f.name.clone())
        .unwrap_or_else(|| "predicted".to_string());
    let classes = doc
        .fields
        .get(&target)
        .map(|f| f.values.clone())
        .unwrap_or_default();
    Ok(Loaded {
        doc,
        target,
        classes,
    })
}

/// Refuses segmentations that cannot combine their segments' kind of
/// prediction (a sum of classes, say), at start rather than per row.
fn check_combinations(model: &ModelKind) -> Result<(), String> {
    if let ModelKind::Mining(m) = model {
        let ok = match (m.common.function, m.method) {
            (_, Method::ModelChain | Method::SelectFirst | Method::Max) => true,
            (Function::Regression, Method::MajorityVote | Method::WeightedMajorityVote) => false,
            (Function::Regression, _) => true,
            (Function::Classification, Method::Sum | Method::Median) => false,
            (Function::Classification, _) => true,
        };
        if !ok {
            return Err(format!(
                "PMML MiningModel: multipleModelMethod {:?} cannot combine {:?} segments",
                m.method, m.common.function
            ));
        }
        for s in &m.segments {
            check_combinations(&s.model)?;
        }
    }
    Ok(())
}

impl Model for PmmlModel {
    fn api_path(&self) -> &str {
        &self.api_path
    }

    fn check(&self, params: Params) -> Result<Params, ModelError> {
        let Some(Value::Array(instances)) = params.get("instances") else {
            return Err(ModelError::new(
                "instances: a list of objects (field: value) is required",
            ));
        };
        if instances.len() > MAX_INSTANCES {
            return Err(ModelError::new(format!(
                "instances: at most {MAX_INSTANCES} per request"
            )));
        }
        if let Some(i) = instances.iter().position(|x| !x.is_object()) {
            return Err(ModelError::new(format!(
                "instances[{i}]: must be an object"
            )));
        }
        Ok(params)
    }

    fn init(&mut self, ctx: &InitContext<'_>) -> Result<(), ModelError> {
        let path = ctx.resolve(&self.file);
        let key = format!("Models.{}.Model", self.name);
        let size = std::fs::metadata(&path)
            .map_err(|e| ModelError::new(format!("{key}: {}: {e}", path.display())))?
            .len();
        if size > MAX_FILE_BYTES {
            return Err(ModelError::new(format!(
                "{key}: {} is larger than {MAX_FILE_BYTES} bytes",
                path.display()
            )));
        }
        let xml = std::fs::read_to_string(&path)
            .map_err(|e| ModelError::new(format!("{key}: {}: {e}", path.display())))?;
        let loaded = load(&xml).map_err(|e| ModelError::new(format!("{}: {e}", path.display())))?;
        tracing::info!(model = %self.name, file = %path.display(), classes = ?loaded.classes, "PMML model read");
        self.model = Some(loaded);
        Ok(())
    }

    fn infer(&self, _request_id: &str, params: Params) -> Result<Params, ModelError> {
        let loaded = self
            .model
            .as_ref()
            .ok_or_else(|| ModelError::new("the PMML model was not read"))?;
        let Some(Value::Array(instances)) = params.get("instances") else {
            return Err(ModelError::new("instances: a list is required"));
        };
        let mut predictions = Vec::with_capacity(instances.len());
        for (i, x) in instances.iter().enumerate() {
            let Value::Object(row) = x else {
                return Err(ModelError::new(format!(
                    "instances[{i}]: must be an object"
                )));
            };
            predictions.push(
                self.score_row(loaded, row)
                    .map_err(|e| ModelError::new(format!("instances[{i}]: {}", e.message)))?,
            );
        }
        let mut out = Params::new();
        out.insert("predictions".into(), Value::Array(predictions));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const LR: &str = r#"<PMML xmlns="http://www.dmg.org/PMML-4_4" version="4.4">
  <DataDictionary>
    <DataField name="y" optype="categorical" dataType="integer"><Value value="0"/><Value value="1"/></DataField>
    <DataField name="x1" optype="continuous" dataType="double"/>
    <DataField name="x2" optype="continuous" dataType="double"/>
  </DataDictionary>
  <RegressionModel functionName="classification" normalizationMethod="logit">
    <MiningSchema>
      <MiningField name="y" usageType="target"/>
      <MiningField name="x1" missingValueReplacement="0.5"/>
      <MiningField name="x2"/>
    </MiningSchema>
    <RegressionTable intercept="0.25" targetCategory="1">
      <NumericPredictor name="x1" coefficient="2.0"/>
      <NumericPredictor name="x2" coefficient="-1.0"/>
    </RegressionTable>
    <RegressionTable intercept="0.0" targetCategory="0"/>
  </RegressionModel>
</PMML>"#;

    fn predict(m: &PmmlModel, rows: Value) -> Value {
        let mut p = Params::new();
        p.insert("instances".into(), rows);
        let p = m.check(p).expect("checked");
        Value::Object(m.infer("r", p).expect("scored"))["predictions"].clone()
    }

    #[test]
    fn a_logistic_regression_answers_one_probability_per_class() {
        let m = PmmlModel::from_document("/lr", LR).expect("read");
        let out = predict(
            &m,
            json!([{"x1": 1.0, "x2": 0.5}, {"x2": 0.0}, {"x1": 1.0}]),
        );
        let p1 = 1.0 / (1.0 + (-(0.25f64 + 2.0 - 0.5)).exp());
        assert_eq!(out[0]["p_1"].as_f64(), Some(p1));
        assert_eq!(out[0]["p_0"].as_f64(), Some(1.0 - p1));
        // x1 missing: replaced by 0.5.
        let p1 = 1.0 / (1.0 + (-(0.25f64 + 1.0)).exp());
        assert_eq!(out[1]["p_1"].as_f64(), Some(p1));
        // x2 missing, no replacement: no prediction.
        assert_eq!(out[2], json!({"p_0": null, "p_1": null}));
    }

    #[test]
    fn float_fields_compare_in_single_precision_and_trees_follow_their_strategies() {
        let xml = r#"<PMML version="4.4"><DataDictionary>
          <DataField name="x" optype="continuous" dataType="float"/>
          <DataField name="y" optype="continuous" dataType="double"/></DataDictionary>
          <TreeModel functionName="regression" missingValueStrategy="nullPrediction" noTrueChildStrategy="returnLastPrediction">
            <MiningSchema><MiningField name="y" usageType="target"/><MiningField name="x"/></MiningSchema>
            <Node score="1"><True/>
              <Node score="2"><SimplePredicate field="x" operator="lessOrEqual" value="0.1"/></Node>
            </Node></TreeModel></PMML>"#;
        let m = PmmlModel::from_document("/t", xml).expect("read");
        // 0.1000000001 rounds to the same float as 0.1: the left child.
        let out = predict(&m, json!([{"x": 0.1000000001}, {"x": 5}, {}]));
        assert_eq!(out, json!([{"y": 2.0}, {"y": 1.0}, {"y": null}]));
    }

    #[test]
    fn a_sum_of_classes_is_refused_at_start() {
        let xml = r#"<PMML version="4.4"><DataDictionary/><MiningModel functionName="classification">
          <MiningSchema/><Segmentation multipleModelMethod="sum"><Segment><True/>
          <TreeModel functionName="classification"><MiningSchema/><Node score="a"><True/></Node></TreeModel>
          </Segment></Segmentation></MiningModel></PMML>"#;
        let e = PmmlModel::from_document("/m", xml).err().expect("refused");
        assert!(e.message.contains("Sum"), "{}", e.message);
    }

    #[test]
    fn rows_are_checked() {
        let m = PmmlModel::from_document("/lr", LR).expect("read");
        let mut p = Params::new();
        p.insert("instances".into(), json!([1]));
        assert!(m.check(p).is_err());
        let mut p = Params::new();
        p.insert("instances".into(), json!([{"x1": "abc", "x2": 1}]));
        let e = m.infer("r", p).expect_err("refused");
        assert!(e.message.contains("x1"), "{}", e.message);
    }

    #[test]
    fn array_values_split_on_spaces_and_keep_quoted_ones() {
        assert_eq!(
            read::array_values(r#" a "b c" d\"e "f\"g" "#),
            vec!["a", "b c", r#"d\"e"#, "f\"g"]
        );
    }

    #[test]
    fn unsupported_elements_are_named_with_their_line() {
        let xml = "<PMML version=\"4.4\">\n<DataDictionary/>\n<NeuralNetwork functionName=\"regression\"/>\n</PMML>";
        let e = read::read(xml).expect_err("refused");
        assert!(e.0.contains("NeuralNetwork (line 3)"), "{}", e.0);
        let xml = "<PMML version=\"3.2\"><RegressionModel functionName=\"regression\"/></PMML>";
        assert!(read::read(xml).expect_err("refused").0.contains("4.x"));
        let xml = "<PMML version=\"4.4\"><TreeModel functionName=\"regression\" missingValueStrategy=\"aggregateNodes\"><Node><True/></Node></TreeModel></PMML>";
        assert!(read::read(xml)
            .expect_err("refused")
            .0
            .contains("aggregateNodes"));
    }
}
