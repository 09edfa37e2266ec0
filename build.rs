//! Compiles `proto/` with protox (pure Rust, no system `protoc`) and keeps the
//! encoded descriptor set for gRPC server reflection.
use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);

    let api = protox::compile(
        ["claudomator/v1/task.proto", "claudomator/v1/service.proto"],
        ["proto"],
    )?;
    std::fs::write(
        out.join("claudomator_v1_descriptor.bin"),
        api.encode_to_vec(),
    )?;
    tonic_prost_build::configure().compile_fds(api)?;

    // google.rpc.Status and the error details a failed call carries.
    let rpc = protox::compile(
        ["google/rpc/status.proto", "google/rpc/error_details.proto"],
        ["proto"],
    )?;
    tonic_prost_build::configure().compile_fds(rpc)?;

    let echo = protox::compile(["bench/echo.proto"], ["proto"])?;
    tonic_prost_build::configure().compile_fds(echo)?;
    Ok(())
}
