//! Reads a PMML 4.x file into a [`Document`], refusing, with the element's
//! name and line, anything that would be scored wrongly if it were skipped;
//! only what carries no scoring meaning (Header, Extension,
//! ModelVerification, ModelStats, ModelExplanation, MiningBuildTask, empty
//! LocalTransformations) is passed over.

use std::collections::BTreeMap;

use roxmltree::Node as XmlNode;

use super::document::*;

type Read<T> = Result<T, Unsupported>;

/// The elements passed over wherever they appear: no scoring meaning.
const IGNORED: &[&str] = &[
    "Extension",
    "Header",
    "ModelVerification",
    "ModelStats",
    "ModelExplanation",
    "MiningBuildTask",
    "LocalTransformations",
    "TransformationDictionary",
];

fn unsupported(node: XmlNode, what: &str) -> Unsupported {
    let pos = node.document().text_pos_at(node.range().start);
    Unsupported(format!(
        "PMML element {} (line {}) is not supported{what}",
        node.tag_name().name(),
        pos.row
    ))
}

fn bad(node: XmlNode, message: impl std::fmt::Display) -> Unsupported {
    let pos = node.document().text_pos_at(node.range().start);
    Unsupported(format!(
        "PMML element {} (line {}): {message}",
        node.tag_name().name(),
        pos.row
    ))
}

fn elements<'a, 'i>(node: XmlNode<'a, 'i>) -> impl Iterator<Item = XmlNode<'a, 'i>> {
    node.children().filter(|c| c.is_element())
}

fn attr<'a>(node: XmlNode<'a, '_>, name: &str) -> Read<&'a str> {
    node.attribute(name)
        .ok_or_else(|| bad(node, format!("the attribute {name} is missing")))
}

fn number(node: XmlNode, name: &str) -> Read<Option<f64>> {
    match node.attribute(name) {
        None => Ok(None),
        Some(text) => text
            .trim()
            .parse::<f64>()
            .map(Some)
            .map_err(|_| bad(node, format!("{name}={text:?} is not a number"))),
    }
}

/// Reads a PMML document.
pub fn read(xml: &str) -> Read<Document> {
    let doc = roxmltree::Document::parse(xml)
        .map_err(|e| Unsupported(format!("not an XML document: {e}")))?;
    let root = doc.root_element();
    if root.tag_name().name() != "PMML" {
        return Err(Unsupported(format!(
            "the root element is {}, not PMML",
            root.tag_name().name()
        )));
    }
    let version = root.attribute("version").unwrap_or_default();
    if !version.starts_with('4') {
        return Err(Unsupported(format!(
            "PMML version {version:?}: only 4.x is supported"
        )));
    }
    let mut fields = BTreeMap::new();
    let mut model = None;
    for child in elements(root) {
        match child.tag_name().name() {
            "DataDictionary" => fields = data_dictionary(child)?,
            name if IGNORED.contains(&name) => {
                if name == "TransformationDictionary" && elements(child).next().is_some() {
                    return Err(unsupported(child, " (derived fields)"));
                }
            }
            "RegressionModel" | "TreeModel" | "MiningModel" if model.is_none() => {
                model = Some(model_kind(child)?)
            }
            _ => {
                return Err(unsupported(
                    child,
                    " (supported models: RegressionModel, TreeModel, MiningModel)",
                ))
            }
        }
    }
    let model = model.ok_or_else(|| Unsupported("the document has no model".into()))?;
    Ok(Document { fields, model })
}

fn data_dictionary(node: XmlNode) -> Read<BTreeMap<String, DataField>> {
    let mut fields = BTreeMap::new();
    for f in elements(node) {
        match f.tag_name().name() {
            "DataField" => {
                let data_type = match attr(f, "dataType")? {
                    "double" => DataType::Double,
                    "float" => DataType::Float,
                    "integer" => DataType::Integer,
                    "string" => DataType::String,
                    "boolean" => DataType::Boolean,
                    other => return Err(bad(f, format!("dataType {other:?} is not supported"))),
                };
                let mut values = Vec::new();
                for v in elements(f) {
                    match v.tag_name().name() {
                        "Value" => {
                            let property = v.attribute("property").unwrap_or("valid");
                            if property == "valid" {
                                values.push(attr(v, "value")?.to_string());
                            }
                        }
                        "Interval" | "Extension" => {}
                        _ => return Err(unsupported(v, "")),
                    }
                }
                fields.insert(
                    attr(f, "name")?.to_string(),
                    DataField { data_type, values },
                );
            }
            "Extension" => {}
            _ => return Err(unsupported(f, "")),
        }
    }
    Ok(fields)
}

fn model_kind(node: XmlNode) -> Read<ModelKind> {
    if node.attribute("isScorable") == Some("false") {
        return Err(bad(node, "isScorable is false"));
    }
    Ok(match node.tag_name().name() {
        "RegressionModel" => ModelKind::Regression(regression(node)?),
        "TreeModel" => ModelKind::Tree(tree(node)?),
        "MiningModel" => ModelKind::Mining(Box::new(mining(node)?)),
        _ => return Err(unsupported(node, "")),
    })
}

/// The children every model has; `own` gets the rest, and refuses what it
/// does not know.
fn common(node: XmlNode, mut own: impl FnMut(XmlNode) -> Read<()>) -> Read<Common> {
    let function = match attr(node, "functionName")? {
        "regression" => Function::Regression,
        "classification" => Function::Classification,
        other => {
            return Err(bad(
                node,
                format!("functionName {other:?} is not supported"),
            ))
        }
    };
    let mut c = Common {
        function,
        schema: Vec::new(),
        outputs: Vec::new(),
        target: None,
    };
    for child in elements(node) {
        match child.tag_name().name() {
            "MiningSchema" => c.schema = mining_schema(child)?,
            "Output" => c.outputs = outputs(child)?,
            "Targets" => c.target = targets(child)?,
            "LocalTransformations" if elements(child).next().is_some() => {
                return Err(unsupported(child, " (derived fields)"))
            }
            name if IGNORED.contains(&name) => {}
            _ => own(child)?,
        }
    }
    Ok(c)
}

fn mining_schema(node: XmlNode) -> Read<Vec<MiningField>> {
    let mut fields = Vec::new();
    for f in elements(node) {
        if f.tag_name().name() == "Extension" {
            continue;
        }
        if f.tag_name().name() != "MiningField" {
            return Err(unsupported(f, ""));
        }
        let usage = f.attribute("usageType").unwrap_or("active");
        if !matches!(usage, "active" | "target" | "predicted" | "supplementary") {
            return Err(bad(f, format!("usageType {usage:?} is not supported")));
        }
        if let Some(o) = f.attribute("outliers").filter(|o| *o != "asIs") {
            return Err(bad(f, format!("outliers {o:?} is not supported")));
        }
        let invalid = f
            .attribute("invalidValueTreatment")
            .unwrap_or("returnInvalid");
        if !matches!(invalid, "returnInvalid" | "asMissing" | "asIs") {
            return Err(bad(
                f,
                format!("invalidValueTreatment {invalid:?} is not supported"),
            ));
        }
        fields.push(MiningField {
            name: attr(f, "name")?.to_string(),
            target: matches!(usage, "target" | "predicted"),
            missing_replacement: f.attribute("missingValueReplacement").map(str::to_string),
            invalid_as_missing: invalid == "asMissing",
        });
    }
    Ok(fields)
}

fn outputs(node: XmlNode) -> Read<Vec<OutputField>> {
    let mut out = Vec::new();
    for f in elements(node) {
        if f.tag_name().name() == "Extension" {
            continue;
        }
        if f.tag_name().name() != "OutputField" {
            return Err(unsupported(f, ""));
        }
        if elements(f).any(|e| e.tag_name().name() != "Extension") {
            return Err(bad(f, "output expressions are not supported"));
        }
        let feature = match f.attribute("feature").unwrap_or("predictedValue") {
            "predictedValue" => Feature::PredictedValue,
            "probability" => Feature::Probability(f.attribute("value").map(str::to_string)),
            other => return Err(bad(f, format!("feature {other:?} is not supported"))),
        };
        out.push(OutputField {
            name: attr(f, "name")?.to_string(),
            feature,
        });
    }
    Ok(out)
}

fn targets(node: XmlNode) -> Read<Option<TargetSpec>> {
    let mut spec = None;
    for t in elements(node) {
        if t.tag_name().name() != "Target" || spec.is_some() {
            return Err(unsupported(t, " (one Target)"));
        }
        if let Some(e) = elements(t).find(|e| e.tag_name().name() != "Extension") {
            return Err(unsupported(e, ""));
        }
        if t.attribute("castInteger").is_some() {
            return Err(bad(t, "castInteger is not supported"));
        }
        spec = Some(TargetSpec {
            factor: number(t, "rescaleFactor")?.unwrap_or(1.0),
            constant: number(t, "rescaleConstant")?.unwrap_or(0.0),
            min: number(t, "min")?,
            max: number(t, "max")?,
        });
    }
    Ok(spec)
}

fn regression(node: XmlNode) -> Read<Regression> {
    let normalization = match node.attribute("normalizationMethod").unwrap_or("none") {
        "none" => Normalization::None,
        "softmax" => Normalization::Softmax,
        "simplemax" => Normalization::Simplemax,
        "logit" => Normalization::Logit,
        "exp" => Normalization::Exp,
        "cloglog" => Normalization::Cloglog,
        "loglog" => Normalization::Loglog,
        "cauchit" => Normalization::Cauchit,
        other => {
            return Err(bad(
                node,
                format!("normalizationMethod {other:?} is not supported"),
            ))
        }
    };
    let mut tables = Vec::new();
    let common = common(node, |child| {
        if child.tag_name().name() != "RegressionTable" {
            return Err(unsupported(child, ""));
        }
        let mut t = RegressionTable {
            intercept: number(child, "intercept")?.unwrap_or(0.0),
            category: child.attribute("targetCategory").map(str::to_string),
            numeric: Vec::new(),
            categorical: Vec::new(),
        };
        for p in elements(child) {
            match p.tag_name().name() {
                "NumericPredictor" => {
                    let exponent = number(p, "exponent")?.unwrap_or(1.0);
                    if exponent.fract() != 0.0 || exponent.abs() > 64.0 {
                        return Err(bad(p, "exponent must be a small integer"));
                    }
                    t.numeric.push((
                        attr(p, "name")?.to_string(),
                        number(p, "coefficient")?.ok_or_else(|| bad(p, "no coefficient"))?,
                        exponent as i32,
                    ));
                }
                "CategoricalPredictor" => t.categorical.push((
                    attr(p, "name")?.to_string(),
                    attr(p, "value")?.to_string(),
                    number(p, "coefficient")?.ok_or_else(|| bad(p, "no coefficient"))?,
                )),
                "Extension" => {}
                _ => return Err(unsupported(p, "")),
            }
        }
        tables.push(t);
        Ok(())
    })?;
    if tables.is_empty() {
        return Err(bad(node, "no RegressionTable"));
    }
    Ok(Regression {
        common,
        normalization,
        tables,
    })
}

fn tree(node: XmlNode) -> Read<Tree> {
    let missing = match node.attribute("missingValueStrategy").unwrap_or("none") {
        "none" => MissingStrategy::None,
        "nullPrediction" => MissingStrategy::NullPrediction,
        "lastPrediction" => MissingStrategy::LastPrediction,
        "defaultChild" => MissingStrategy::DefaultChild,
        other => {
            return Err(bad(
                node,
                format!("missingValueStrategy {other:?} is not supported"),
            ))
        }
    };
    let no_true_child_last = match node
        .attribute("noTrueChildStrategy")
        .unwrap_or("returnNullPrediction")
    {
        "returnNullPrediction" => false,
        "returnLastPrediction" => true,
        other => {
            return Err(bad(
                node,
                format!("noTrueChildStrategy {other:?} is not supported"),
            ))
        }
    };
    if let Some(s) = node
        .attribute("splitCharacteristic")
        .filter(|s| *s != "binarySplit" && *s != "multiSplit")
    {
        return Err(bad(node, format!("splitCharacteristic {s:?}")));
    }
    let mut root = None;
    let common = common(node, |child| {
        if child.tag_name().name() != "Node" || root.is_some() {
            return Err(unsupported(child, ""));
        }
        root = Some(tree_node(child, 0)?);
        Ok(())
    })?;
    Ok(Tree {
        common,
        missing,
        no_true_child_last,
        root: root.ok_or_else(|| bad(node, "no Node"))?,
    })
}

/// Deepest tree read: a deeper one is refused rather than risk the stack.
const MAX_DEPTH: usize = 512;

fn tree_node(node: XmlNode, depth: usize) -> Read<TreeNode> {
    if depth > MAX_DEPTH {
        return Err(bad(
            node,
            format!("trees deeper than {MAX_DEPTH} are not supported"),
        ));
    }
    let mut n = TreeNode {
        id: node.attribute("id").map(str::to_string),
        predicate: Predicate::True,
        score: node.attribute("score").map(str::to_string),
        distribution: Vec::new(),
        default_child: node.attribute("defaultChild").map(str::to_string),
        children: Vec::new(),
    };
    let mut has_predicate = false;
    for child in elements(node) {
        match child.tag_name().name() {
            "Node" => n.children.push(tree_node(child, depth + 1)?),
            "ScoreDistribution" => n.distribution.push((
                attr(child, "value")?.to_string(),
                number(child, "recordCount")?.unwrap_or(0.0),
                number(child, "probability")?,
            )),
            "Extension" => {}
            _ if !has_predicate => {
                n.predicate = predicate(child, 0)?;
                has_predicate = true;
            }
            _ => return Err(unsupported(child, "")),
        }
    }
    if !has_predicate {
        return Err(bad(node, "a Node needs a predicate"));
    }
    Ok(n)
}

fn predicate(node: XmlNode, depth: usize) -> Read<Predicate> {
    if depth > MAX_DEPTH {
        return Err(bad(node, "predicates nested too deep"));
    }
    Ok(match node.tag_name().name() {
        "True" => Predicate::True,
        "False" => Predicate::False,
        "SimplePredicate" => {
            let op = match attr(node, "operator")? {
                "equal" => Op::Equal,
                "notEqual" => Op::NotEqual,
                "lessThan" => Op::LessThan,
                "lessOrEqual" => Op::LessOrEqual,
                "greaterThan" => Op::GreaterThan,
                "greaterOrEqual" => Op::GreaterOrEqual,
                "isMissing" => Op::IsMissing,
                "isNotMissing" => Op::IsNotMissing,
                other => return Err(bad(node, format!("operator {other:?} is not supported"))),
            };
            let value = match op {
                Op::IsMissing | Op::IsNotMissing => String::new(),
                _ => attr(node, "value")?.to_string(),
            };
            Predicate::Simple {
                field: attr(node, "field")?.to_string(),
                op,
                value,
            }
        }
        "SimpleSetPredicate" => {
            let is_in = match attr(node, "booleanOperator")? {
                "isIn" => true,
                "isNotIn" => false,
                other => return Err(bad(node, format!("booleanOperator {other:?}"))),
            };
            let array = elements(node)
                .find(|e| e.tag_name().name() == "Array")
                .ok_or_else(|| bad(node, "no Array"))?;
            Predicate::Set {
                field: attr(node, "field")?.to_string(),
                is_in,
                values: array_values(array.text().unwrap_or_default()),
            }
        }
        "CompoundPredicate" => {
            let op = match attr(node, "booleanOperator")? {
                "and" => BoolOp::And,
                "or" => BoolOp::Or,
                "xor" => BoolOp::Xor,
                "surrogate" => BoolOp::Surrogate,
                other => return Err(bad(node, format!("booleanOperator {other:?}"))),
            };
            let parts = elements(node)
                .filter(|e| e.tag_name().name() != "Extension")
                .map(|e| predicate(e, depth + 1))
                .collect::<Read<Vec<_>>>()?;
            Predicate::Compound(op, parts)
        }
        _ => return Err(unsupported(node, " (as a predicate)")),
    })
}

/// A PMML Array's text: values separated by spaces, `"…"` quoting values
/// that hold spaces (with `\"` inside).
pub(super) fn array_values(text: &str) -> Vec<String> {
    let mut values = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let Some(&first) = chars.peek() else {
            return values;
        };
        let mut v = String::new();
        if first == '"' {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' if chars.peek() == Some(&'"') => {
                        v.push('"');
                        chars.next();
                    }
                    '"' => break,
                    c => v.push(c),
                }
            }
        } else {
            while let Some(c) = chars.peek().copied().filter(|c| !c.is_whitespace()) {
                v.push(c);
                chars.next();
            }
        }
        values.push(v);
    }
}

fn mining(node: XmlNode) -> Read<Mining> {
    let mut seg = None;
    let common = common(node, |child| {
        if child.tag_name().name() != "Segmentation" || seg.is_some() {
            return Err(unsupported(child, ""));
        }
        seg = Some(segmentation(child)?);
        Ok(())
    })?;
    let (method, return_missing, segments) = seg.ok_or_else(|| bad(node, "no Segmentation"))?;
    Ok(Mining {
        common,
        method,
        return_missing,
        segments,
    })
}

fn segmentation(node: XmlNode) -> Read<(Method, bool, Vec<Segment>)> {
    let method = match attr(node, "multipleModelMethod")? {
        "sum" => Method::Sum,
        "average" => Method::Average,
        "weightedAverage" => Method::WeightedAverage,
        "median" => Method::Median,
        "max" => Method::Max,
        "majorityVote" => Method::MajorityVote,
        "weightedMajorityVote" => Method::WeightedMajorityVote,
        "modelChain" => Method::ModelChain,
        "selectFirst" => Method::SelectFirst,
        other => {
            return Err(bad(
                node,
                format!("multipleModelMethod {other:?} is not supported"),
            ))
        }
    };
    let return_missing = match node
        .attribute("missingPredictionTreatment")
        .unwrap_or("continue")
    {
        "returnMissing" => true,
        "skipSegment" | "continue" => false,
        other => return Err(bad(node, format!("missingPredictionTreatment {other:?}"))),
    };
    let mut segments = Vec::new();
    for s in elements(node) {
        match s.tag_name().name() {
            "Segment" => {
                let mut predicate_seen = None;
                let mut model = None;
                for c in elements(s) {
                    match c.tag_name().name() {
                        "RegressionModel" | "TreeModel" | "MiningModel" if model.is_none() => {
                            model = Some(model_kind(c)?)
                        }
                        "Extension" => {}
                        _ if predicate_seen.is_none() => predicate_seen = Some(predicate(c, 0)?),
                        _ => return Err(unsupported(c, " (in a Segment)")),
                    }
                }
                segments.push(Segment {
                    predicate: predicate_seen.unwrap_or(Predicate::True),
                    weight: number(s, "weight")?.unwrap_or(1.0),
                    model: model.ok_or_else(|| bad(s, "no model"))?,
                });
            }
            "Extension" => {}
            _ => return Err(unsupported(s, "")),
        }
    }
    if segments.is_empty() {
        return Err(bad(node, "no Segment"));
    }
    Ok((method, return_missing, segments))
}
