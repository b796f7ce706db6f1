//! The S3 test server starts, serves its bucket, stops and restarts.
//!
//! This integration test also makes `cargo test --workspace` (and
//! `cargo test -p orgo-fleet-testing`) build the `orgo-test-s3` binary next
//! to the test executables, where [`S3Server::start`] looks for it: cargo
//! builds a package's binaries only for the package's own integration tests.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;

use orgo_fleet_testing::S3Server;

/// An unsigned `GET /<bucket>` (a listing): refused, since the server
/// checks signatures, but answered in HTTP.
fn status_line(server: &S3Server) -> String {
    let address = server.endpoint().trim_start_matches("http://").to_owned();
    let mut stream = TcpStream::connect(&address).expect("the server accepts");
    write!(
        stream,
        "GET /{} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n",
        server.bucket()
    )
    .expect("the request is sent");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("the response is read");
    response.lines().next().unwrap_or_default().to_owned()
}

#[test]
fn the_server_answers_stops_and_restarts() {
    let mut server = S3Server::start();
    assert!(server.root().is_dir(), "the bucket is a directory");
    assert!(server.root().ends_with(server.bucket()));
    assert!(server.endpoint().starts_with("http://127.0.0.1:"));
    assert_eq!(status_line(&server), "HTTP/1.1 403 Forbidden");

    let endpoint = server.endpoint();
    server.stop();
    assert!(TcpStream::connect(endpoint.trim_start_matches("http://")).is_err());
    server.restart();
    assert_eq!(server.endpoint(), endpoint, "the same port");
    assert_eq!(status_line(&server), "HTTP/1.1 403 Forbidden");

    let root = server.root().to_owned();
    drop(server);
    assert!(!root.exists(), "the data is deleted on drop");
}
