//! Logs and traces of a process.
//!
//! Logs go to stderr: the level from `INFERQ_LOG` (or `RUST_LOG`; `info` by
//! default), as text or, with `INFERQ_LOG_FORMAT=json`, one JSON object per
//! line with the fields of every span it is in (so each line of a request
//! carries its `request_id`).
//!
//! Traces: with `INFERQ_OTLP_ENDPOINT` (e.g. `http://127.0.0.1:4317`) the
//! spans are also exported over OTLP/gRPC, batched, as service
//! `OTEL_SERVICE_NAME` (default `inferq`). Off by default. A request's spans
//! in the gateway, the queue and the dispatcher join one trace: the gateway
//! adopts a client's W3C `traceparent` and sends its own span's context on
//! (in the job and the call's metadata, see [`crate::proto::trace`]), and
//! the queue and dispatcher spans of the job adopt it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// Whether spans are exported (then trace contexts are worth carrying).
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Holds the exporter; dropping it sends the spans still buffered.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            if let Err(e) = p.shutdown() {
                eprintln!("inferq: OTLP export did not finish: {e}");
            }
        }
    }
}

/// Sets up logging (and span export when asked for). Call it inside the
/// tokio runtime: the OTLP exporter's connection lives on it.
pub fn init() -> Telemetry {
    use std::io::IsTerminal;
    let filter = EnvFilter::try_from_env("INFERQ_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt: Box<dyn Layer<Registry> + Send + Sync> = match std::env::var("INFERQ_LOG_FORMAT")
        .unwrap_or_default()
        .as_str()
    {
        "json" => fmt
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(true)
            .boxed(),
        "" | "text" => fmt.with_ansi(std::io::stderr().is_terminal()).boxed(),
        other => {
            eprintln!("inferq: INFERQ_LOG_FORMAT={other:?} is not text or json; logging text");
            fmt.with_ansi(false).boxed()
        }
    };
    let endpoint = std::env::var("INFERQ_OTLP_ENDPOINT").unwrap_or_default();
    let provider = (!endpoint.is_empty())
        .then(|| otlp_provider(&endpoint))
        .and_then(|r| match r {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!("inferq: INFERQ_OTLP_ENDPOINT={endpoint}: {e}; spans are not exported");
                None
            }
        });
    let otel = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("inferq")));
    EXPORTING.store(provider.is_some(), Ordering::Relaxed);
    let _ = tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .with(filter)
        .try_init();
    Telemetry { provider }
}

fn otlp_provider(endpoint: &str) -> Result<SdkTracerProvider, String> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| e.to_string())?;
    let name = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "inferq".into());
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(name)
                .build(),
        )
        .build())
}

/// Makes `span` a child of the W3C `traceparent` (checked well formed by
/// the caller), when spans are exported.
pub fn adopt_traceparent(span: &tracing::Span, traceparent: &str) {
    if !EXPORTING.load(Ordering::Relaxed) || traceparent.is_empty() {
        return;
    }
    let carrier = HashMap::from([("traceparent".to_string(), traceparent.to_string())]);
    let cx = TraceContextPropagator::new().extract(&carrier);
    let _ = span.set_parent(cx);
}

/// The current span's context as a `traceparent`, when spans are exported
/// (what the next component's spans adopt).
pub fn current_traceparent() -> Option<String> {
    if !EXPORTING.load(Ordering::Relaxed) {
        return None;
    }
    let cx = tracing::Span::current().context();
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove("traceparent")
}
