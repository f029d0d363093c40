fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = prost_build::Config::new();
    // A vendored protoc keeps the build free of system packages.
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    config.bytes(["."]);
    tonic_prost_build::configure().build_server(true).build_client(true).compile_with_config(
        config,
        &["proto/common.proto", "proto/coord.proto", "proto/coord_peer.proto", "proto/broker.proto"],
        &["proto"],
    )?;
    Ok(())
}
