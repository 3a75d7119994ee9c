//! `lr`: a logistic-regression classifier declared in YAML, the model of the
//! PAI-EAS asynchronous example service.
//!
//! ```yaml
//! Models:
//!   lr:
//!     Kind: lr
//!     ApiPath: /api/lr
//!     Coefficients: {age: 0.04, income: -0.00002, clicks: 0.3}
//!     Intercept: -1.2
//! ```
//!
//! Input: `{"instances": [{feature: number, ...}, ...]}`; a feature missing
//! from an instance (or null) counts as 0, features the model does not know
//! are ignored. Output: `{"predictions": [{"p_0": P(class 0), "p_1":
//! P(class 1)}, ...]}`, one per instance, with p_1 = sigmoid(intercept +
//! Σ coefficient·feature). As an asynchronous service's model, a JSON list
//! payload is the instances and the sink item is the predictions list, as
//! EAS's example answers: `[{"p_0": 0.52, "p_1": 0.48}]`.

use std::collections::BTreeMap;

use crate::config::models::LogisticSettings;
use serde_json::{json, Value};

use super::{Model, ModelError, Params};

/// The most instances in one request.
pub const MAX_INSTANCES: usize = 10_000;

#[derive(Debug, Clone)]
pub struct Logistic {
    api_path: String,
    coefficients: BTreeMap<String, f64>,
    intercept: f64,
}

impl Logistic {
    pub fn new(name: &str, s: LogisticSettings) -> Result<Self, ModelError> {
        if !s.api_path.starts_with('/') {
            return Err(ModelError::new(format!(
                "Models.{name}.ApiPath: must start with '/'"
            )));
        }
        if let Some((k, _)) = s.coefficients.iter().find(|(_, v)| !v.is_finite()) {
            return Err(ModelError::new(format!(
                "Models.{name}.Coefficients.{k}: must be a finite number"
            )));
        }
        if !s.intercept.is_finite() {
            return Err(ModelError::new(format!(
                "Models.{name}.Intercept: must be a finite number"
            )));
        }
        Ok(Logistic {
            api_path: s.api_path,
            coefficients: s.coefficients,
            intercept: s.intercept,
        })
    }

    /// P(class 1) for one instance.
    fn p1(&self, instance: &serde_json::Map<String, Value>) -> f64 {
        let z = self.intercept
            + self
                .coefficients
                .iter()
                .map(|(k, w)| w * instance.get(k).and_then(Value::as_f64).unwrap_or(0.0))
                .sum::<f64>();
        1.0 / (1.0 + (-z).exp())
    }
}

impl Model for Logistic {
    fn api_path(&self) -> &str {
        &self.api_path
    }

    fn check(&self, params: Params) -> Result<Params, ModelError> {
        let Some(Value::Array(instances)) = params.get("instances") else {
            return Err(ModelError::new(
                "instances: a list of feature maps ({\"name\": number}) is required",
            ));
        };
        if instances.is_empty() || instances.len() > MAX_INSTANCES {
            return Err(ModelError::new(format!(
                "instances: from 1 to {MAX_INSTANCES} feature maps are required"
            )));
        }
        for (i, inst) in instances.iter().enumerate() {
            let Value::Object(m) = inst else {
                return Err(ModelError::new(format!(
                    "instances[{i}]: a feature map ({{\"name\": number}}) is required"
                )));
            };
            if let Some((k, _)) = m.iter().find(|(_, v)| !(v.is_number() || v.is_null())) {
                return Err(ModelError::new(format!(
                    "instances[{i}].{k}: a number is required"
                )));
            }
        }
        Ok(params)
    }

    /// A dot product over a handful of features.
    fn runs_inline(&self, _params: &Params) -> bool {
        true
    }

    fn infer(&self, _request_id: &str, params: Params) -> Result<Params, ModelError> {
        let instances = params
            .get("instances")
            .and_then(Value::as_array)
            .ok_or_else(|| ModelError::new("instances: missing"))?;
        let predictions: Vec<Value> = instances
            .iter()
            .map(|inst| {
                let p1 = inst.as_object().map_or(0.5, |m| self.p1(m));
                json!({"p_0": 1.0 - p1, "p_1": p1})
            })
            .collect();
        let mut out = Params::new();
        out.insert("predictions".into(), Value::Array(predictions));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> Logistic {
        Logistic::new(
            "lr",
            LogisticSettings {
                api_path: "/api/lr".into(),
                coefficients: [("a".to_string(), 2.0), ("b".to_string(), -1.0)].into(),
                intercept: 0.5,
            },
        )
        .unwrap()
    }

    fn params(v: Value) -> Params {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn probabilities_follow_the_formula_and_missing_features_are_zero() {
        let m = model();
        let p = m
            .check(params(
                json!({"instances": [{"a": 1.0, "b": 3.0}, {}, {"a": 1, "zzz": 9}]}),
            ))
            .unwrap();
        let out = m.infer("r", p).unwrap();
        let preds = out["predictions"].as_array().unwrap();
        let sig = |z: f64| 1.0 / (1.0 + (-z).exp());
        for (pred, z) in preds.iter().zip([0.5 + 2.0 - 3.0, 0.5, 0.5 + 2.0]) {
            let p1 = pred["p_1"].as_f64().unwrap();
            assert!((p1 - sig(z)).abs() < 1e-12, "{pred} vs z={z}");
            assert!((pred["p_0"].as_f64().unwrap() + p1 - 1.0).abs() < 1e-12);
            assert_eq!(pred.as_object().unwrap().len(), 2);
        }
    }

    #[test]
    fn bad_instances_are_refused_with_their_place() {
        let m = model();
        for (bad, says) in [
            (json!({}), "instances"),
            (json!({"instances": []}), "instances"),
            (json!({"instances": [1]}), "instances[0]"),
            (json!({"instances": [{"a": "x"}]}), "instances[0].a"),
        ] {
            let e = m.check(params(bad)).unwrap_err();
            assert!(e.message.contains(says), "{}", e.message);
        }
    }
}
