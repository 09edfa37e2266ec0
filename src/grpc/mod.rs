//! The gRPC edge: the only module (with the CLI client) that names generated
//! proto types. `serve` mounts the API, health and reflection on one listener.

pub mod auth;
pub mod convert;
mod service;

use std::future::Future;

use tokio::net::TcpListener;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

use crate::core::TaskService;
use crate::core::elaborate::Elaborator;
use crate::core::status::StatusService;
use crate::proto::claudomator_service_server::ClaudomatorServiceServer;
pub use service::Api;

/// Serves the API until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    tasks: TaskService,
    status: StatusService,
    elaborator: Elaborator,
    tokens: Vec<String>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let auth = auth::BearerAuth::new(tokens);

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<ClaudomatorServiceServer<Api>>().await;

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    Server::builder()
        .add_service(health_service)
        .add_service(ClaudomatorServiceServer::with_interceptor(
            Api::new(tasks, status, elaborator),
            auth.clone(),
        ))
        .add_service(InterceptedService::new(reflection_v1, auth.clone()))
        .add_service(InterceptedService::new(reflection_v1alpha, auth))
        .serve_with_incoming_shutdown(
            // No Nagle: a reply written after an await (headers, then data)
            // must not sit waiting for the client's delayed ACK.
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await?;
    Ok(())
}
