//! What every gRPC server of inferq carries besides its own services: the
//! standard health service (`grpc.health.v1.Health`, tonic-health), kept in
//! step with a readiness check, and server reflection (tonic-reflection), so
//! grpcurl and other tools work without the `.proto` files.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

/// How often the health status is checked again.
const HEALTH_CHECK_EVERY: Duration = Duration::from_secs(2);

/// The health and reflection services' own names.
const EXTRA_SERVICES: [&str; 3] = [
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// `routes` (serving `services`, full names) with the health and reflection
/// services added; the reporter that sets the health status. Reflection
/// lists exactly the services served.
pub fn with_health_and_reflection(routes: Routes, services: &[&str]) -> (Routes, HealthReporter) {
    let (reporter, health) = tonic_health::server::health_reporter();
    let mut routes = routes.add_service(health);
    let builder = || {
        let mut b = tonic_reflection::server::Builder::configure()
            .include_reflection_service(false)
            .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            );
        for name in services.iter().chain(EXTRA_SERVICES.iter()) {
            b = b.with_service_name(*name);
        }
        b
    };
    // Both versions of the protocol: grpcurl asks v1 first, older clients
    // (and grpcio-reflection) v1alpha.
    match (builder().build_v1(), builder().build_v1alpha()) {
        (Ok(v1), Ok(v1alpha)) => routes = routes.add_service(v1).add_service(v1alpha),
        // The descriptors are compiled in: a failure is a build's bug.
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(error = %e, "gRPC reflection is off: cannot read the descriptors")
        }
    }
    (routes, reporter)
}

/// Sets the status of the whole server ("") and of each of `services` to
/// what `ready` says, now and every two seconds, until `stop`.
pub fn track_health<F, Fut>(
    reporter: HealthReporter,
    services: &'static [&'static str],
    ready: F,
    stop: CancellationToken,
) where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = bool> + Send,
{
    tokio::spawn(async move {
        let mut last = None;
        loop {
            let ok = tokio::time::timeout(HEALTH_CHECK_EVERY, ready())
                .await
                .unwrap_or(false);
            if last != Some(ok) {
                let status = if ok {
                    ServingStatus::Serving
                } else {
                    ServingStatus::NotServing
                };
                for name in std::iter::once(&"").chain(services) {
                    reporter.set_service_status(*name, status).await;
                }
                last = Some(ok);
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(HEALTH_CHECK_EVERY) => {}
            }
        }
    });
}
