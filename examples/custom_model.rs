//! Your own model behind inferq's commands: go-infer's `ModelList` + CLI.
//!
//! ```text
//! cargo run --release --example custom_model -- standalone
//! ```
//! serves the zoo's models plus `/api/reverse`, with every serving subcommand
//! (`gateway`, `queue`, `dispatcher`, `standalone`, `dead-letters`) available.

use inferq::config::Settings;
use inferq::model_zoo::{self, InitContext, Model, ModelError, Params};
use serde_json::Value;

/// Reverses `text`; `prefix` from settings.yaml's `Customer.ReversePrefix`.
#[derive(Default)]
struct Reverse {
    prefix: String,
}

impl Model for Reverse {
    fn api_path(&self) -> &str {
        "/api/reverse"
    }

    fn check(&self, params: Params) -> Result<Params, ModelError> {
        match params.get("text") {
            Some(Value::String(s)) if !s.is_empty() => Ok(params),
            _ => Err(ModelError::new("text: a non-empty string is required")),
        }
    }

    fn init(&mut self, ctx: &InitContext<'_>) -> Result<(), ModelError> {
        self.prefix = ctx
            .settings
            .customer_str("ReversePrefix")
            .unwrap_or_default();
        Ok(())
    }

    fn infer(&self, _request_id: &str, params: Params) -> Result<Params, ModelError> {
        let text = params
            .get("text")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let mut out = Params::new();
        let reversed: String = text.chars().rev().collect();
        out.insert(
            "reversed".into(),
            format!("{}{reversed}", self.prefix).into(),
        );
        Ok(out)
    }
}

fn models(settings: &Settings) -> Result<Vec<Box<dyn Model>>, ModelError> {
    let mut list = model_zoo::default_models(settings)?;
    list.push(Box::new(Reverse::default()));
    Ok(list)
}

fn main() -> std::process::ExitCode {
    inferq::run(models)
}
