//! The process's ONNX Runtime: the shared library loaded at run time (`ort`'s
//! `load-dynamic`; the library comes from the `onnxruntime` wheel on PyPI, see
//! `scripts/fetch-models.sh`) and the one environment sessions are made in.
//!
//! Where the library is, first found wins: `OnnxRuntime.Library` in the
//! settings (relative to the settings file), `ORT_DYLIB_PATH`,
//! `.cache/models/libonnxruntime.so` under the working directory.

use std::path::PathBuf;
use std::sync::OnceLock;

use ort::environment::Environment;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;

use super::model::{InitContext, ModelError};

static ENVIRONMENT: OnceLock<Result<Environment, String>> = OnceLock::new();

/// The library path the settings and environment point at.
pub fn library_path(ctx: &InitContext<'_>) -> PathBuf {
    let configured = &ctx.settings.onnx_runtime.library;
    if !configured.is_empty() {
        return ctx.resolve(configured);
    }
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        return PathBuf::from(p);
    }
    PathBuf::from(".cache/models/libonnxruntime.so")
}

/// Loads the library and builds the environment, once per process.
pub fn environment(ctx: &InitContext<'_>) -> Result<&'static Environment, ModelError> {
    let result = ENVIRONMENT.get_or_init(|| {
        let path = library_path(ctx);
        if !path.is_file() {
            return Err(format!(
                "ONNX Runtime library not found at {} (run scripts/fetch-models.sh, or set OnnxRuntime.Library or ORT_DYLIB_PATH)",
                path.display()
            ));
        }
        let builder = ort::init_from(&path)
            .map_err(|e| format!("cannot load ONNX Runtime from {}: {e}", path.display()))?;
        let env = builder
            .with_name("inferq")
            .build()
            .map_err(|e| format!("ONNX Runtime environment: {e}"))?;
        tracing::info!(library = %path.display(), "ONNX Runtime loaded");
        Ok(env)
    });
    result.as_ref().map_err(|e| ModelError::new(e.clone()))
}

/// A session on `model` with `intra_threads` (0: ONNX Runtime's default, one
/// per core) and full graph optimisation. The intra-op threads do not spin
/// while waiting for work: in a serving process they share the cores with the
/// stream, the batcher and, on small machines, the gateway and queue, and
/// spinning threads would take their CPU (measured in BENCHMARKS.md).
pub fn session(
    ctx: &InitContext<'_>,
    model: &std::path::Path,
    intra_threads: usize,
) -> Result<Session, ModelError> {
    let env = environment(ctx)?;
    let fail = |e: ort::Error| ModelError::new(format!("ONNX model {}: {e}", model.display()));
    if !model.is_file() {
        return Err(ModelError::new(format!(
            "ONNX model file {} not found (scripts/fetch-models.sh fetches the default one)",
            model.display()
        )));
    }
    let mut builder = Session::builder(env)
        .map_err(fail)?
        .with_optimization_level(GraphOptimizationLevel::All)
        .map_err(|e| fail(e.into()))?
        .with_intra_op_spinning(false)
        .map_err(|e| fail(e.into()))?;
    if intra_threads > 0 {
        builder = builder
            .with_intra_threads(intra_threads)
            .map_err(|e| fail(e.into()))?;
    }
    builder.commit_from_file(model).map_err(fail)
}
