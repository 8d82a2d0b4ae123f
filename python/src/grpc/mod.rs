//! gRPC (issue 17): `.proto` files compiled at start-up and their messages (`messages`), and
//! the server a worker runs beside its HTTP listener (`server`), the `GrpcChannel` client (`client`).

pub mod client;
pub mod messages;
pub mod server;
