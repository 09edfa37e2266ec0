//! The gRPC edge: the only module (with the CLI client) that names generated
//! proto types. `serve` mounts the API, health and reflection on one listener,
//! which speaks gRPC over HTTP/2 and gRPC-Web over HTTP/1.1 (browsers,
//! `tonic_web`), behind the CORS check of [`cors`] and the same bearer-token
//! interceptor for both; the web board's files ([`board`]) on `GET`.
//!
//! A request message may be up to [`MAX_MESSAGE_BYTES`], more than any field's
//! own limit, so an oversize field is refused by that limit, naming it. A
//! message that is not valid protobuf is INVALID_ARGUMENT (tonic says
//! INTERNAL), like every other bad input.

pub mod auth;
pub mod board;
pub mod convert;
pub mod cors;
mod service;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::codegen::http;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

use crate::proto::claudomator_service_server::ClaudomatorServiceServer;
pub use service::Api;

/// The largest request message decoded: twice the largest
/// `limits.max_instructions_bytes` the config takes.
pub const MAX_MESSAGE_BYTES: usize = 2 * crate::core::validate::MAX_INSTRUCTIONS_LIMIT;

/// Serves the API until `shutdown` is cancelled, which also ends every open
/// stream (`WatchTasks`, `StreamLogs`). `cors_origins` are the origins
/// of the browser pages that may call it over gRPC-Web (as
/// [`cors::parse_origin`] returns them; empty: none).
pub async fn serve(
    listener: TcpListener,
    api: Api,
    tokens: Vec<String>,
    cors_origins: Vec<String>,
    shutdown: CancellationToken,
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

    let api = ClaudomatorServiceServer::new(api).max_decoding_message_size(MAX_MESSAGE_BYTES);
    Server::builder()
        // HTTP/1.1 beside HTTP/2, for gRPC-Web: browsers cannot speak gRPC's
        // HTTP/2 with trailers. A plain HTTP/1.1 request that is not
        // gRPC-Web is answered 400 by tonic_web.
        .accept_http1(true)
        // Outermost first: the board answers every GET and HEAD (its files
        // are public; calls are POSTs); CORS decides before anything else
        // runs; the
        // status fix sees every answer; gRPC-Web is translated to gRPC next
        // to the services, so the interceptor and the handlers see one
        // protocol.
        .layer(board::BoardLayer)
        .layer(cors::CorsLayer::new(cors_origins))
        .layer(tower::util::MapResponseLayer::new(
            malformed_messages_are_invalid_arguments,
        ))
        .layer(tonic_web::GrpcWebLayer::new())
        .add_service(health_service)
        .add_service(InterceptedService::new(api, auth.clone()))
        .add_service(InterceptedService::new(reflection_v1, auth.clone()))
        .add_service(InterceptedService::new(reflection_v1alpha, auth))
        .serve_with_incoming_shutdown(
            // No Nagle: a reply written after an await (headers, then data)
            // must not sit waiting for the client's delayed ACK.
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown.cancelled_owned(),
        )
        .await?;
    Ok(())
}

/// tonic answers a request it cannot decode as protobuf with INTERNAL; it is
/// the client's input that is wrong, so the answer is INVALID_ARGUMENT.
fn malformed_messages_are_invalid_arguments(
    mut response: http::Response<tonic::body::Body>,
) -> http::Response<tonic::body::Body> {
    let headers = response.headers_mut();
    let internal = headers
        .get("grpc-status")
        .is_some_and(|s| s.as_bytes() == b"13");
    let undecodable = headers.get("grpc-message").is_some_and(|m| {
        let m = m.as_bytes();
        m.starts_with(b"failed%20to%20decode%20Protobuf%20message")
            || m.starts_with(b"failed to decode Protobuf message")
    });
    if internal && undecodable {
        let code = (tonic::Code::InvalidArgument as i32).to_string();
        if let Ok(value) = http::HeaderValue::from_str(&code) {
            headers.insert("grpc-status", value);
        }
    }
    response
}
