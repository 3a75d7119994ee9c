//! Scores rows with a PMML file in process, as the `pmml` kind does, and
//! prints the rate: the PMML half of `bench/processors.sh`.
//!
//! usage: pmml_score FILE ROWS_JSON [SECONDS]
//! (ROWS_JSON: a JSON list of objects, field: value.)

use std::time::{Duration, Instant};

use inferq::model_zoo::pmml::PmmlModel;
use inferq::model_zoo::{Model, Params};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        args.len() >= 3,
        "usage: pmml_score FILE ROWS_JSON [SECONDS]"
    );
    let xml = std::fs::read_to_string(&args[1])?;
    let rows: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&args[2])?)?;
    let n = rows.as_array().map_or(0, Vec::len);
    anyhow::ensure!(n > 0, "ROWS_JSON must be a non-empty list");
    let secs: f64 = args.get(3).map_or(Ok(3.0), |s| s.parse())?;
    let model = PmmlModel::from_document("/bench", &xml).map_err(|e| anyhow::anyhow!(e.message))?;
    let mut params = Params::new();
    params.insert("instances".into(), rows);
    let started = Instant::now();
    let mut scored = 0usize;
    while started.elapsed() < Duration::from_secs_f64(secs) {
        let out = model
            .infer("bench", params.clone())
            .map_err(|e| anyhow::anyhow!(e.message))?;
        std::hint::black_box(out);
        scored += n;
    }
    let rate = scored as f64 / started.elapsed().as_secs_f64();
    println!(
        "inferq pmml {}: {rate:.0} rows/s ({n} rows per call)",
        args[1]
    );
    Ok(())
}
