//! Scores one row with a [`Document`]'s model, as the PMML 4.4 specification
//! says: field values typed by the data dictionary (a `float` field is
//! rounded to single precision, as the model was trained), missing values
//! replaced by the mining schema or carried as missing, predicates in
//! three-valued logic, trees walked under their missing-value and no-true-
//! child strategies, segmentations combined, and a model chain's output
//! fields passed on to the segments after it.

use std::collections::HashMap;

use super::document::*;

/// A field's value while scoring.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Missing,
    Num(f64),
    Str(String),
}

/// A model's prediction.
#[derive(Debug, Clone, PartialEq)]
pub enum Prediction {
    Missing,
    Value(f64),
    /// The predicted class and each class's probability.
    Class {
        label: String,
        probabilities: Vec<(String, f64)>,
    },
}

/// A row refused (a value the field's type cannot hold).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

/// The values of one row, by field name, and the fields' types.
pub struct Row<'d> {
    pub fields: &'d std::collections::BTreeMap<String, DataField>,
    pub values: HashMap<String, Val>,
}

impl Row<'_> {
    fn get(&self, name: &str) -> &Val {
        self.values.get(name).unwrap_or(&Val::Missing)
    }

    fn data_type(&self, name: &str) -> DataType {
        self.fields
            .get(name)
            .map(|f| f.data_type)
            .unwrap_or(DataType::Double)
    }

    /// A JSON value as field `name` holds it.
    pub fn typed(&self, name: &str, v: &serde_json::Value) -> Result<Val, Invalid> {
        use serde_json::Value as J;
        let t = self.data_type(name);
        Ok(match (v, t) {
            (J::Null, _) => Val::Missing,
            (J::String(s), DataType::String) => Val::Str(s.clone()),
            (J::Number(n), DataType::String) => Val::Str(n.to_string()),
            (J::Bool(b), DataType::Boolean) => Val::Num(f64::from(u8::from(*b))),
            (J::Bool(b), DataType::String) => Val::Str(b.to_string()),
            (J::Number(n), t) => match n.as_f64() {
                Some(x) => number_as(t, x).ok_or_else(|| invalid(name, v))?,
                None => return Err(invalid(name, v)),
            },
            (J::String(s), t) => match parse_as(t, s) {
                Some(x) => x,
                None => return Err(invalid(name, v)),
            },
            _ => return Err(invalid(name, v)),
        })
    }
}

fn invalid(name: &str, v: &serde_json::Value) -> Invalid {
    let text = v.to_string();
    Invalid(format!(
        "{name}: {} is not a valid value",
        crate::clip::clip(&text)
    ))
}

/// `x` as a value of type `t` (None when it cannot be one).
fn number_as(t: DataType, x: f64) -> Option<Val> {
    if !x.is_finite() {
        return None;
    }
    match t {
        DataType::Float => Some(Val::Num(f64::from(x as f32))),
        DataType::Integer if x.fract() != 0.0 => None,
        DataType::Boolean if x != 0.0 && x != 1.0 => None,
        DataType::String => Some(Val::Str(x.to_string())),
        _ => Some(Val::Num(x)),
    }
}

/// Text (from the document or a row) as a value of type `t`.
fn parse_as(t: DataType, s: &str) -> Option<Val> {
    match t {
        DataType::String => Some(Val::Str(s.to_string())),
        DataType::Boolean => match s.trim() {
            "true" | "1" => Some(Val::Num(1.0)),
            "false" | "0" => Some(Val::Num(0.0)),
            _ => None,
        },
        t => number_as(t, s.trim().parse::<f64>().ok()?),
    }
}

/// A document's constant (a predicate's value) as field `field` compares it.
fn constant(row: &Row, field: &str, text: &str) -> Val {
    match row.get(field) {
        Val::Str(_) => Val::Str(text.to_string()),
        _ => parse_as(row.data_type(field), text).unwrap_or_else(|| Val::Str(text.to_string())),
    }
}

fn compare(a: &Val, b: &Val) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Val::Num(x), Val::Num(y)) => x.partial_cmp(y),
        (Val::Str(x), Val::Str(y)) => Some(x.cmp(y)),
        (Val::Num(x), Val::Str(y)) => y.parse::<f64>().ok().and_then(|y| x.partial_cmp(&y)),
        (Val::Str(x), Val::Num(y)) => x.parse::<f64>().ok().and_then(|x| x.partial_cmp(y)),
        _ => None,
    }
}

/// A predicate in three-valued logic: None is UNKNOWN (a missing value).
fn holds(p: &Predicate, row: &Row) -> Option<bool> {
    use std::cmp::Ordering::*;
    match p {
        Predicate::True => Some(true),
        Predicate::False => Some(false),
        Predicate::Simple { field, op, value } => {
            let v = row.get(field);
            match op {
                Op::IsMissing => return Some(*v == Val::Missing),
                Op::IsNotMissing => return Some(*v != Val::Missing),
                _ => {}
            }
            if *v == Val::Missing {
                return None;
            }
            let ord = compare(v, &constant(row, field, value))?;
            Some(match op {
                Op::Equal => ord == Equal,
                Op::NotEqual => ord != Equal,
                Op::LessThan => ord == Less,
                Op::LessOrEqual => ord != Greater,
                Op::GreaterThan => ord == Greater,
                Op::GreaterOrEqual => ord != Less,
                Op::IsMissing | Op::IsNotMissing => unreachable!("answered above"),
            })
        }
        Predicate::Set {
            field,
            is_in,
            values,
        } => {
            let v = row.get(field);
            if *v == Val::Missing {
                return None;
            }
            let found = values
                .iter()
                .any(|c| compare(v, &constant(row, field, c)) == Some(Equal));
            Some(found == *is_in)
        }
        Predicate::Compound(op, parts) => {
            let mut values = parts.iter().map(|p| holds(p, row));
            match op {
                BoolOp::And => {
                    let mut unknown = false;
                    for v in values {
                        match v {
                            Some(false) => return Some(false),
                            None => unknown = true,
                            _ => {}
                        }
                    }
                    (!unknown).then_some(true)
                }
                BoolOp::Or => {
                    let mut unknown = false;
                    for v in values {
                        match v {
                            Some(true) => return Some(true),
                            None => unknown = true,
                            _ => {}
                        }
                    }
                    (!unknown).then_some(false)
                }
                BoolOp::Xor => values.try_fold(false, |acc, v| v.map(|v| acc ^ v)),
                BoolOp::Surrogate => values.find(Option::is_some).flatten(),
            }
        }
    }
}

/// Scores `row` with `model`; the row gains the output fields of every
/// model scored (what a chain's later segments read).
pub fn score(model: &ModelKind, row: &mut Row) -> Result<Prediction, Invalid> {
    let common = model.common();
    // The mining schema's replacements, and invalid values as missing.
    for f in &common.schema {
        if f.target {
            continue;
        }
        if let (Val::Missing, Some(text)) = (row.get(&f.name), &f.missing_replacement) {
            let v = parse_as(row.data_type(&f.name), text).unwrap_or(Val::Str(text.clone()));
            row.values.insert(f.name.clone(), v);
        }
        if f.invalid_as_missing {
            if let Some(field) = row.fields.get(&f.name) {
                if let Val::Str(s) = row.get(&f.name) {
                    if !field.values.is_empty() && !field.values.contains(s) {
                        row.values.insert(f.name.clone(), Val::Missing);
                    }
                }
            }
        }
    }
    let mut p = match model {
        ModelKind::Regression(m) => regression(m, row),
        ModelKind::Tree(m) => tree(m, row),
        ModelKind::Mining(m) => mining(m, row)?,
    };
    if let (Prediction::Value(v), Some(t)) = (&mut p, &common.target) {
        *v = *v * t.factor + t.constant;
        if let Some(min) = t.min {
            *v = v.max(min);
        }
        if let Some(max) = t.max {
            *v = v.min(max);
        }
    }
    for o in &common.outputs {
        let v = match (&o.feature, &p) {
            (_, Prediction::Missing) => Val::Missing,
            (Feature::PredictedValue, Prediction::Value(v)) => Val::Num(*v),
            (Feature::PredictedValue, Prediction::Class { label, .. }) => Val::Str(label.clone()),
            (
                Feature::Probability(which),
                Prediction::Class {
                    label,
                    probabilities,
                },
            ) => {
                let class = which.as_deref().unwrap_or(label);
                probabilities
                    .iter()
                    .find(|(c, _)| c == class)
                    .map_or(Val::Num(0.0), |(_, p)| Val::Num(*p))
            }
            (Feature::Probability(_), Prediction::Value(_)) => Val::Missing,
        };
        row.values.insert(o.name.clone(), v);
    }
    Ok(p)
}

fn regression(m: &Regression, row: &Row) -> Prediction {
    let mut ys = Vec::with_capacity(m.tables.len());
    for t in &m.tables {
        let mut y = t.intercept;
        for (field, coef, exponent) in &t.numeric {
            match row.get(field) {
                Val::Num(x) => y += coef * x.powi(*exponent),
                _ => return Prediction::Missing,
            }
        }
        for (field, value, coef) in &t.categorical {
            match row.get(field) {
                Val::Missing => return Prediction::Missing,
                v if compare(v, &constant(row, field, value))
                    == Some(std::cmp::Ordering::Equal) =>
                {
                    y += coef
                }
                _ => {}
            }
        }
        ys.push(y);
    }
    match m.common.function {
        Function::Regression => Prediction::Value(match m.normalization {
            Normalization::None | Normalization::Softmax | Normalization::Simplemax => ys[0],
            n => link(n, ys[0]),
        }),
        Function::Classification => {
            let n = ys.len();
            let ps: Vec<f64> = match m.normalization {
                Normalization::Softmax => {
                    let top = ys.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = ys.iter().map(|y| (y - top).exp()).collect();
                    let sum: f64 = e.iter().sum();
                    e.iter().map(|x| x / sum).collect()
                }
                Normalization::Simplemax => {
                    let sum: f64 = ys.iter().sum();
                    ys.iter().map(|y| y / sum).collect()
                }
                norm => {
                    // Every class but the last by the link; the last is the rest.
                    let mut ps: Vec<f64> = ys[..n - 1]
                        .iter()
                        .map(|&y| {
                            if norm == Normalization::None {
                                y
                            } else {
                                link(norm, y)
                            }
                        })
                        .collect();
                    let rest = 1.0 - ps.iter().sum::<f64>();
                    ps.push(rest);
                    ps
                }
            };
            let probabilities: Vec<(String, f64)> = m
                .tables
                .iter()
                .zip(ps)
                .map(|(t, p)| (t.category.clone().unwrap_or_default(), p))
                .collect();
            class(probabilities)
        }
    }
}

/// The inverse link functions of a RegressionModel.
fn link(n: Normalization, y: f64) -> f64 {
    match n {
        Normalization::Logit => 1.0 / (1.0 + (-y).exp()),
        Normalization::Exp => y.exp(),
        Normalization::Cloglog => 1.0 - (-(y.exp())).exp(),
        Normalization::Loglog => (-((-y).exp())).exp(),
        Normalization::Cauchit => 0.5 + y.atan() / std::f64::consts::PI,
        Normalization::None | Normalization::Softmax | Normalization::Simplemax => y,
    }
}

/// A class prediction from probabilities: the most probable class (the first
/// of equals).
fn class(probabilities: Vec<(String, f64)>) -> Prediction {
    let mut best: Option<(&String, f64)> = None;
    for (c, p) in &probabilities {
        if best.is_none_or(|(_, b)| *p > b) {
            best = Some((c, *p));
        }
    }
    match best {
        Some((label, _)) => Prediction::Class {
            label: label.clone(),
            probabilities,
        },
        None => Prediction::Missing,
    }
}

fn tree(m: &Tree, row: &Row) -> Prediction {
    let mut node = &m.root;
    match holds(&node.predicate, row) {
        Some(true) => {}
        _ => return Prediction::Missing,
    }
    'descend: loop {
        if node.children.is_empty() {
            return leaf(m, node);
        }
        for child in &node.children {
            match holds(&child.predicate, row) {
                Some(true) => {
                    node = child;
                    continue 'descend;
                }
                Some(false) => {}
                None => match m.missing {
                    MissingStrategy::None => {}
                    MissingStrategy::NullPrediction => return Prediction::Missing,
                    MissingStrategy::LastPrediction => return leaf(m, node),
                    MissingStrategy::DefaultChild => {
                        let next = node.default_child.as_ref().and_then(|id| {
                            node.children.iter().find(|c| c.id.as_ref() == Some(id))
                        });
                        match next {
                            Some(c) => {
                                node = c;
                                continue 'descend;
                            }
                            None => return Prediction::Missing,
                        }
                    }
                },
            }
        }
        return if m.no_true_child_last {
            leaf(m, node)
        } else {
            Prediction::Missing
        };
    }
}

/// The prediction a tree node carries.
fn leaf(m: &Tree, node: &TreeNode) -> Prediction {
    let Some(score) = &node.score else {
        return Prediction::Missing;
    };
    match m.common.function {
        Function::Regression => score
            .trim()
            .parse::<f64>()
            .map_or(Prediction::Missing, Prediction::Value),
        Function::Classification => {
            let total: f64 = node.distribution.iter().map(|(_, n, _)| n).sum();
            let probabilities: Vec<(String, f64)> = if node.distribution.is_empty() {
                vec![(score.clone(), 1.0)]
            } else {
                node.distribution
                    .iter()
                    .map(|(c, n, p)| {
                        (
                            c.clone(),
                            p.unwrap_or(if total > 0.0 { n / total } else { 0.0 }),
                        )
                    })
                    .collect()
            };
            Prediction::Class {
                label: score.clone(),
                probabilities,
            }
        }
    }
}

fn mining(m: &Mining, row: &mut Row) -> Result<Prediction, Invalid> {
    let mut results: Vec<(f64, Prediction)> = Vec::new();
    for s in &m.segments {
        if holds(&s.predicate, row) != Some(true) {
            continue;
        }
        let p = score(&s.model, row)?;
        if m.method == Method::SelectFirst {
            return Ok(p);
        }
        if p == Prediction::Missing && m.method != Method::ModelChain {
            if m.return_missing {
                return Ok(Prediction::Missing);
            }
            continue;
        }
        results.push((s.weight, p));
    }
    if m.method == Method::ModelChain {
        return Ok(results.pop().map_or(Prediction::Missing, |(_, p)| p));
    }
    if results.is_empty() {
        return Ok(Prediction::Missing);
    }
    let values = || {
        results.iter().filter_map(|(w, p)| match p {
            Prediction::Value(v) => Some((*w, *v)),
            _ => None,
        })
    };
    Ok(match (m.common.function, m.method) {
        (Function::Regression, Method::Sum) => Prediction::Value(values().map(|(_, v)| v).sum()),
        (Function::Regression, Method::Average) => {
            let n = values().count() as f64;
            Prediction::Value(values().map(|(_, v)| v).sum::<f64>() / n)
        }
        (Function::Regression, Method::WeightedAverage) => {
            let w: f64 = values().map(|(w, _)| w).sum();
            Prediction::Value(values().map(|(w, v)| w * v).sum::<f64>() / w)
        }
        (Function::Regression, Method::Max) => {
            Prediction::Value(values().map(|(_, v)| v).fold(f64::NEG_INFINITY, f64::max))
        }
        (Function::Regression, Method::Median) => {
            let mut v: Vec<f64> = values().map(|(_, v)| v).collect();
            v.sort_by(f64::total_cmp);
            let n = v.len();
            Prediction::Value(if n % 2 == 1 {
                v[n / 2]
            } else {
                (v[n / 2 - 1] + v[n / 2]) / 2.0
            })
        }
        (Function::Classification, Method::Average | Method::WeightedAverage) => {
            let weighted = m.method == Method::WeightedAverage;
            let mut sums: Vec<(String, f64)> = Vec::new();
            let mut total = 0.0;
            for (w, p) in &results {
                let Prediction::Class { probabilities, .. } = p else {
                    continue;
                };
                let w = if weighted { *w } else { 1.0 };
                total += w;
                for (c, p) in probabilities {
                    match sums.iter_mut().find(|(k, _)| k == c) {
                        Some((_, s)) => *s += w * p,
                        None => sums.push((c.clone(), w * p)),
                    }
                }
            }
            class(sums.into_iter().map(|(c, s)| (c, s / total)).collect())
        }
        (Function::Classification, Method::MajorityVote | Method::WeightedMajorityVote) => {
            let weighted = m.method == Method::WeightedMajorityVote;
            let mut votes: Vec<(String, f64)> = Vec::new();
            let mut total = 0.0;
            for (w, p) in &results {
                let Prediction::Class { label, .. } = p else {
                    continue;
                };
                let w = if weighted { *w } else { 1.0 };
                total += w;
                match votes.iter_mut().find(|(k, _)| k == label) {
                    Some((_, s)) => *s += w,
                    None => votes.push((label.clone(), w)),
                }
            }
            class(votes.into_iter().map(|(c, s)| (c, s / total)).collect())
        }
        (Function::Classification, Method::Max) => {
            // The segment most sure of its class.
            let mut best: Option<&Prediction> = None;
            let top = |p: &Prediction| match p {
                Prediction::Class { probabilities, .. } => probabilities
                    .iter()
                    .map(|(_, p)| *p)
                    .fold(f64::NEG_INFINITY, f64::max),
                _ => f64::NEG_INFINITY,
            };
            for (_, p) in &results {
                if best.is_none_or(|b| top(p) > top(b)) {
                    best = Some(p);
                }
            }
            best.cloned().unwrap_or(Prediction::Missing)
        }
        (function, method) => {
            return Err(Invalid(format!(
                "multipleModelMethod {method:?} does not combine {function:?} segments"
            )))
        }
    })
}
