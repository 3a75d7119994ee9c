//! Compiles the `.proto` contract in `proto/` with tonic-prost-build.
//!
//! protoc comes from the `protoc-bin-vendored` crate, so a fresh machine needs
//! no protobuf compiler installed.
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let well_known = protoc_bin_vendored::include_path()?;
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    let protos = [
        PathBuf::from("proto/inferq/v1/async.proto"),
        PathBuf::from("proto/inferq/v1/queue.proto"),
        PathBuf::from("proto/inferq/v1/predict.proto"),
    ];
    for p in &protos {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        // For gRPC reflection (src/serve/grpc.rs).
        .file_descriptor_set_path(out_dir.join("inferq_descriptor.bin"))
        .build_server(true)
        .build_client(true)
        .compile_with_config(config, &protos, &[PathBuf::from("proto"), well_known])?;
    Ok(())
}
