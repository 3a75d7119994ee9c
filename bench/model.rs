//! `inferq bench-model`: the bare model, in process, no serving around it.
//!
//! Loads one model from the settings' `Models` (as a dispatcher would) and
//! calls its `infer_batch` back to back with one job of `batch` texts, for
//! each batch size asked, and reports sentences per second. This is the
//! ceiling the served throughput is compared with in BENCHMARKS.md.

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use serde_json::{json, Value};

use inferq::config::Settings;
use inferq::model_zoo::{InitContext, ModelSet, Params};

#[derive(Debug, Clone, Args)]
pub struct BenchModelArgs {
    /// The model's name under `Models`.
    #[arg(long)]
    pub model: String,
    /// The text every item of a batch carries.
    #[arg(long)]
    pub text: String,
    /// Batch sizes to measure, comma-separated.
    #[arg(long, default_value = "1,8,32", value_delimiter = ',')]
    pub batch: Vec<usize>,
    /// Seconds measured per batch size (after one warm-up batch).
    #[arg(long, short = 'd', default_value_t = 10.0)]
    pub duration: f64,
    /// Print each result as one JSON line.
    #[arg(long)]
    pub json: bool,
}

pub fn run(settings: &Settings, args: BenchModelArgs) -> anyhow::Result<()> {
    let spec = settings
        .models
        .get(&args.model)
        .with_context(|| format!("no model {:?} under Models", args.model))?;
    let models = inferq::model_zoo::from_settings(&Settings {
        models: [(args.model.clone(), spec.clone())].into_iter().collect(),
        ..settings.clone()
    })
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let ctx = InitContext::for_settings(settings);
    let set = ModelSet::initialised(models, &ctx).map_err(|e| anyhow::anyhow!("{e}"))?;
    let model = set.iter().next().context("model not built")?;
    for &batch in &args.batch {
        let job = |n: usize| -> Vec<(String, Params)> {
            let mut p = Params::new();
            p.insert("texts".into(), json!(vec![args.text.clone(); batch]));
            vec![(format!("bench-{n}"), p)]
        };
        let check = model.infer_batch(job(0));
        match check.first() {
            Some(Ok(_)) => {}
            Some(Err(e)) => anyhow::bail!("the model failed: {e}"),
            None => anyhow::bail!("the model returned nothing"),
        }
        let tokens = check
            .first()
            .and_then(|r| r.as_ref().ok())
            .and_then(|o| o.get("tokens"))
            .and_then(Value::as_u64)
            .unwrap_or(0)
            / batch.max(1) as u64;
        let start = Instant::now();
        let mut done = 0usize;
        let mut calls = 0usize;
        while start.elapsed() < Duration::from_secs_f64(args.duration) {
            let r = model.infer_batch(job(calls));
            if let Some(Err(e)) = r.first() {
                anyhow::bail!("the model failed: {e}");
            }
            done += batch;
            calls += 1;
        }
        let secs = start.elapsed().as_secs_f64();
        let rate = done as f64 / secs;
        if args.json {
            println!(
                "{}",
                json!({"model": args.model, "batch": batch, "tokens_per_text": tokens,
                       "sentences_per_s": (rate * 10.0).round() / 10.0, "calls": calls})
            );
        } else {
            println!(
                "{} batch {batch:>3} ({tokens} tokens/text): {rate:.1} sentences/s over {calls} calls",
                args.model
            );
        }
    }
    Ok(())
}
