//! A PMML 4.x document as [`super::score`] walks it: the data dictionary and
//! one model (RegressionModel, TreeModel or MiningModel, to any depth).
//! [`super::read`] makes it from the XML.

use std::collections::BTreeMap;

/// Why a document cannot be served.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct Unsupported(pub String);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataType {
    Double,
    Float,
    Integer,
    String,
    Boolean,
}

#[derive(Debug, Clone)]
pub struct DataField {
    pub data_type: DataType,
    /// A categorical field's values, in the document's order.
    pub values: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    Regression,
    Classification,
}

#[derive(Debug, Clone)]
pub struct MiningField {
    pub name: String,
    pub target: bool,
    pub missing_replacement: Option<String>,
    /// `invalidValueTreatment="asMissing"`; otherwise an invalid value is refused.
    pub invalid_as_missing: bool,
}

#[derive(Debug, Clone)]
pub enum Feature {
    PredictedValue,
    /// The probability of a class; `None`: of the predicted class.
    Probability(Option<String>),
}

#[derive(Debug, Clone)]
pub struct OutputField {
    pub name: String,
    pub feature: Feature,
}

/// `Targets/Target`: a regression result rescaled and clamped.
#[derive(Debug, Clone)]
pub struct TargetSpec {
    pub factor: f64,
    pub constant: f64,
    pub min: Option<f64>,
    pub max: Option<f64>,
}

#[derive(Debug, Clone)]
pub struct Common {
    pub function: Function,
    pub schema: Vec<MiningField>,
    pub outputs: Vec<OutputField>,
    pub target: Option<TargetSpec>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Normalization {
    None,
    Softmax,
    Simplemax,
    Logit,
    Exp,
    Cloglog,
    Loglog,
    Cauchit,
}

#[derive(Debug, Clone)]
pub struct RegressionTable {
    pub intercept: f64,
    pub category: Option<String>,
    /// (field, coefficient, exponent)
    pub numeric: Vec<(String, f64, i32)>,
    /// (field, value, coefficient)
    pub categorical: Vec<(String, String, f64)>,
}

#[derive(Debug, Clone)]
pub struct Regression {
    pub common: Common,
    pub normalization: Normalization,
    pub tables: Vec<RegressionTable>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Equal,
    NotEqual,
    LessThan,
    LessOrEqual,
    GreaterThan,
    GreaterOrEqual,
    IsMissing,
    IsNotMissing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoolOp {
    And,
    Or,
    Xor,
    Surrogate,
}

#[derive(Debug, Clone)]
pub enum Predicate {
    True,
    False,
    Simple {
        field: String,
        op: Op,
        value: String,
    },
    Set {
        field: String,
        is_in: bool,
        values: Vec<String>,
    },
    Compound(BoolOp, Vec<Predicate>),
}

#[derive(Debug, Clone)]
pub struct TreeNode {
    pub id: Option<String>,
    pub predicate: Predicate,
    pub score: Option<String>,
    /// (class, recordCount, probability)
    pub distribution: Vec<(String, f64, Option<f64>)>,
    pub default_child: Option<String>,
    pub children: Vec<TreeNode>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissingStrategy {
    None,
    NullPrediction,
    LastPrediction,
    DefaultChild,
}

#[derive(Debug, Clone)]
pub struct Tree {
    pub common: Common,
    pub missing: MissingStrategy,
    /// `noTrueChildStrategy="returnLastPrediction"`.
    pub no_true_child_last: bool,
    pub root: TreeNode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Sum,
    Average,
    WeightedAverage,
    Median,
    Max,
    MajorityVote,
    WeightedMajorityVote,
    ModelChain,
    SelectFirst,
}

#[derive(Debug, Clone)]
pub struct Segment {
    pub predicate: Predicate,
    pub weight: f64,
    pub model: ModelKind,
}

#[derive(Debug, Clone)]
pub struct Mining {
    pub common: Common,
    pub method: Method,
    /// `missingPredictionTreatment="returnMissing"`: one missing segment
    /// makes the whole prediction missing; otherwise it is skipped.
    pub return_missing: bool,
    pub segments: Vec<Segment>,
}

#[derive(Debug, Clone)]
pub enum ModelKind {
    Regression(Regression),
    Tree(Tree),
    Mining(Box<Mining>),
}

impl ModelKind {
    pub fn common(&self) -> &Common {
        match self {
            ModelKind::Regression(m) => &m.common,
            ModelKind::Tree(m) => &m.common,
            ModelKind::Mining(m) => &m.common,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Document {
    pub fields: BTreeMap<String, DataField>,
    pub model: ModelKind,
}
